"""The Hugging Face Hub's metadata, asked through huggingface_hub. Torch-free; nothing online at import.

The endpoint is read from ``HF_ENDPOINT`` at *call* time (huggingface_hub reads it once, at import) and passed
to every call, so tests can point it at a local server. Offline (``HF_HUB_OFFLINE``) and an unreachable Hub
become one clear :class:`~modules.errors.DownloadError` sentence: what, where it would go, which command.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from modules.errors import DownloadError, InvalidRequest
from modules.messages import Message

DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo: where to get it, its size and (LFS files) its sha256 when the Hub says them."""

    repo_id: str
    path: str
    revision: str = "main"
    size: int | None = None
    sha256: str | None = None

    @property
    def url(self) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, self.path, revision=self.revision, endpoint=endpoint())


def endpoint() -> str:
    """The Hub's base URL: ``HF_ENDPOINT`` now (not when huggingface_hub was imported), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise InvalidRequest("repo_id", Message("download.bad_repo", repo_id=repo_id))
    return repo_id


def check_online(what: str, where: Path | str, command: str) -> None:
    """DownloadError (one sentence: what, where, which command) when ``HF_HUB_OFFLINE`` is set."""
    if offline():
        raise DownloadError(Message("download.offline", what=what, where=str(where), command=command))


def hub_error(exc: BaseException, what: str, where: Path | str, command: str) -> DownloadError:
    """A Hub or network failure as one sentence (never a traceback for the user)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError(Message("download.offline", what=what, where=str(where), command=command))
    if isinstance(exc, GatedRepoError):
        return DownloadError(Message("download.gated", what=what))
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)):
        return DownloadError(Message("download.not_found", what=what, endpoint=endpoint()))
    return DownloadError(Message("download.unreachable", what=what, where=str(where), endpoint=endpoint(),
                                 reason=first_line(exc), command=command))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def network_errors() -> tuple[type[BaseException], ...]:
    """What a Hub call raises for HTTP and network failures (huggingface_hub's own, its HTTP client's, OSError)."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[BaseException]] = [HfHubHTTPError, httpx.HTTPError, OSError]
    try:
        import httpx2  # huggingface_hub's HTTP client from 2.x on
        errors.append(httpx2.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def _sha256_of(etag: str | None) -> str | None:
    """An LFS file's etag (``X-Linked-Etag``) is its sha256; a git file's is its git blob id (not a sha256)."""
    etag = (etag or "").strip().strip('"').lower()
    return etag if _SHA256.match(etag) else None


def file_metadata(repo_id: str, path: str, *, revision: str = "main", where: Path | str = "",
                  command: str = "") -> RemoteFile:
    """Size and sha256 of one file (a HEAD request, as huggingface_hub makes it)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    check_repo_id(repo_id)
    what = f"{repo_id}/{path}"
    command = command or download_command(repo_id, path)
    check_online(what, where, command)
    url = hf_hub_url(repo_id, path, revision=revision, endpoint=endpoint())
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint(), timeout=20)
    except network_errors() as exc:
        raise hub_error(exc, what, where, command) from exc
    return RemoteFile(repo_id, path, revision, meta.size, _sha256_of(meta.etag))


def repo_files(repo_id: str, *, revision: str = "main", where: Path | str = "", command: str = "") -> list[RemoteFile]:
    """Every file of a repo with its size and (LFS files) sha256: one ``/api/models`` call."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    command = command or download_command(repo_id)
    check_online(repo_id, where, command)
    try:
        info = HfApi(endpoint=endpoint()).model_info(repo_id, revision=revision, files_metadata=True)
    except network_errors() as exc:
        raise hub_error(exc, repo_id, where, command) from exc
    out = []
    for s in info.siblings or ():
        lfs = getattr(s, "lfs", None)
        size = getattr(s, "size", None)
        sha = None
        if lfs is not None:
            sha = _sha256_of(lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None))
            size = size or (lfs.get("size") if isinstance(lfs, dict) else getattr(lfs, "size", None))
        out.append(RemoteFile(repo_id, s.rfilename, revision, size, sha))
    return out


def parse_hub_url(url: str) -> tuple[str, str, str]:
    """``https://huggingface.co/OWNER/REPO/blob/REV/PATH`` (or ``/resolve/``) -> (repo_id, revision, path).
    Any host is accepted (mirrors, a local endpoint); ``?download=true`` and the like are ignored."""
    parts = urlsplit(url.strip()) if isinstance(url, str) else None
    segments = [unquote(s) for s in (parts.path.split("/") if parts else []) if s]
    if not parts or parts.scheme not in ("http", "https") or len(segments) < 5 \
            or segments[2] not in ("blob", "resolve"):
        raise InvalidRequest("url", Message("download.bad_url", url=str(url)))
    repo_id = f"{segments[0]}/{segments[1]}"
    path = "/".join(segments[4:])
    if any(p in ("", ".", "..") for p in path.split("/")):
        raise InvalidRequest("url", Message("download.bad_url", url=str(url)))
    return check_repo_id(repo_id), segments[3], path


def download_command(repo_id: str, path: str | None = None) -> str:
    """The CLI command that downloads it (said in offline / unreachable messages)."""
    return f"python -m modules.cli download {repo_id}" + (f" {path}" if path else "")


#: key fragments only LoRA files have (kohya/A1111, PEFT/diffusers, LyCORIS)
_LORA_MARKERS = (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", "lora_unet_", "lora_te", ".hada_w1", ".lokr_w1")


def remote_is_lora(remote: RemoteFile) -> bool | None:
    """Whether a remote ``.safetensors`` file holds LoRA weights, from its header alone (two Range requests);
    None when that cannot be told (not safetensors, no range support)."""
    import json

    import httpx

    if not remote.path.endswith(".safetensors"):
        return None
    try:
        with httpx.Client(follow_redirects=True, timeout=20) as client:
            head = client.get(remote.url, headers={"Range": "bytes=0-7", "Accept-Encoding": "identity"})
            if head.status_code != 206 or len(head.content) != 8:
                return None
            n = int.from_bytes(head.content, "little")
            if not 0 < n < 100 * 2**20:
                return None
            body = client.get(remote.url, headers={"Range": f"bytes=8-{7 + n}", "Accept-Encoding": "identity"})
            if body.status_code != 206:
                return None
            keys = [k for k in json.loads(body.content) if k != "__metadata__"]
    except (httpx.HTTPError, ValueError):
        return None
    return any(m in k for k in keys for m in _LORA_MARKERS)
