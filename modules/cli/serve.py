"""webui.py's flags (``bash webui.sh [flags]``): the server, the page, the API and the engine's settings.
:func:`modules.cli.settings.settings_from_args` turns them into Settings. Torch-free."""
from __future__ import annotations

import argparse
from pathlib import Path

from modules.cli.settings import add_extension_flags
from modules.settings import REPO_ROOT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="webui.py", description="Visage portrait WebUI")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--listen", action="store_true", help="bind all interfaces (0.0.0.0)")
    p.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models",
                   help="models folder; may be an existing A1111 'models' folder")
    p.add_argument("--outputs-dir", type=Path, default=REPO_ROOT / "outputs")
    p.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "cache",
                   help="hash cache, embedding cache and other derived files")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    p.add_argument("--ckpt-cache", type=int, default=2,
                   help="recently used models kept in CPU RAM for fast switching (0 = none)")
    p.add_argument("--lang", choices=["auto", "zh", "en"], default="auto")
    p.add_argument("--share", action="store_true", help="create a public Gradio link (needs --auth)")
    p.add_argument("--auth", default=None, help="user:pass[,user:pass] or a file of user:pass lines")
    p.add_argument("--model", default=None, help="model to load at start-up (name or path)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    p.add_argument("--presets-dir", type=Path, default=REPO_ROOT / "presets" / "user",
                   help="folder for presets saved from the page (the shipped ones stay in presets/)")
    p.add_argument("--styles-file", type=Path, default=REPO_ROOT / "styles.csv",
                   help="A1111 styles.csv to use (e.g. your A1111 install's own)")
    p.add_argument("--embed-cache-mb", type=int, default=256, help="prompt-embedding cache size in RAM (MiB)")
    p.add_argument("--no-embed-cache-persist", dest="embed_cache_persist", action="store_false",
                   help="do not keep prompt embeddings on disk between runs")
    p.add_argument("--max-queue", type=int, default=64, help="jobs allowed to wait in the queue")
    p.add_argument("--no-preset-warmup", dest="warm_presets", action="store_false",
                   help="do not pre-compute preset prompt embeddings after a model loads")
    p.add_argument("--lora-dir", dest="lora_dirs", type=Path, action="append", default=[],
                   help="another LoRA folder, searched after models/Lora (repeatable)")
    p.add_argument("--backend", choices=["auto", "diffusers", "onnx"], default="auto",
                   help="auto: edge packages (models/edge) run in ONNX Runtime, other models in diffusers")
    p.add_argument("--onnx-threads", type=int, default=0, help="ONNX Runtime threads for edge packages (0 = default)")
    p.add_argument("--preview-every", type=int, default=2,
                   help="page default: live TAESD preview every N steps (0 = off; needs TAESD weights)")
    p.add_argument("--onnx-providers", choices=["cpu", "auto"], default="cpu",
                   help="ONNX Runtime execution providers: cpu, or auto (TensorRT/CUDA when installed)")
    p.add_argument("--api", action="store_true",
                   help="serve the HTTP API (/api/v1, A1111-compatible /sdapi/v1) next to the page")
    p.add_argument("--nowebui", action="store_true", help="serve the HTTP API only, without the page")
    p.add_argument("--api-auth", default=None,
                   help="HTTP Basic credentials for the API: user:pass[,user:pass] or a file of user:pass lines")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also load .ckpt/.pt/.pth checkpoints (tensors only: torch.load(weights_only=True))")
    p.add_argument("--config-file", type=Path, default=REPO_ROOT / "config.json",
                   help="where options set through the API are kept (A1111 config.json keys)")
    add_extension_flags(p)
    return p
