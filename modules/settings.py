"""Start-up settings: one frozen object built from the command line and passed in. Torch-free.

The flags and the one builder (flags -> Settings) are in :mod:`modules.cli.settings` and :mod:`modules.cli.serve`."""
from __future__ import annotations

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
