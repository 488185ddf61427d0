"""Benchmark: the face detailer's cost per face on this machine (modules/faces/detailer.py).

Runs ``detail_image`` (MTCNN detection, then per face: crop, inpaint at ``--resolution`` through Visage's
inpaint, paste back) on real photos of ../shared/assets/images and reports seconds per face, with detection
timed apart. ``--model tiny``: the tiny SD1.5 test model through a real Engine (the backend's ``inpaint``, as
in a generation job); ``--model full``: a full-size SD1.5 pipeline with random weights (bench.common) through
``modules.generation.img2img`` (what the diffusers backend's inpaint calls). The MTCNN weights come from
``--models-dir`` (``python -m modules.cli fetch-face-detector --models-dir DIR``).

    .venv/bin/python -m bench.detailer --models-dir DIR [--model tiny|full] [--steps 20] [--resolution 512]
        [--threads 2] [--images astronaut.png,Solvay_conference_1927.png] [--max-faces 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.common import machine_line

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "assets" / "images"
TOKENIZER = REPO.parent / "shared" / "assets" / "clip-tokenizer"


class _Ctx:
    cancelled = False

    class progress:
        total = 0

    def report(self, *a, **k):
        pass

    def check_cancelled(self):
        pass


def _tiny_inpaint(tmp: Path):
    from modules.engine import Engine
    from modules.families import Family
    from modules.generation.params import GenerationRequest
    from modules.paths import Folders
    from modules.settings import Settings
    from modules.tiny import install_tiny_clip_tokenizer, make_tiny_model

    folders = Folders(models=tmp / "models", outputs=tmp / "outputs", cache=tmp / "cache")
    folders.checkpoints.mkdir(parents=True, exist_ok=True)
    install_tiny_clip_tokenizer(folders)
    make_tiny_model(Family.SD15, "diffusers", folders.checkpoints / "tiny-sd15")
    engine = Engine(Settings(models_dir=folders.models, outputs_dir=folders.outputs, cache_dir=folders.cache,
                             hf_cache=folders.cache / "no-hf"))
    engine.start(load_initial=False)
    engine.generate(engine.prepare(GenerationRequest(model="tiny-sd15", steps=1, width=64, height=64,
                                                     save=False))).wait(300)
    backend = engine.manager.current.backend
    return engine, partial(backend.inpaint, ctx=_Ctx(), encode=None, tae=None)


def _full_inpaint():
    import torch

    from bench.common import random_pipeline
    from modules.families import Family
    from modules.generation.img2img import img2img

    pipe = random_pipeline(Family.SD15, seed=0, tokenizer_dir=TOKENIZER)
    cache: dict = {}
    return None, lambda sub: img2img(pipe, Family.SD15, sub, _Ctx(), device=torch.device("cpu"), cache=cache)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=REPO / "models", help="holds face-detection/mtcnn")
    p.add_argument("--model", choices=["tiny", "full"], default="tiny")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--denoise", type=float, default=0.4)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", default="astronaut.png,Solvay_conference_1927.png")
    p.add_argument("--max-faces", type=int, default=3, help="faces detailed per image (the largest)")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from modules.faces.detailer import DetailerSettings, detail_image, load_detector, select_faces
    from modules.families import Family
    from modules.generation.img2img import steps_run
    from modules.generation.params import GenerationRequest

    torch.set_num_threads(args.threads)
    print(machine_line())
    detector = load_detector(args.models_dir)
    with tempfile.TemporaryDirectory(prefix="visage-bench-detailer-") as tmp:
        engine, inpaint = _tiny_inpaint(Path(tmp)) if args.model == "tiny" else _full_inpaint()
        settings = DetailerSettings(denoise=args.denoise, resolution=args.resolution, max_faces=args.max_faces)
        req = GenerationRequest(prompt="portrait photo, detailed face", steps=args.steps, seed=1, sampler="Euler",
                                save=False).with_defaults(Family.SD15)
        sub_steps = steps_run(GenerationRequest(steps=args.steps, denoising_strength=args.denoise))
        print(f"model {args.model}, crop {args.resolution}x{args.resolution}, {args.steps} steps x denoise "
              f"{args.denoise} = {sub_steps} U-Net steps per face, {args.threads} torch threads")
        print("| image | size | faces detailed | detection s | detailer s (all faces) | s per face |")
        print("|---|---|---|---|---|---|")
        for name in args.images.split(","):
            photo = Image.open(IMAGES / name).convert("RGB")
            detect = detector.detect
            t0 = time.perf_counter()
            faces = select_faces(detect(np.asarray(photo)), settings.confidence, settings.max_faces)
            t_detect = time.perf_counter() - t0
            detail_image(photo, 1, req, settings, detect=detect, inpaint=inpaint)  # warm-up
            t0 = time.perf_counter()
            _out, done = detail_image(photo, 1, req, settings, detect=detect, inpaint=inpaint)
            total = time.perf_counter() - t0
            n = len(done)
            per = (total - t_detect) / n if n else float("nan")
            print(f"| {name} | {photo.width}x{photo.height} | {n} (of {len(faces)} kept) | {t_detect:.3f} | "
                  f"{total:.2f} | {per:.2f} |")
        if engine is not None:
            engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
