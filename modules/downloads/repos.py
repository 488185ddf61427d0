"""A whole model repo from the Hugging Face Hub into its cache (snapshot download).

A download is an :class:`~modules.operations.Operation` of one stage, "downloading", whose progress is in
bytes (``on_progress("downloading", done, total)``) and which stops cooperatively (``should_stop``) between
byte reports. Its output needs no swap of ours: huggingface_hub writes each file under ``.incomplete`` in the
cache and moves it into place when it is complete."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modules.families import Family
from modules.operations import Operation, ProgressCallback


@dataclass(frozen=True)
class SuggestedModel:
    repo_id: str
    family: Family
    note: str

    def to_dict(self) -> dict:
        return {"repo_id": self.repo_id, "family": self.family.value, "note": self.note}


SUGGESTED = (
    SuggestedModel("Tongyi-MAI/Z-Image-Turbo", Family.ZIMAGE,
                   "best portraits; needs a GPU with >= 16 GB (≈ 20 GB download)"),
    SuggestedModel("stable-diffusion-v1-5/stable-diffusion-v1-5", Family.SD15,
                   "SD1.5 base; runs on a CPU (slow) and small GPUs (≈ 4 GB in fp16)"),
    SuggestedModel("stabilityai/stable-diffusion-xl-base-1.0", Family.SDXL,
                   "SDXL base; needs a GPU with >= 8 GB"),
)

#: only what a diffusers pipeline needs: skip duplicate single files, fp16 variants and other frameworks
ALLOW_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors",
                  "*/*.jinja", "tokenizer*/*"]
IGNORE_PATTERNS = ["*.fp16.safetensors", "*.ckpt", "*.bin", "*.msgpack", "*.onnx*"]


def download_repo(repo_id: str, *, cache_dir: Path | None = None, on_progress: ProgressCallback | None = None,
                  should_stop: Callable[[], bool] | None = None, command: str = "") -> Path:
    """Download ``repo_id`` into the HF cache; return the snapshot folder.

    ``on_progress(label, done, total)``: the stage, then bytes; ``should_stop()`` true stops at the next
    report (Interrupted; the files already complete stay in the cache). Fails fast offline
    (``HF_HUB_OFFLINE=1`` or no network) with a DownloadError that says so, naming ``command`` (default:
    ``python -m modules.cli download REPO``).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from modules.checkpoints.hf_cache import default_hf_cache, repo_folder
    from modules.downloads.hub import (
        check_online,
        check_repo_id,
        download_command,
        endpoint,
        hub_error,
        network_errors,
    )

    check_repo_id(repo_id)
    where = repo_folder(repo_id, Path(cache_dir) if cache_dir is not None else default_hf_cache())
    command = command or download_command(repo_id)
    check_online(repo_id, where, command)
    op = Operation(("downloading",), on_progress=on_progress, should_stop=should_stop)
    op.stage()
    tqdm_class = _progress_tqdm(op) if (on_progress or should_stop) else None
    try:
        path = snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=ALLOW_PATTERNS,
                                 ignore_patterns=IGNORE_PATTERNS, tqdm_class=tqdm_class, endpoint=endpoint())
    except (LocalEntryNotFoundError, *network_errors()) as exc:
        raise hub_error(exc, repo_id, where, command) from exc
    return Path(path)


def _progress_tqdm(op: Operation):
    """A tqdm subclass that forwards byte counts to ``op`` and is its cancel point."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):
        def update(self, n=1):
            result = super().update(n)
            if self.unit == "B":  # the byte bars (not "Fetching N files")
                op.report("downloading", int(self.n), int(self.total or 0))
            op.check()
            return result

    return _Forward
