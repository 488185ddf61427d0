"""A download plan: what goes where, how big it is, what is already there and the free disk, shown BEFORE anything
is fetched (page, CLI, API); then :func:`run_plan`. Torch-free.

A plan is built from a starter pack (:func:`plan_pack`), one file of a repo (:func:`plan_file`: a LoRA goes to
``models/Lora``, a checkpoint to ``models/Stable-diffusion``, told apart from its safetensors header), a Hub file
URL (:func:`plan_url`) or a whole diffusers repo (:func:`plan_repo`, into the Hugging Face cache). Sizes come from
the Hub (one metadata call per repo). Running a plan checks the disk space for all of it first, then fetches item
by item with byte progress over the whole plan and a cancel point between chunks.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from modules.downloads.files import (
    FileItem,
    check_disk_space,
    download_items,
    free_space,
    human_size,
)
from modules.downloads.hub import (
    RemoteFile,
    check_repo_id,
    download_command,
    endpoint,
    file_metadata,
    parse_hub_url,
    remote_is_lora,
    repo_files,
)
from modules.downloads.packs import ItemKind, PackItem, StarterPack, get_pack, taesd_item
from modules.downloads.repos import ALLOW_PATTERNS, IGNORE_PATTERNS, download_repo
from modules.errors import DownloadError, InvalidRequest
from modules.messages import Message
from modules.operations import ProgressCallback
from modules.paths import Folders, safe_child


@dataclass(frozen=True)
class PlanItem:
    """One pack item resolved: its destination and sizes (``files``: what will be fetched, with targets)."""

    item: PackItem
    destination: Path  # the file, the TAESD folder, or the repo's folder in the HF cache
    files: tuple[FileItem, ...]
    size: int | None  # bytes on the Hub (None: the Hub did not say for some file)
    present: int  # bytes already on disk (complete files and resumable parts)

    @property
    def missing(self) -> int:
        return max(0, (self.size or 0) - self.present)

    @property
    def job_bytes(self) -> int:
        """What running it reports as progress: the files not yet complete (a resumed part counts), or what
        the repo still lacks."""
        if self.item.kind is ItemKind.CHECKPOINT_REPO:
            return self.missing
        return sum(f.remote.size or 0 for f in self.files if not f.present)

    @property
    def complete(self) -> bool:
        return all(f.present for f in self.files) if self.files else False

    def to_dict(self) -> dict:
        return {**self.item.to_dict(), "destination": str(self.destination), "size": self.size,
                "size_text": human_size(self.size), "present": self.present, "missing": self.missing,
                "complete": self.complete}


@dataclass(frozen=True)
class DownloadPlan:
    title: str
    items: tuple[PlanItem, ...]
    pack_id: str | None = None
    #: free bytes per destination root (models folder, HF cache), when the plan was made
    free: dict[str, int] = field(default_factory=dict)
    hf_cache: Path | None = None
    #: the command that runs this plan again (said when a run is cut off or offline)
    command: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(i.size or 0 for i in self.items)

    @property
    def present_bytes(self) -> int:
        return sum(i.present for i in self.items)

    @property
    def missing_bytes(self) -> int:
        return sum(i.missing for i in self.items)

    @property
    def free_bytes(self) -> int:
        return min(self.free.values()) if self.free else 0

    @property
    def fits(self) -> bool:
        return all(self.missing_bytes <= f for f in self.free.values())

    def needs(self) -> dict[Path, int]:
        """Bytes still to write per destination folder (what the disk check adds up)."""
        out: dict[Path, int] = {}
        for i in self.items:
            folder = i.destination if i.item.kind in (ItemKind.CHECKPOINT_REPO, ItemKind.TAESD) else i.destination.parent
            out[folder] = out.get(folder, 0) + i.missing
        return out

    def to_dict(self) -> dict:
        return {"title": self.title, "pack": self.pack_id, "items": [i.to_dict() for i in self.items],
                "total_bytes": self.total_bytes, "present_bytes": self.present_bytes,
                "missing_bytes": self.missing_bytes, "free_bytes": self.free_bytes, "free": dict(self.free),
                "total_text": human_size(self.total_bytes), "missing_text": human_size(self.missing_bytes),
                "free_text": human_size(self.free_bytes), "fits": self.fits}

    def summary(self) -> str:
        head = (f"{self.title}: {human_size(self.total_bytes)} ({human_size(self.missing_bytes)} to download, "
                f"{human_size(self.free_bytes)} free)")
        lines = [head]
        for i in self.items:
            state = "present" if i.complete else human_size(i.size)
            lines.append(f"  {i.item.kind.value:16} {i.item.repo_id:45} {state:>10}  -> {i.destination}")
        return "\n".join(lines)


# -- building plans --------------------------------------------------------------------------------
def _hf_cache(hf_cache: Path | None) -> Path:
    from modules.checkpoints.hf_cache import default_hf_cache

    return Path(hf_cache) if hf_cache is not None else default_hf_cache()


def _remote_map(repo_id: str, revision: str, where: Path, command: str) -> dict[str, RemoteFile]:
    return {r.path: r for r in repo_files(repo_id, revision=revision, where=where, command=command)}


def _pick(remotes: dict[str, RemoteFile], item: PackItem, path: str) -> RemoteFile:
    if path not in remotes:
        raise DownloadError(Message("download.not_found", what=f"{item.repo_id}/{path}", endpoint=endpoint()))
    return remotes[path]


def _repo_present(repo_id: str, remotes: list[RemoteFile], cache: Path) -> int:
    from huggingface_hub import try_to_load_from_cache

    present = 0
    for r in remotes:
        found = try_to_load_from_cache(repo_id, r.path, cache_dir=cache, revision=r.revision)
        if isinstance(found, str):
            present += r.size or 0
    return present


def plan_item(item: PackItem, folders: Folders, hf_cache: Path | None = None, command: str = "") -> PlanItem:
    """Resolve one item against the Hub: destination, files, size, bytes already present. ``command``: what
    an offline / unreachable message tells the user to run (default: the item's own download command)."""
    check_repo_id(item.repo_id)
    if item.kind is ItemKind.CHECKPOINT_REPO:
        from huggingface_hub.utils import filter_repo_objects

        from modules.checkpoints.hf_cache import repo_folder

        cache = _hf_cache(hf_cache)
        command = command or download_command(item.repo_id)
        remotes = list(filter_repo_objects(repo_files(item.repo_id, revision=item.revision, where=cache,
                                                      command=command),
                                           allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS,
                                           key=lambda r: r.path))
        size = None if any(r.size is None for r in remotes) else sum(r.size or 0 for r in remotes)
        return PlanItem(item, repo_folder(item.repo_id, cache), (), size, _repo_present(item.repo_id, remotes, cache))
    if item.kind is ItemKind.TAESD:
        dest = safe_child(folders.vae_approx, item.save_as or item.repo_id.split("/")[-1])
    elif item.kind is ItemKind.LORA:
        dest = folders.lora
    else:
        dest = folders.checkpoints
    command = command or download_command(item.repo_id, item.files[0] if len(item.files) == 1 else None)
    if len(item.files) == 1:
        remotes = {item.files[0]: file_metadata(item.repo_id, item.files[0], revision=item.revision, where=dest,
                                                command=command)}
    else:
        remotes = _remote_map(item.repo_id, item.revision, dest, command)
    files = []
    for path in item.files:
        remote = _pick(remotes, item, path)
        if item.kind is ItemKind.TAESD:
            target = safe_child(dest, Path(path).name)
        else:
            target = safe_child(dest, item.save_as or Path(path).name)
        files.append(FileItem(remote, target))
    size = None if any(f.remote.size is None for f in files) else sum(f.remote.size or 0 for f in files)
    present = sum((f.remote.size or 0) if f.present else f.partial_bytes for f in files)
    destination = dest if item.kind is ItemKind.TAESD else files[0].target
    return PlanItem(item, destination, tuple(files), size, present)


def _plan(title: str, items: list[PackItem], folders: Folders, hf_cache: Path | None,
          pack_id: str | None = None, command: str = "") -> DownloadPlan:
    planned = tuple(plan_item(i, folders, hf_cache, command) for i in items)
    roots = {str(folders.models): folders.models}
    if any(i.item.kind is ItemKind.CHECKPOINT_REPO for i in planned):
        cache = _hf_cache(hf_cache)
        roots[str(cache)] = cache
    free = {name: free_space(path) for name, path in roots.items()}
    return DownloadPlan(title, planned, pack_id, free, hf_cache, command)


def plan_pack(pack: str | StarterPack, folders: Folders, hf_cache: Path | None = None, lang: str = "en") -> DownloadPlan:
    pack = pack if isinstance(pack, StarterPack) else get_pack(pack)
    return _plan(pack.title(lang), list(pack.items), folders, hf_cache, pack.id,
                 f"python -m modules.cli download --pack {pack.id}")


def plan_repo(repo_id: str, folders: Folders, hf_cache: Path | None = None, revision: str = "main") -> DownloadPlan:
    """A whole diffusers repo into the HF cache; madebyollin's tiny autoencoders (taesd, taesdxl, taef1) into
    ``models/VAE-approx/<name>``, where the TAESD lookup looks (as the packs place them)."""
    from modules.taesd import TAESD_REPOS

    taesd = {repo: name for repo, name in TAESD_REPOS.values()}
    if repo_id in taesd:
        item = taesd_item(repo_id, taesd[repo_id], "")
        return _plan(repo_id, [replace(item, revision=revision)], folders, hf_cache)
    return _plan(repo_id, [PackItem(ItemKind.CHECKPOINT_REPO, repo_id, revision=revision)], folders, hf_cache)


def plan_file(repo_id: str, filename: str, folders: Folders, hf_cache: Path | None = None, *, revision: str = "main",
              kind: ItemKind | None = None) -> DownloadPlan:
    """One file of a repo: a LoRA -> models/Lora, a checkpoint -> models/Stable-diffusion (from its header;
    a file whose header cannot be read goes by its name: "lora" in it -> LoRA)."""
    check_repo_id(repo_id)
    if kind is None:
        remote = file_metadata(repo_id, filename, revision=revision, where=folders.models,
                               command=download_command(repo_id, filename))
        lora = remote_is_lora(remote)
        if lora is None:
            lora = "lora" in filename.lower()
        kind = ItemKind.LORA if lora else ItemKind.CHECKPOINT_FILE
    item = PackItem(kind, repo_id, (filename,), revision=revision)
    return _plan(f"{repo_id}/{filename}", [item], folders, hf_cache)


def plan_url(url: str, folders: Folders, hf_cache: Path | None = None) -> DownloadPlan:
    repo_id, revision, path = parse_hub_url(url)
    if not path:
        return plan_repo(repo_id, folders, hf_cache, revision)
    return plan_file(repo_id, path, folders, hf_cache, revision=revision)


# -- running a plan --------------------------------------------------------------------------------
def run_plan(plan: DownloadPlan, on_progress: ProgressCallback | None = None,
             should_stop: Callable[[], bool] | None = None) -> list[Path]:
    """Fetch every item not yet complete; the disk space for the whole plan is checked before the first byte.
    Progress: ``(label, done_bytes, total_bytes)`` over the whole plan. Returns each item's destination."""
    check_disk_space(plan.needs())
    total = max(sum(i.job_bytes for i in plan.items), 1)
    base = 0
    out = []
    high = [0]  # bytes reported so far: progress never goes back (huggingface_hub has several byte bars)
    for planned in plan.items:
        def forward(label: str, done: int, _total: int, _base=base, _cap=planned.job_bytes) -> None:
            if on_progress is not None and label != "done":
                high[0] = max(high[0], _base + min(done, _cap))
                on_progress(label, high[0], total)

        if planned.item.kind is ItemKind.CHECKPOINT_REPO:
            name = planned.item.repo_id

            def forward_repo(_label: str, done: int, tot: int, _f=forward, _name=name) -> None:
                _f(f"downloading {_name}", done, tot)

            download_repo(planned.item.repo_id, cache_dir=plan.hf_cache, on_progress=forward_repo,
                          should_stop=should_stop, command=plan.command)
        elif not planned.complete:
            download_items(planned.files, on_progress=forward, should_stop=should_stop,
                           command=plan.command or download_command(
                               planned.item.repo_id, planned.item.files[0] if len(planned.item.files) == 1 else None))
        base += planned.job_bytes
        out.append(planned.destination)
    if on_progress is not None:
        on_progress("done", total, total)
    return out


def make_plan(folders: Folders, hf_cache: Path | None = None, *, pack: str | None = None, repo_id: str | None = None,
              filename: str | None = None, url: str | None = None, lang: str = "en") -> DownloadPlan:
    """The plan for one way of saying what to download: a pack id, a repo id (and a file), or a Hub URL."""
    if pack:
        return plan_pack(pack, folders, hf_cache, lang)
    if url:
        return plan_url(url, folders, hf_cache)
    if repo_id and filename:
        return plan_file(repo_id, filename, folders, hf_cache)
    if repo_id:
        return plan_repo(repo_id, folders, hf_cache)
    raise InvalidRequest("pack", Message("download.what"))
