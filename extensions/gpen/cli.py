"""``python -m modules.cli restore-faces -i IN -o OUT``: one photo or a folder of photos.

Runs in the CLI process itself (no engine or model registry is needed) with a progress line on stderr.
A missing weights file stops before any work with one message naming it (exit code 2).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .restore import FaceRestorer, RestoreOptions
from .strings import msg
from .variants import VARIANTS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", required=True, type=Path, help="a photo, or a folder of photos")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="output file (for one photo) or folder (created; for a folder of photos)")
    p.add_argument("--model", choices=list(VARIANTS), help="GPEN model (default GPEN-BFR-512)")
    p.add_argument("--max-side", type=int, help="detect faces on a copy with this long side (default 1024; 0 = full)")
    p.add_argument("--tile", type=int, help="detect in overlapping tiles of N px at full resolution (0 = off)")
    p.add_argument("--fp16", action="store_true", default=None, help="half precision on a CUDA GPU (CPU: fp32)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--upscale", type=int, help="resize the whole photo by 1-4 first (small faces gain detail)")
    p.add_argument("--strength", type=float, help="blend weight of the restored faces, 0-1 (default 1)")
    p.add_argument("--detector", choices=["auto", "haar", "mtcnn", "retinaface"],
                   help="default auto: mtcnn when fetch-face-detector has put its weights in models/, else haar")
    p.add_argument("--min-neighbors", type=int, help="Haar detector threshold (default 5)")
    p.add_argument("--no-color-match", dest="color_match", action="store_false", default=None)
    p.add_argument("--models-dir", type=Path, help="models folder (default ./models); weights in <it>/GPEN/")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")


def make_run(models_dir: Path, defaults: RestoreOptions):
    def run(args: argparse.Namespace) -> int:
        return restore_paths(args, Path(args.models_dir or models_dir), defaults)
    return run


def _pairs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [(f, dst / (f.stem + ".png")) for f in files]
    if dst.suffix.lower() in IMAGE_SUFFIXES:
        return [(src, dst)]
    return [(src, dst / (src.stem + ".png"))]


def restore_paths(args: argparse.Namespace, models_dir: Path, defaults: RestoreOptions) -> int:
    from PIL import Image, UnidentifiedImageError

    from modules.errors import InvalidRequest

    values = {k: getattr(args, k) for k in ("model", "max_side", "tile", "fp16", "device", "upscale", "strength",
                                             "detector", "min_neighbors", "color_match")}
    options = RestoreOptions.from_mapping(values, defaults)
    restorer = FaceRestorer(models_dir)
    restorer.check_ready(options)  # MissingComponent / InvalidRequest: one message, exit 2, before any work
    if not args.input.exists():
        raise InvalidRequest("input", msg("gpen.rule.no_input", path=str(args.input)))
    pairs = _pairs(args.input, args.output)
    if not pairs:
        raise InvalidRequest("input", msg("gpen.rule.no_images", suffixes=", ".join(IMAGE_SUFFIXES), path=str(args.input)))
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    failures = 0
    total_faces = 0
    started = time.perf_counter()
    for n, (src, dst) in enumerate(pairs, 1):
        label = f"[{n}/{len(pairs)}] {src.name}"

        def report(phase: str, step: int, total: int, label=label) -> None:
            text = f"{label}: {phase} {step}/{total}" if total else f"{label}: {phase}"
            print("\r" + text.ljust(70), end="", file=sys.stderr, flush=True)

        try:
            with Image.open(src) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            print(f"\r{label}: skipped, not a readable image ({exc})".ljust(70), file=sys.stderr)
            failures += 1
            continue
        result = restorer.restore(image, options, report=report)
        dst.parent.mkdir(parents=True, exist_ok=True)
        result.image.save(dst)
        total_faces += len(result.faces)
        print(f"\r{label}: {len(result.faces)} face(s), {result.seconds:.1f} s -> {dst}".ljust(70), file=sys.stderr)
        for note in result.notes:
            print(f"  note: {note}", file=sys.stderr)
        print(dst)
    print(f"{len(pairs) - failures} image(s), {total_faces} face(s) restored in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 1 if failures else 0
