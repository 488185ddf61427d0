"""Benchmark: cold load, warm switch from the RAM cache, and resident memory over 20 switches.

Full-size SD1.5-shaped random weights (3 different seeds) written as A1111 single-file checkpoints
(fp16 on disk, as most shared checkpoints are), loaded through the real registry/loader/manager.

    .venv/bin/python -m bench.switching [--workdir DIR] [--keep]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import gib, machine_line, rss_bytes


def build_models(folders, count: int) -> list[str]:
    import torch

    from bench.common import random_pipeline
    from modules.families import Family
    from modules.checkpoints.single_file import save_single_file
    from modules.tiny import install_tiny_clip_tokenizer

    install_tiny_clip_tokenizer(folders)  # tokenization does not affect these timings
    names = []
    for i in range(count):
        name = f"random-sd15-{i}"
        path = folders.checkpoints / f"{name}.safetensors"
        if not path.exists():
            pipe = random_pipeline(Family.SD15, seed=i, tokenizer_dir=folders.tokenizers / "clip-vit-large-patch14")
            pipe.to(torch.float16)
            save_single_file(pipe, Family.SD15, path)
            del pipe
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, help="where to write the random checkpoints (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--preset-warmup", action="store_true",
                        help="leave the background preset warm-up on (it shares the CPU with the switches)")
    args = parser.parse_args()

    from modules.engine import Engine
    from modules.paths import Folders
    from modules.settings import Settings

    work = args.workdir or Path(tempfile.mkdtemp(prefix="visage-bench-"))
    folders = Folders(models=work / "models", outputs=work / "outputs", cache=work / "cache")
    folders.checkpoints.mkdir(parents=True, exist_ok=True)
    try:
        names = build_models(folders, 3)
        engine = Engine(Settings(models_dir=folders.models, outputs_dir=folders.outputs, cache_dir=folders.cache,
                                 hf_cache=work / "no-hf-cache", ckpt_cache=2, embed_cache_persist=False,
                                 warm_presets=args.preset_warmup))
        engine.start(load_initial=False)
        engine.registry.scan()  # hashes computed here, outside the timings
        rss_start = rss_bytes()

        cold = []
        for name in names:
            t = time.perf_counter()
            engine.switch_model(name).wait()
            cold.append(time.perf_counter() - t)
        rss_loaded = rss_bytes()

        warm = []
        for i in range(args.switches):
            t = time.perf_counter()
            engine.switch_model(names[i % 3]).wait()
            warm.append(time.perf_counter() - t)
        rss_after = rss_bytes()
        engine.close()

        print(f"machine: {machine_line()}")
        print(f"checkpoints: 3 x {gib((folders.checkpoints / (names[0] + '.safetensors')).stat().st_size)} "
              f"(fp16 single-file), loaded as fp32, --ckpt-cache 2, preset warm-up "
              f"{'on' if args.preset_warmup else 'off'}\n")
        print("| measure | value |\n|---|---|")
        print(f"| cold load (single-file → pipeline), median of 3 | {statistics.median(cold):.2f} s "
              f"(min {min(cold):.2f}, max {max(cold):.2f}) |")
        print(f"| warm switch from RAM cache, median of {len(warm)} | {statistics.median(warm) * 1000:.1f} ms "
              f"(max {max(warm) * 1000:.1f} ms) |")
        print(f"| RSS before loading | {gib(rss_start)} |")
        print(f"| RSS with 3 models resident | {gib(rss_loaded)} |")
        print(f"| RSS after {len(warm)} switches | {gib(rss_after)} "
              f"({(rss_after - rss_loaded) / 2**20:+.0f} MiB vs loaded) |")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
