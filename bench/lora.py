"""Benchmark: LoRA load, apply, hot swap, and merge (fuse + save) on a full-size SD1.5-shaped model.

A random-weight SD1.5 checkpoint (fp16 single file, as most shared checkpoints are) is written to a temp
models folder and loaded through the real registry/loader as fp32 (the CPU default). A rank-32 kohya LoRA
covering every U-Net attention and feed-forward Linear and every CLIP-L attention/MLP Linear is written by
the script. Weights are random: speed does not depend on their values.

    .venv/bin/python -m bench.lora [--workdir DIR] [--keep] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import gib, machine_line, rss_bytes

RANK = 32
ALPHA = 16.0
UNET_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
TE_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
GOAL_S = 10.0


class PeakRss:
    """Samples this process's RSS in a thread; ``peak`` after the block."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def build_base(folders) -> Path:
    import torch

    from bench.common import random_pipeline
    from modules.families import Family
    from modules.checkpoints.single_file import save_single_file
    from modules.tiny import install_tiny_clip_tokenizer

    install_tiny_clip_tokenizer(folders)  # tokenization does not affect these timings
    path = folders.checkpoints / "random-sd15.safetensors"
    if not path.exists():
        pipe = random_pipeline(Family.SD15, seed=0, tokenizer_dir=folders.tokenizers / "clip-vit-large-patch14")
        pipe.to(torch.float16)
        save_single_file(pipe, Family.SD15, path)
        del pipe
    return path


def write_lora(pipe, path: Path) -> tuple[Path, int, int]:
    """Rank-32 kohya LoRA (fp16, alpha 16) on every U-Net attention/ff Linear and CLIP attention/MLP Linear.
    Returns (path, layers, parameters)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(1)
    sd = {}
    layers = params = 0
    targets = [("lora_unet_", pipe.unet, n) for n, _ in pipe.unet.named_modules() if n.endswith(UNET_LINEARS)]
    targets += [("lora_te_", pipe.text_encoder, n) for n, _ in pipe.text_encoder.named_modules()
                if n.endswith(TE_LINEARS)]
    for prefix, model, name in targets:
        layer = model.get_submodule(name)
        key = prefix + ("text_model_" if prefix == "lora_te_" else "") + name.replace(".", "_")
        down = torch.randn(RANK, layer.in_features, generator=gen) / layer.in_features ** 0.5
        up = torch.randn(layer.out_features, RANK, generator=gen) * 0.01
        sd[f"{key}.lora_down.weight"] = down.half()
        sd[f"{key}.lora_up.weight"] = up.half()
        sd[f"{key}.alpha"] = torch.tensor(ALPHA)
        layers += 1
        params += down.numel() + up.numel()
    save_file(sd, str(path), metadata={"ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA)})
    return path, layers, params


def check_merged_tensor(pipe, merged: Path, lora_path: Path, weight: float) -> float:
    """Max abs error of one merged U-Net weight vs fp16(base + weight * alpha/r * up @ down)."""
    from safetensors import safe_open

    from modules.lora.patcher import read_lora_file

    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    sd, _ = read_lora_file(lora_path)
    key = "lora_unet_" + module.replace(".", "_")
    layer = pipe.unet.get_submodule(module)
    base = (layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer).weight.detach().float()
    delta = sd[f"{key}.lora_up.weight"].float() @ sd[f"{key}.lora_down.weight"].float()
    want = (base + weight * ALPHA / RANK * delta).half().float()
    with safe_open(str(merged), framework="pt") as f:
        got = f.get_tensor("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight").float()
    return float((got - want).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoint and LoRA (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()

    import torch

    from modules.loader import load_pipeline
    from modules.lora import ensure_hashes, inspect_lora
    from modules.lora.merge import merge_loras, merge_output_path
    from modules.lora.patcher import LoraPatcher, read_lora_file
    from modules.paths import Folders
    from modules.registry import HashCache, ModelRegistry

    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="visage-bench-lora-"))
    folders = Folders(models=work / "models", outputs=work / "outputs", cache=work / "cache")
    folders.checkpoints.mkdir(parents=True, exist_ok=True)
    folders.lora.mkdir(parents=True, exist_ok=True)
    t = {}
    try:
        print("building the random base checkpoint ...", file=sys.stderr)
        base_path = build_base(folders)
        os.sync()  # the base was just written: let its writeback finish outside the timings
        cache = HashCache(folders.cache / "hashes.json")
        registry = ModelRegistry(folders, cache, hf_cache=work / "no-hf-cache")
        registry.scan()  # model hash computed here, outside the timings (the UI has it already)
        entry = registry.get("random-sd15")
        start = time.perf_counter()
        pipe = load_pipeline(entry, folders=folders)
        pipe.set_progress_bar_config(disable=True)
        t["base load (fp16 file → fp32 pipeline), not in total"] = time.perf_counter() - start
        lora_path, n_layers, n_params = write_lora(pipe, folders.lora / "random-rank32.safetensors")

        start = time.perf_counter()
        info = ensure_hashes(inspect_lora(lora_path), cache)
        t["inspect + hash LoRA file"] = time.perf_counter() - start
        start = time.perf_counter()
        read_lora_file(lora_path)
        t["(of the load: file read alone)"] = time.perf_counter() - start

        patcher = LoraPatcher(hash_cache=cache)
        start = time.perf_counter()
        report = patcher.apply(pipe, "sd15", [(info, 0.8, 0.8)])
        t["load + apply (read, convert, inject, activate)"] = time.perf_counter() - start
        assert report.unmatched_count == 0 and report.loaded == [info.name]
        start = time.perf_counter()
        patcher.apply(pipe, "sd15", [(info, 0.5, 0.5)])
        t["hot swap: weight change 0.8 → 0.5"] = time.perf_counter() - start
        patcher.apply(pipe, "sd15", [])
        start = time.perf_counter()
        patcher.apply(pipe, "sd15", [(info, 0.5, 0.5)])
        t["re-activate after clear (resident, no file read)"] = time.perf_counter() - start

        out = merge_output_path(folders, "random-sd15-merged", "single-file")
        stages: list[tuple[str, float]] = []
        with PeakRss() as peak:
            rss_before = rss_bytes()
            start = time.perf_counter()
            merge_loras(pipe, "sd15", [(info, 0.5, 0.5)], out_path=out, fmt="single-file", dtype="fp16",
                        base_entry=entry, patcher=patcher, hash_cache=cache,
                        on_progress=lambda label, done, total: stages.append((label, time.perf_counter())))
            t["fuse + save (single-file fp16)"] = time.perf_counter() - start
        for (label, at), (_, until) in zip(stages, stages[1:]):
            t[f"(of the merge: {label.replace(out.name, 'file')})"] = until - at
        err = check_merged_tensor(pipe, out, lora_path, 0.5)

        total_keys = ("inspect + hash LoRA file", "load + apply (read, convert, inject, activate)",
                      "hot swap: weight change 0.8 → 0.5", "fuse + save (single-file fp16)")
        total = sum(t[k] for k in total_keys)
        print(f"machine: {machine_line()}")
        print(f"base: {gib(base_path.stat().st_size)} fp16 single file, loaded as fp32; LoRA: kohya rank {RANK}, "
              f"{n_layers} layers ({n_params / 1e6:.1f} M params), {gib(lora_path.stat().st_size)}; "
              f"merged file: {gib(out.stat().st_size)}\n")
        print("| step | time |\n|---|---|")
        for k, v in t.items():
            print(f"| {k} | {v:.2f} s |")
        print(f"| **total** (inspect+hash, load+apply, hot swap, fuse+save) | **{total:.2f} s** "
              f"(goal ≤ {GOAL_S:.0f} s: {'met' if total <= GOAL_S else 'NOT met'}) |")
        print(f"\nmerge memory: RSS {gib(rss_before)} before, peak {gib(peak.peak)} during "
              f"(+{gib(peak.peak - rss_before)})")
        print(f"merged weight check (one U-Net layer vs fp16(base + w·α/r·up@down)): max abs error {err:.2e}")
        print("command: .venv/bin/python -m bench.lora" + (f" --threads {args.threads}" if args.threads else ""))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
