"""Benchmark: img2img at denoise 0.5 against txt2img, full-size SD1.5 (random weights), 512x512, on this machine.

img2img runs ``int(steps * denoise)`` U-Net steps plus one VAE encode, so at denoise 0.5 it should take about
half the denoising time of txt2img with the same steps. Both go through Visage's own generation functions
(modules.generation.txt2img / img2img) on the same pipeline object (img2img's is built from it with
``from_pipe``: no second copy; RSS is printed).

    python -m bench.img2img [--steps 8] [--side 512] [--tokenizer ../shared/assets/clip-tokenizer]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.common import gib, machine_line, random_pipeline, rss_bytes

DEFAULT_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "assets" / "clip-tokenizer"


def _ctx():
    from modules.jobs import Job, JobContext

    return JobContext(Job(0, "bench", lambda ctx: None))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--side", type=int, default=512)
    p.add_argument("--denoise", type=float, default=0.5)
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    args = p.parse_args(argv)

    import torch
    from PIL import Image

    from modules.families import Family
    from modules.generation.img2img import img2img, steps_run
    from modules.generation.params import GenerationRequest
    from modules.generation.txt2img import txt2img

    cpu = torch.device("cpu")
    pipe = random_pipeline(Family.SD15, seed=0, tokenizer_dir=args.tokenizer)
    print(machine_line())
    base = GenerationRequest(prompt="portrait photo of a woman, soft light", steps=args.steps, width=args.side,
                             height=args.side, seed=1, sampler="Euler", save=False).with_defaults(Family.SD15)
    base.check_inputs(Family.SD15)
    photo = Image.new("RGB", (args.side, args.side), (150, 110, 90))
    i2i = GenerationRequest(prompt=base.prompt, steps=args.steps, seed=1, sampler="Euler", save=False,
                            init_image=photo, denoising_strength=args.denoise).with_defaults(Family.SD15)
    i2i.check_inputs(Family.SD15)
    with torch.inference_mode():  # warm-up (first-call allocations), not timed
        txt2img(pipe, Family.SD15, GenerationRequest(prompt="x", steps=1, width=64, height=64, seed=0,
                                                     sampler="Euler", save=False).with_defaults(Family.SD15),
                _ctx(), device=cpu)
    rss_before = rss_bytes()
    rows = []
    for label, run, req in (("txt2img", txt2img, base), ("img2img", img2img, i2i)):
        with torch.inference_mode():
            start = time.perf_counter()
            run(pipe, Family.SD15, req, _ctx(), device=cpu)
            seconds = time.perf_counter() - start
        ran = args.steps if run is txt2img else steps_run(req)
        rows.append((label, ran, seconds))
        print(f"{label}: {ran} U-Net steps run, {seconds:.1f} s, RSS {gib(rss_bytes())}", flush=True)
    print(f"RSS before {gib(rss_before)}, after both {gib(rss_bytes())}")
    (_, t_steps, t_s), (_, i_steps, i_s) = rows
    print(f"| {args.side}² SD1.5, {args.steps} steps | txt2img {t_steps} steps {t_s:.1f} s | "
          f"img2img denoise {args.denoise} {i_steps} steps {i_s:.1f} s | ratio {i_s / t_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
