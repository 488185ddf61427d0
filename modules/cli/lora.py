"""``loras`` and ``merge-lora``: the LoRA files found, and fusing LoRAs into a new model (atomic)."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from modules.cli.base import Command
from modules.cli.settings import add_folder_flags, add_lora_dir_flag, settings_from_args


def parse_lora_arg(text: str) -> tuple[str, float, float]:
    """``NAME``, ``NAME:W`` or ``NAME:UNET_W:TE_W`` -> (name, unet weight, text-encoder weight)."""
    parts = text.split(":")
    numbers: list[float] = []
    while len(parts) > 1 and len(numbers) < 2:
        try:
            numbers.insert(0, float(parts[-1]))
        except ValueError:
            break
        parts.pop()
    name = ":".join(parts).strip()
    if not name:
        raise argparse.ArgumentTypeError(f"--lora {text!r}: no LoRA name")
    if not numbers:
        return name, 1.0, 1.0
    return name, numbers[0], numbers[-1]


def configure_loras(p) -> None:
    add_folder_flags(p)
    add_lora_dir_flag(p)
    p.add_argument("--json", action="store_true")


def run_loras(args) -> int:
    from modules.lora import lora_folders, scan_loras

    settings = settings_from_args(args)
    infos = scan_loras(lora_folders(settings.folders, settings.lora_dirs))
    if args.json:
        print(json.dumps([{"name": i.name, "path": str(i.path), "format": i.format,
                           "family": i.family.value if i.family else None, "rank": i.rank,
                           "text_encoder": i.has_text_encoder, "supported": i.supported, "reason": i.reason}
                          for i in infos], ensure_ascii=False, indent=2))
        return 0
    for i in infos:
        status = "ok" if i.supported else f"unsupported: {i.reason}"
        print(f"{i.name}\t{i.format}\t{i.family.value if i.family else '-'}\trank {i.rank}\t{status}")
    return 0


def configure_merge(p) -> None:
    from modules.lora.merge import DTYPES, FORMATS
    from modules.registry.entry import ModelFormat

    p.add_argument("--base", required=True, help="base model: name, title, hash or path")
    p.add_argument("--lora", dest="loras", required=True, action="append", type=parse_lora_arg,
                   metavar="NAME[:W|:UNET_W:TE_W]", help="LoRA and weight (default 1); repeat for several")
    p.add_argument("--out", required=True, help="name of the new model in models/Stable-diffusion")
    p.add_argument("--format", dest="fmt", default=ModelFormat.SINGLE_FILE, choices=list(FORMATS))
    p.add_argument("--dtype", dest="out_dtype", default="fp16", choices=list(DTYPES))
    p.add_argument("--overwrite", action="store_true", help="replace an existing model of that name")
    add_folder_flags(p)
    add_lora_dir_flag(p)


def _quiet_library_bars() -> None:
    """diffusers/transformers draw their own bars (weights loading, shard writing): keep one bar on stderr."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def run_merge(args, *, before_swap: Callable[[Path], None] | None = None) -> int:
    """Merge, with a progress bar on stderr; prints the written path. ``before_swap(temp)`` runs with the
    merged model complete under its temp name (:func:`modules.lora.merge.merge_loras`)."""
    import torch
    from tqdm.auto import tqdm

    from modules.errors import InvalidRequest
    from modules.loader import load_pipeline
    from modules.lora.formats import check_compatible
    from modules.lora.merge import merge_loras, merge_output_path
    from modules.lora.scan import find_lora, lora_folders, scan_loras
    from modules.registry import HashCache, ModelRegistry

    settings = settings_from_args(args)
    folders = settings.folders
    out_path = merge_output_path(folders, args.out, args.fmt, overwrite=args.overwrite)
    hash_cache = HashCache(folders.cache / "hashes.json")
    entry = ModelRegistry(folders, hash_cache).get(args.base)
    if entry.family is None or not entry.supported:
        raise InvalidRequest("base", f"{entry.name}: {entry.reason or 'not a supported model'}")
    available = scan_loras(lora_folders(folders, settings.lora_dirs))
    loras = [(find_lora(available, name), u, t) for name, u, t in args.loras]
    for info, _, _ in loras:
        check_compatible(info, entry.family)

    bar = tqdm(total=1, file=sys.stderr, desc="merge", unit="step", bar_format="{desc}: {bar} {n_fmt}/{total_fmt}")

    def on_progress(label: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_description_str(label)
        bar.refresh()

    _quiet_library_bars()
    try:
        bar.set_description_str(f"loading {entry.name}")
        bar.refresh()
        load_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.out_dtype, torch.float32)
        pipe = load_pipeline(entry, folders=folders, torch_dtype=load_dtype)
        path = merge_loras(pipe, entry.family, loras, out_path=out_path, fmt=args.fmt, dtype=args.out_dtype,
                           base_entry=entry, on_progress=on_progress, overwrite=args.overwrite,
                           hash_cache=hash_cache, before_swap=before_swap)
    finally:
        bar.close()
    print(path)
    return 0


COMMANDS = (
    Command("loras", "list LoRA files: format, family, rank, and why unsupported", run_loras, configure_loras),
    Command("merge-lora", "fuse LoRAs into a base model and save it as a new model (atomic)", run_merge,
            configure_merge),
)
