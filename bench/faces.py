"""Benchmark: the two face detectors GPEN can use, on every photo of ../shared/assets/images.

* Haar: OpenCV's cascade as GPEN runs it (``detect_faces`` with the default auto-resize 1024, then the eye
  cascade inside each box): faces, how many got both eyes from the eye cascade (the rest are placed from
  the box), time per image;
* MTCNN (``modules.faces``): the cascade on the full image: faces, five landmarks each, time per image, and
  how many of its faces overlap a Haar face (IoU > 0.3).

Times are the median of ``--repeat`` runs after one warm-up run. The MTCNN weights come from
``models/face-detection/mtcnn`` (``python -m modules.cli fetch-face-detector``) or ``--models-dir``.

    .venv/bin/python -m bench.faces [--models-dir models] [--threads 2] [--repeat 5] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.common import machine_line

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "assets" / "images"


def _timed(fn, repeat: int):
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def measure(path: Path, haar_detect, mtcnn, box_iou, repeat: int) -> dict:
    import numpy as np
    from PIL import Image

    rgb = np.array(Image.open(path).convert("RGB"))
    haar, t_haar = _timed(lambda: haar_detect(rgb), repeat)
    faces, t_mtcnn = _timed(lambda: mtcnn.detect(rgb), repeat)
    matched = sum(any(box_iou(f.box, h.box) > 0.3 for h in haar) for f in faces)
    return {
        "image": path.name, "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
        "haar": {"faces": len(haar), "eyes_found": sum(not f.eyes_estimated for f in haar),
                 "seconds": round(t_haar, 4)},
        "mtcnn": {"faces": len(faces), "landmarks": 5 * len(faces), "matched_haar": matched,
                  "min_score": round(min((f.score for f in faces), default=0.0), 3),
                  "seconds": round(t_mtcnn, 4)},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not IMAGES.is_dir():
        raise SystemExit(f"{IMAGES} is not present")
    import torch

    from modules.errors import MissingComponent
    from modules.extensions import load_extensions
    from modules.faces.detect import MtcnnDetector
    from modules.faces.weights import mtcnn_folder

    torch.set_num_threads(args.threads)
    ext = load_extensions(REPO / "extensions", models_dir=args.models_dir, outputs_dir=args.models_dir)
    if "gpen" not in ext.loaded:
        raise SystemExit(f"gpen extension failed: {ext.failed}")
    from visage_ext_gpen import detect

    try:
        mtcnn = MtcnnDetector.from_folder(mtcnn_folder(args.models_dir))
    except MissingComponent as exc:
        raise SystemExit(str(exc)) from None
    haar = detect.HaarDetector()

    def haar_detect(rgb):
        return detect.detect_faces(haar, rgb, detect.DetectOptions())

    rows = [measure(p, haar_detect, mtcnn, detect.box_iou, args.repeat) for p in sorted(IMAGES.iterdir())
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
    print(machine_line(), file=sys.stderr)
    print("| image | size | Haar faces | Haar eyes found | Haar s | MTCNN faces | MTCNN landmarks | "
          "MTCNN ∩ Haar | MTCNN min score | MTCNN s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, m = r["haar"], r["mtcnn"]
        print(f"| {r['image']} | {r['size']} | {h['faces']} | {h['eyes_found']} | {h['seconds']:.3f} | "
              f"{m['faces']} | {m['landmarks']} | {m['matched_haar']} | {m['min_score']} | {m['seconds']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
