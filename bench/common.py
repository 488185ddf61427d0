"""Helpers shared by the benchmarks: full-size random-weight models built from the repo's real configs.

Speed does not depend on weight values, so these stand in for released checkpoints.
"""
from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

CONFIGS = Path(__file__).resolve().parents[1] / "modules" / "loader" / "configs"


def _config(family: str, component: str) -> dict:
    folder = CONFIGS / family / component
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((folder / name).read_text())


def random_pipeline(family, *, seed: int = 0, tokenizer_dir: Path):
    """A full-size SD1.5 pipeline with random weights (SDXL/Z-Image: see random_text_encoders)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    family = getattr(family, "value", family)
    if family != "sd15":
        raise ValueError("random_pipeline builds sd15 only")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(_config(family, "unet"))
    vae = AutoencoderKL.from_config(_config(family, "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig(**_config(family, "text_encoder")))
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    scheduler = PNDMScheduler.from_config(_config(family, "scheduler"))
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def rss_bytes() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def timed(results: dict, name: str):
    start = time.perf_counter()
    yield
    results[name] = time.perf_counter() - start


def machine_line() -> str:
    import torch
    return (f"{platform.processor() or platform.machine()}, {psutil.cpu_count(logical=True)} logical CPUs, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
