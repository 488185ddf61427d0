"""Single files from the Hub into a folder: resumable, cancellable, checksummed, moved into place atomically.

A file is written to a hidden ``.NAME.part`` beside its target. An existing part file is hashed first and
then continued with an HTTP Range request (a server that ignores the range starts it over); a connection
cut mid-file is retried from where it stopped, a few times. The sha256 is computed while streaming and
checked against the Hub's (LFS files give it as their etag): a mismatch removes the part file and leaves
nothing in the models folder. The complete file is fsynced and renamed onto its target (one atomic rename
in the same folder), so the registry sees the whole file or none. The free disk space is checked for the
whole plan before the first byte is fetched.

Progress is ``on_progress(label, done_bytes, total_bytes)`` (label: ``"downloading NAME"``); ``should_stop()``
is asked between chunks (:class:`~modules.errors.Interrupted`; the part file stays, and the next run resumes
it). Torch-free; nothing online at import time.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modules.atomic import fsync_dir
from modules.downloads.hub import (
    RemoteFile,
    check_online,
    check_repo_id,
    download_command,
    endpoint,
    file_metadata,
    first_line,
)
from modules.errors import DownloadError
from modules.messages import Message
from modules.operations import Operation, ProgressCallback
from modules.paths import safe_child

CHUNK = 1 << 20
#: how many times a cut connection is resumed within one run before giving up (the next run resumes again)
RETRIES = 3
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class FileItem:
    """One file to fetch: what (on the Hub) and where (the final path)."""

    remote: RemoteFile
    target: Path

    @property
    def present(self) -> bool:
        """Already downloaded: the target exists with the Hub's size (or any size when the Hub gave none)."""
        try:
            size = self.target.stat().st_size
        except OSError:
            return False
        return self.target.is_file() and (self.remote.size is None or size == self.remote.size)

    @property
    def partial_bytes(self) -> int:
        try:
            return part_path(self.target).stat().st_size
        except OSError:
            return 0

    @property
    def missing_bytes(self) -> int:
        """What is still to fetch (0 when present; the whole size when unknown is counted as 0)."""
        if self.present:
            return 0
        return max(0, (self.remote.size or 0) - self.partial_bytes)


def part_path(target: Path) -> Path:
    """The hidden part file beside ``target``: ``.NAME.part`` (the scanners skip dot files)."""
    target = Path(target)
    return target.with_name(f".{target.name}{PART_SUFFIX}")


def human_size(n: int | None) -> str:
    if n is None:
        return "? B"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


# -- disk space -------------------------------------------------------------------------------------
def _existing_ancestor(folder: Path) -> Path:
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def free_space(folder: Path) -> int:
    """Free bytes on the file system that ``folder`` (or its nearest existing parent) is on."""
    return shutil.disk_usage(_existing_ancestor(folder)).free


def check_disk_space(needs: Mapping[Path, int]) -> None:
    """Refuse (DownloadError: how much is needed, how much is free) when the bytes to write into each folder
    do not fit on its file system; folders on the same file system are added up."""
    by_device: dict[int, list] = {}
    for folder, n in needs.items():
        if n <= 0:
            continue
        existing = _existing_ancestor(folder)
        entry = by_device.setdefault(os.stat(existing).st_dev, [Path(folder), 0])
        entry[1] += n
    for folder, n in by_device.values():
        free = free_space(folder)
        if n > free:
            raise DownloadError(Message("download.no_space", folder=str(folder), need=human_size(n),
                                        free=human_size(free)))


# -- one file ---------------------------------------------------------------------------------------
class _Part:
    """The part file being written and the sha256 of exactly the bytes in it."""

    def __init__(self, path: Path, op: Operation, label: str):
        self.path = path
        self.sha = hashlib.sha256()
        self.size = 0
        if path.is_file():
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    op.check()
                    self.sha.update(chunk)
                    self.size += len(chunk)

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.sha = hashlib.sha256()
        self.size = 0

    def append(self, fh, chunk: bytes) -> None:
        fh.write(chunk)
        self.sha.update(chunk)
        self.size += len(chunk)


class _Bytes:
    """Byte progress over a whole plan, reported through an Operation (its cancel point)."""

    def __init__(self, op: Operation, total: int):
        self.op = op
        self.total = total
        self.done = 0

    def add(self, label: str, n: int) -> None:
        self.done += n
        self.op.report(label, self.done, max(self.total, self.done))


def _download(client, item: FileItem, op: Operation, progress: _Bytes, command: str) -> Path:
    import httpx
    from huggingface_hub.utils import build_hf_headers

    remote, target = item.remote, item.target
    label = f"downloading {target.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(part_path(target), op, label)
    if remote.size is not None and part.size > remote.size:  # not a prefix of this file: start over
        part.restart()
    progress.add(label, part.size)
    what = f"{remote.repo_id}/{remote.path}"
    failures = 0
    while remote.size is None or part.size < remote.size:
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"
        if part.size:
            headers["Range"] = f"bytes={part.size}-"
        try:
            with client.stream("GET", remote.url, headers=headers) as response:
                if response.status_code == 416 and part.size:  # nothing after what we have
                    if remote.size is None:
                        break
                    progress.add(label, -part.size)
                    part.restart()
                    continue
                if part.size and response.status_code == 200:  # the range was ignored: the whole file again
                    progress.add(label, -part.size)
                    part.restart()
                response.raise_for_status()
                with open(part.path, "ab") as fh:
                    for chunk in response.iter_bytes():  # as received: a cut loses nothing already read
                        op.check()  # cancel between chunks: the part file stays for the next run
                        part.append(fh, chunk)
                        progress.add(label, len(chunk))
                    fh.flush()
                    os.fsync(fh.fileno())
            if remote.size is None:
                break
            if part.size < remote.size:  # the server closed early without an error
                raise httpx.RemoteProtocolError("the server closed the connection before the end of the file")
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            key = "download.not_found" if code == 404 else "download.gated" if code in (401, 403) else None
            if key == "download.not_found":
                raise DownloadError(Message(key, what=what, endpoint=endpoint())) from exc
            if key is not None:
                raise DownloadError(Message(key, what=what)) from exc
            raise DownloadError(Message("download.unreachable", what=what, where=str(target), endpoint=endpoint(),
                                        reason=f"HTTP {code}", command=command)) from exc
        except (httpx.TransportError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                raise DownloadError(Message("download.write_failed", name=target.name,
                                            reason=exc.strerror or str(exc))) from exc
            failures += 1
            if isinstance(exc, httpx.ConnectError) and not part.size:  # never reached: not a cut connection
                raise DownloadError(Message("download.unreachable", what=what, where=str(target),
                                            endpoint=endpoint(), reason=first_line(exc), command=command)) from exc
            if failures > RETRIES:
                raise DownloadError(Message("download.connection_lost", name=target.name,
                                            done=human_size(part.size), total=human_size(remote.size),
                                            reason=first_line(exc), command=command)) from exc
    if remote.size is not None and part.size != remote.size:
        part.path.unlink(missing_ok=True)
        raise DownloadError(Message("download.size", name=target.name, got=part.size, want=remote.size))
    digest = part.sha.hexdigest()
    if remote.sha256 is not None and digest != remote.sha256:
        part.path.unlink(missing_ok=True)
        raise DownloadError(Message("download.checksum", name=target.name, got=digest, want=remote.sha256))
    os.replace(part.path, target)  # same folder: one atomic rename; a reader sees no file or the whole file
    fsync_dir(target.parent)
    return target


def download_items(items: Sequence[FileItem], *, on_progress: ProgressCallback | None = None,
                   should_stop: Callable[[], bool] | None = None, command: str = "") -> list[Path]:
    """Fetch each item not already present; the disk space for all of them is checked first. Returns the
    targets in order. Progress is in bytes over all items."""
    import httpx

    todo = [i for i in items if not i.present]
    needs: dict[Path, int] = {}
    for item in todo:
        needs[item.target.parent] = needs.get(item.target.parent, 0) + item.missing_bytes
    check_disk_space(needs)
    if todo:
        first = todo[0]
        check_online(f"{first.remote.repo_id}/{first.remote.path}", first.target,
                     command or download_command(first.remote.repo_id, first.remote.path))
    op = Operation(len(todo), on_progress=on_progress, should_stop=should_stop)
    progress = _Bytes(op, sum(i.remote.size or 0 for i in todo))
    timeout = httpx.Timeout(30.0, connect=10.0)
    with httpx.Client(follow_redirects=True, timeout=timeout) as client:
        for item in todo:
            op.stage(f"downloading {item.target.name}")
            _download(client, item, op, progress, command or download_command(item.remote.repo_id, item.remote.path))
    op.finish()
    return [i.target for i in items]


def fetch_files(repo_id: str, filenames: list[str], dest_dir: Path, *, revision: str = "main",
                on_progress: ProgressCallback | None = None, should_stop: Callable[[], bool] | None = None,
                command: str | None = None) -> list[Path]:
    """Download ``filenames`` of ``repo_id`` into ``dest_dir``, keeping their relative paths; return the paths.

    Files already there with the Hub's size are kept. Resumable (``.NAME.part``), cancellable between chunks
    (``should_stop`` -> Interrupted), sha256-checked where the Hub gives one, disk space checked first, each
    file moved into place atomically. Offline or an unreachable Hub: DownloadError in one sentence naming what,
    where and ``command`` (default: the matching ``python -m modules.cli download`` line)."""
    check_repo_id(repo_id)
    dest_dir = Path(dest_dir)
    names = list(filenames)
    command = command or download_command(repo_id, names[0] if len(names) == 1 else None)
    targets = [safe_child(dest_dir, name) for name in names]
    if all(t.is_file() for t in targets):
        return targets
    check_online(f"{repo_id} ({', '.join(names)})", dest_dir, command)
    items = [FileItem(file_metadata(repo_id, name, revision=revision, where=dest_dir, command=command), target)
             for name, target in zip(names, targets)]
    return download_items(items, on_progress=on_progress, should_stop=should_stop, command=command)


def items_for(remotes: Iterable[RemoteFile], dest_dir: Path, strip: str = "") -> list[FileItem]:
    """Items for ``remotes`` under ``dest_dir``: each keeps its path in the repo (minus a leading ``strip``)."""
    out = []
    for r in remotes:
        name = r.path[len(strip):] if strip and r.path.startswith(strip) else r.path
        out.append(FileItem(r, safe_child(Path(dest_dir), name)))
    return out
