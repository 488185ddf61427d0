"""Start-up settings: one frozen object built from the command line and passed in. Torch-free."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from modules.paths import Folders

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    models_dir: Path = REPO_ROOT / "models"
    outputs_dir: Path = REPO_ROOT / "outputs"
    cache_dir: Path = REPO_ROOT / "cache"
    device: str = "auto"  # auto | cuda | cpu
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16
    ckpt_cache: int = 2  # pipelines kept in CPU RAM besides the one on the device
    lang: str = "auto"  # auto | zh | en
    share: bool = False
    auth: tuple[tuple[str, str], ...] = ()
    model: str | None = None  # model to load at start-up (default: first found)
    hf_cache: Path | None = None  # default: huggingface_hub's own cache location
    threads: int = 0  # torch intra-op threads, 0 = library default
    presets_dir: Path = REPO_ROOT / "presets" / "user"  # where the page saves the user's own presets
    styles_file: Path = REPO_ROOT / "styles.csv"  # A1111 styles.csv (may be an A1111 install's own file)
    embed_cache_mb: int = 256  # prompt-embedding cache in RAM
    embed_cache_persist: bool = True  # keep embeddings on disk under cache/embeddings
    max_queue: int = 64  # jobs waiting beyond this are refused (HTTP 503)
    lora_dirs: tuple[Path, ...] = ()  # searched after models/Lora
    backend: str = "auto"  # auto (edge packages -> onnx, others -> diffusers) | diffusers | onnx
    onnx_threads: int = 0  # ONNX Runtime intra-op threads for edge packages (0 = one per core)
    onnx_providers: str = "cpu"  # cpu | auto (TensorRT / CUDA execution providers when installed)
    preview_every: int = 2  # the page's default: a live TAESD preview every N denoising steps (0 = off)
    warm_presets: bool = True  # pre-compute preset embeddings in the background after each load
    api: bool = False  # serve the HTTP API (native + A1111-compatible) next to the page
    nowebui: bool = False  # serve the API alone (implies api)
    api_auth: tuple[tuple[str, str], ...] = ()  # HTTP Basic credentials for the API
    allow_pickle: bool = False  # load .ckpt/.pt/.pth checkpoints (only with torch.load(weights_only=True))
    config_file: Path = REPO_ROOT / "config.json"  # options set through the API (A1111's config.json keys)
    extensions_dir: Path = REPO_ROOT / "extensions"  # one folder per extension (extensions/README.md)
    disabled_extensions: tuple[str, ...] = ()  # --disable-extension NAME (besides the settings file's list)
    disable_all_extensions: bool = False
    extensions_config: Path = REPO_ROOT / "extensions.json"  # {"disabled": [...], "options": {name: {...}}}

    @property
    def folders(self) -> Folders:
        return Folders(models=self.models_dir, outputs=self.outputs_dir, cache=self.cache_dir)


def parse_auth(value: str | None) -> tuple[tuple[str, str], ...]:
    """``user:pass[,user2:pass2]`` or a path to a file with one ``user:pass`` per line."""
    if not value:
        return ()
    text = Path(value).read_text(encoding="utf-8") if os.path.isfile(value) else value
    pairs = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise argparse.ArgumentTypeError("--auth expects user:pass (or a file of such lines)")
        pairs.append((user, password))
    return tuple(pairs)


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


def add_extension_flags(p: argparse.ArgumentParser) -> None:
    """The extension flags (webui.py and ``python -m modules.cli`` share them)."""
    p.add_argument("--extensions-dir", type=Path, default=REPO_ROOT / "extensions",
                   help="folder of extensions, one sub-folder each (default ./extensions)")
    p.add_argument("--disable-extension", dest="disabled_extensions", action="append", default=[], metavar="NAME",
                   help="do not load this extension (repeatable)")
    p.add_argument("--disable-all-extensions", action="store_true", help="load no extensions")
    p.add_argument("--extensions-config", type=Path, default=REPO_ROOT / "extensions.json",
                   help="extensions settings file: which are disabled, and their options (default ./extensions.json)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    host = "0.0.0.0" if args.listen else args.host
    return Settings(
        host=host, port=args.port,
        models_dir=args.models_dir.expanduser().resolve(),
        outputs_dir=args.outputs_dir.expanduser().resolve(),
        cache_dir=args.cache_dir.expanduser().resolve(),
        device=args.device, dtype=args.dtype, ckpt_cache=max(0, args.ckpt_cache),
        lang=args.lang, share=args.share, auth=parse_auth(args.auth),
        model=args.model, threads=args.threads,
        presets_dir=args.presets_dir.expanduser().resolve(),
        styles_file=args.styles_file.expanduser().resolve(),
        embed_cache_mb=max(0, args.embed_cache_mb), embed_cache_persist=args.embed_cache_persist,
        max_queue=max(1, args.max_queue),
        lora_dirs=tuple(p.expanduser().resolve() for p in args.lora_dirs),
        backend=args.backend, onnx_threads=max(0, args.onnx_threads), onnx_providers=args.onnx_providers,
        preview_every=max(0, args.preview_every),
        warm_presets=args.warm_presets,
        api=args.api or args.nowebui, nowebui=args.nowebui, api_auth=parse_auth(args.api_auth),
        allow_pickle=args.allow_pickle, config_file=args.config_file.expanduser().resolve(),
        extensions_dir=args.extensions_dir.expanduser().resolve(),
        disabled_extensions=tuple(args.disabled_extensions), disable_all_extensions=args.disable_all_extensions,
        extensions_config=args.extensions_config.expanduser().resolve(),
    )
