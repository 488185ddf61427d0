"""``models``, ``download`` and ``fetch-tokenizer``: what the registry finds, and getting models onto disk."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from modules.cli.base import Command
from modules.cli.settings import add_folder_flags, settings_from_args


def configure_models(p) -> None:
    add_folder_flags(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-hash", action="store_true", help="skip hashing (faster on big folders)")


def run_models(args) -> int:
    from modules.registry import HashCache, ModelRegistry

    folders = settings_from_args(args).folders
    registry = ModelRegistry(folders, HashCache(folders.cache / "hashes.json"))
    entries = registry.scan(compute_hashes=not args.no_hash)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], ensure_ascii=False, indent=2))
        return 0
    if not entries:
        print(f"no models found in {folders.checkpoints}")
    for e in entries:
        family = e.family.value if e.family else "-"
        status = "ok" if e.supported else f"unsupported: {e.reason}"
        print(f"{e.name}\t{family}\t{e.format}\t{e.hash or '-'}\t{status}")
    return 0


def configure_download(p) -> None:
    add_folder_flags(p)
    p.add_argument("repo_id", nargs="?",
                   help="a Hugging Face repo id (e.g. Tongyi-MAI/Z-Image-Turbo: the whole repo into the HF cache), "
                        "or a Hub file URL (https://huggingface.co/ORG/REPO/blob/main/FILE)")
    p.add_argument("filename", nargs="?", help="one file of the repo: a LoRA goes to models/Lora, a checkpoint to "
                                               "models/Stable-diffusion")
    p.add_argument("--pack", help="download a starter pack (see --list-packs)")
    p.add_argument("--list-packs", action="store_true", help="show the starter packs (with sizes when online)")
    p.add_argument("--list", action="store_true", help="show suggested models")
    p.add_argument("--plan", action="store_true", help="only show what would be downloaded, where, and its size")


class ByteBar:
    """``on_progress(label, done_bytes, total_bytes)`` as a byte progress bar on stderr (tqdm)."""

    def __init__(self, desc: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr)

    def __call__(self, label: str, done: int, total: int) -> None:
        if total and self.bar.total != total:
            self.bar.total = total
        if label and label != "done":
            self.bar.set_description_str(label, refresh=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _list_packs(folders, hf_cache) -> None:
    from modules.downloads.hub import offline
    from modules.downloads.packs import PACKS
    from modules.downloads.plan import plan_pack
    from modules.errors import DownloadError

    for pack in PACKS:
        size = ""
        if not offline():
            try:
                size = f"\t{plan_pack(pack, folders, hf_cache).to_dict()['total_text']}"
            except DownloadError as exc:
                size = f"\t(size unknown: {exc})"
        licence = "\tNON-COMMERCIAL" if pack.non_commercial else ""
        print(f"{pack.id}\t{pack.title_en}\t{pack.hardware_en}{size}{licence}")
        for item in pack.items:
            files = ", ".join(item.files) if item.files else "(whole repo)"
            print(f"    {item.kind.value}\t{item.repo_id}\t{files}\t{item.licence}")


def run_download(args) -> int:
    from modules.downloads import SUGGESTED, download_repo

    if args.list_packs or args.pack or args.filename or (args.repo_id and "://" in args.repo_id):
        return _run_plan(args)
    if args.list or not args.repo_id:
        for s in SUGGESTED:
            print(f"{s.repo_id}\t{s.family.value}\t{s.note}")
        return 0
    bar = ByteBar(args.repo_id)
    try:
        path = download_repo(args.repo_id, on_progress=bar)
    finally:
        bar.close()
    print(path)
    return 0


def _run_plan(args) -> int:
    from modules.downloads.plan import make_plan, run_plan

    settings = settings_from_args(args)
    if args.list_packs:
        _list_packs(settings.folders, settings.hf_cache)
        return 0
    url = args.repo_id if args.repo_id and "://" in args.repo_id else None
    plan = make_plan(settings.folders, settings.hf_cache, pack=args.pack, url=url,
                     repo_id=None if url else args.repo_id, filename=args.filename)
    print(plan.summary(), file=sys.stderr)
    if args.plan:
        return 0
    bar = ByteBar(plan.title)
    try:
        paths = run_plan(plan, on_progress=bar)
    finally:
        bar.close()
    for path in paths:
        print(path)
    return 0


def configure_fetch_tokenizer(p) -> None:
    add_folder_flags(p)
    p.add_argument("--from", dest="source", type=Path,
                   help="an open_clip_torch / clip-anytorch wheel, or a folder with vocab.json+merges.txt")


def run_fetch_tokenizer(args) -> int:
    from modules.loader.tokenizers import install_clip_tokenizer

    print(install_clip_tokenizer(settings_from_args(args).folders, args.source))
    return 0


COMMANDS = (
    Command("models", "list what the registry finds: name, family, format, hash, or why unsupported",
            run_models, configure_models),
    Command("download", "download a starter pack, a model repo (HF cache), or one file (LoRA / checkpoint)",
            run_download,
            configure_download),
    Command("fetch-tokenizer", "put the CLIP tokenizer that single-file SD checkpoints need into models/tokenizers",
            run_fetch_tokenizer, configure_fetch_tokenizer),
)
