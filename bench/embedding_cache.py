"""Benchmark: text-encoder time vs prompt-embedding cache hit, for full-size random-weight encoders.

CLIP-L (SD1.5), the SDXL pair (CLIP-L + OpenCLIP bigG) and a Qwen3-4B-shaped encoder (Z-Image).
The Qwen3 encoder is measured with 2 and 4 layers and extrapolated linearly to its 36 layers
(time = fixed + 36 * per-layer): the full 4B-parameter fp32 model would need 16 GB on this CPU.
Encodes go through the same `encode_prompts` the engine uses (prompt + negative, CFG on);
hits go through `EmbeddingCache.get_or_compute`.

    .venv/bin/python -m bench.embedding_cache [--e2e]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

from bench.common import CONFIGS, machine_line


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _with_encoders(family: str, layers: int | None = None):
    """A tiny pipeline of ``family`` whose text encoder(s) are replaced by full-size random ones."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, Qwen3Config, Qwen3Model

    from modules.tiny.components import tiny_pipeline

    torch.manual_seed(0)
    pipe = tiny_pipeline(family, seed=0)
    cfg = lambda name: json.loads((CONFIGS / family / name / "config.json").read_text())  # noqa: E731
    if family == "sd15":
        pipe.text_encoder = CLIPTextModel(CLIPTextConfig(**cfg("text_encoder")))
    elif family == "sdxl":
        pipe.text_encoder = CLIPTextModel(CLIPTextConfig(**cfg("text_encoder")))
        pipe.text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg("text_encoder_2")))
    else:
        pipe.text_encoder = Qwen3Model(Qwen3Config(**{**cfg("text_encoder"), "num_hidden_layers": layers}))
    for module in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.eval()
    return pipe


def measure(family: str, layers: int | None = None, repeat: int = 3) -> tuple[float, float, int]:
    """(encode seconds, hit seconds, parameter count of the encoders)."""
    import torch

    from modules.embedding_cache import CacheKey, EmbeddingCache
    from modules.families import Family
    from modules.generation.encoding import encode_prompts

    pipe = _with_encoders(family, layers)
    params = sum(p.numel() for m in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None
                 for p in m.parameters())
    fam = Family(family)
    encode = partial(encode_prompts, pipe, fam, "portrait photo of a woman, soft light, 85mm",
                     "blurry, lowres", do_cfg=True, clip_skip=1, device=torch.device("cpu"))
    encode()  # warm-up (allocations, kernels)
    encode_s = _median_time(encode, repeat)
    cache = EmbeddingCache(max_bytes=512 * 2**20)
    key = CacheKey("bench", "", 1, "portrait photo of a woman, soft light, 85mm", "blurry, lowres",
                   options={"family": family})
    cache.get_or_compute(key, encode)
    hit_s = _median_time(lambda: cache.get_or_compute(key, encode), 50)
    return encode_s, hit_s, params


def end_to_end(steps: int, size: int) -> None:
    """A preset generation on a full-size SD1.5 checkpoint through the engine: cold vs warm cache."""
    import shutil
    import tempfile
    from pathlib import Path

    from bench.switching import build_models
    from modules.engine import Engine
    from modules.generation.params import GenerationRequest
    from modules.paths import Folders
    from modules.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="visage-bench-e2e-"))
    try:
        folders = Folders(models=work / "models", outputs=work / "out", cache=work / "cache")
        folders.checkpoints.mkdir(parents=True)
        name = build_models(folders, 1)[0]
        engine = Engine(Settings(models_dir=folders.models, outputs_dir=folders.outputs, cache_dir=folders.cache,
                                 hf_cache=work / "no-hf", embed_cache_persist=False))
        engine.start(load_initial=False)
        engine.switch_model(name).wait()
        engine.wait_for_warming()  # the preset warm-up would otherwise share the CPU with the timing
        request = GenerationRequest(prompt="a young woman in a garden", preset="realistic_portrait", seed=1,
                                    steps=steps, width=size, height=size, save=False)
        engine.embed_cache.clear()
        cold = engine.generate(request).wait().elapsed_s
        warm = statistics.median(engine.generate(request).wait().elapsed_s for _ in range(3))
        engine.close()
        print(f"\npreset generation, full-size SD1.5 random weights, {size}x{size}, {steps} step(s), CFG on: "
              f"cold cache {cold:.2f} s, warm cache {warm:.2f} s (median of 3), saved {cold - warm:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--e2e", action="store_true", help="also time a preset generation cold vs warm")
    parser.add_argument("--e2e-steps", type=int, default=1)
    parser.add_argument("--e2e-size", type=int, default=512)
    args = parser.parse_args()
    print(f"machine: {machine_line()}\n")
    print("| encoder | params | encode (prompt + negative) | cache hit | ratio |\n|---|---|---|---|---|")
    for label, family in (("CLIP-L (SD1.5)", "sd15"), ("CLIP-L + OpenCLIP bigG (SDXL)", "sdxl")):
        enc, hit, n = measure(family, repeat=args.repeat)
        print(f"| {label} | {n / 1e6:.0f} M | {enc * 1000:.0f} ms | {hit * 1000:.2f} ms | {enc / hit:.0f}x |")
    two, hit2, n2 = measure("zimage", layers=2, repeat=args.repeat)
    four, hit4, n4 = measure("zimage", layers=4, repeat=args.repeat)
    per_layer = (four - two) / 2
    full = two + 34 * per_layer
    per_layer_params = (n4 - n2) / 2
    full_params = n2 + 34 * per_layer_params
    print(f"| Qwen3-4B-shaped, 2 layers (measured) | {n2 / 1e6:.0f} M | {two * 1000:.0f} ms | "
          f"{hit2 * 1000:.2f} ms | {two / hit2:.0f}x |")
    print(f"| Qwen3-4B-shaped, 4 layers (measured) | {n4 / 1e6:.0f} M | {four * 1000:.0f} ms | "
          f"{hit4 * 1000:.2f} ms | {four / hit4:.0f}x |")
    print(f"| Qwen3-4B-shaped, 36 layers (extrapolated: 2-layer time + 34 x {per_layer * 1000:.0f} ms) | "
          f"{full_params / 1e9:.2f} B | {full:.1f} s | {hit4 * 1000:.2f} ms | {full / hit4:.0f}x |")
    if args.e2e:
        end_to_end(args.e2e_steps, args.e2e_size)


if __name__ == "__main__":
    main()
