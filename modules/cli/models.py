"""``models``, ``download`` and ``fetch-tokenizer``: what the registry finds, and getting models onto disk."""
from __future__ import annotations

import json
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
    p.add_argument("repo_id", nargs="?", help="Hugging Face repo id, e.g. Tongyi-MAI/Z-Image-Turbo")
    p.add_argument("--list", action="store_true", help="show suggested models")


def run_download(args) -> int:
    from modules.downloads import SUGGESTED, download_repo

    if args.list or not args.repo_id:
        for s in SUGGESTED:
            print(f"{s.repo_id}\t{s.family.value}\t{s.note}")
        return 0
    from tqdm.auto import tqdm

    bar = tqdm(unit="B", unit_scale=True, desc=args.repo_id)

    def on_progress(_label: str, done: int, total: int) -> None:
        bar.total = total or bar.total
        bar.n = done
        bar.refresh()

    try:
        path = download_repo(args.repo_id, on_progress=on_progress)
    finally:
        bar.close()
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
    Command("download", "download a diffusers model repo into the Hugging Face cache", run_download,
            configure_download),
    Command("fetch-tokenizer", "put the CLIP tokenizer that single-file SD checkpoints need into models/tokenizers",
            run_fetch_tokenizer, configure_fetch_tokenizer),
)
