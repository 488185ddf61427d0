"""Benchmark: GPEN face restoration on CPU with the full-size GPEN-BFR-512 generator.

Random weights in the released file layout are written to a temp ``models/GPEN/GPEN-BFR-512.pth``
(speed does not depend on weight values) and loaded through the extension's own loader; the two real
photos of ../shared/assets/images are restored end to end (detect, align, GPEN, paste back). Reports
seconds per face, total seconds and peak RSS per photo (and the model load), as JSON and a table.

    .venv/bin/python -m bench.gpen [--model GPEN-BFR-512] [--threads N] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_line, peak_rss_bytes, rss_bytes

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut.png", "Solvay_conference_1927.png")


def _load_extension(models_dir: Path):
    from modules.extensions import load_extensions
    ext = load_extensions(REPO / "extensions", models_dir=models_dir, outputs_dir=models_dir)
    if "gpen" not in ext.loaded:
        raise SystemExit(f"gpen extension failed: {ext.failed}")


def random_weights(path: Path, name: str, seed: int = 0) -> None:
    import torch

    from visage_ext_gpen.arch import GPEN
    from visage_ext_gpen.variants import get_variant

    torch.manual_seed(seed)
    model = GPEN.for_variant(get_variant(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def run(model: str, assets: Path, threads: int) -> dict:
    import torch
    from PIL import Image

    if threads:
        torch.set_num_threads(threads)
    out = {"machine": machine_line(), "model": model, "photos": {}}
    with tempfile.TemporaryDirectory(prefix="visage-bench-gpen-") as tmp:
        models = Path(tmp)
        _load_extension(models)
        from visage_ext_gpen.restore import FaceRestorer, RestoreOptions
        from visage_ext_gpen.variants import get_variant
        random_weights(models / "GPEN" / f"{model}.pth", model)
        restorer = FaceRestorer(models, default_device="cpu")
        options = RestoreOptions(model=model, device="cpu")
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        restorer.check_ready(options)
        restorer.load_model(get_variant(model), torch.device("cpu"), torch.float32)
        out["load_s"] = round(time.perf_counter() - t0, 2)
        out["rss_after_load_mib"] = round(rss_bytes() / 2**20)
        out["rss_before_load_mib"] = round(rss0 / 2**20)
        for name in PHOTOS:
            path = assets / name
            if not path.is_file():
                out["photos"][name] = "missing"
                continue
            image = Image.open(path).convert("RGB")
            result = restorer.restore(image, options)
            out["photos"][name] = {
                "size": list(image.size), "faces": len(result.faces), "total_s": round(result.seconds, 2),
                "s_per_face": round(result.seconds_per_face, 3),
                "peak_rss_mib_so_far": round(peak_rss_bytes() / 2**20)}
    out["peak_rss_mib"] = round(peak_rss_bytes() / 2**20)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpen", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="GPEN-BFR-512")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets" / "images")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results = run(args.model, args.assets, args.threads)
    print(f"{results['machine']}\nmodel {results['model']}: load {results['load_s']} s, "
          f"RSS {results['rss_before_load_mib']} -> {results['rss_after_load_mib']} MiB")
    print(f"{'photo':32} {'size':>10} {'faces':>5} {'s/face':>7} {'total s':>8} {'peak RSS MiB':>12}")
    for name, r in results["photos"].items():
        if isinstance(r, str):
            print(f"{name:32} {r}")
            continue
        print(f"{name:32} {r['size'][0]:>5}x{r['size'][1]:<4} {r['faces']:>5} {r['s_per_face']:>7} "
              f"{r['total_s']:>8} {r['peak_rss_mib_so_far']:>12}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
