"""``presets``, ``styles`` and ``cache-stats``: the prompt library (one-click presets, A1111 styles) and the
prompt-embedding cache on disk."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from modules.cli.base import Command
from modules.cli.settings import settings_from_args
from modules.settings import REPO_ROOT


def configure_presets(p) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--lang", choices=["zh", "en"], default="en")
    p.add_argument("--presets-dir", help="user presets folder (default presets/user)")


def run_presets(args) -> int:
    from modules.presets import PresetStore

    user_dir = settings_from_args(args).presets_dir
    store = PresetStore([REPO_ROOT / "presets", user_dir], save_dir=user_dir)
    if args.json:
        print(json.dumps({"presets": [p.to_dict() for p in store.list()],
                          "errors": [{"file": e.file, "field": e.field, "problem": e.problem}
                                     for e in store.errors]}, ensure_ascii=False, indent=2))
        return 0
    for p in store.list():
        families = ",".join(f.value for f in p.families)
        print(f"{p.id}\t{p.name.get(args.lang)}\t{families}")
    for e in store.errors:
        print(f"error: {e}", file=sys.stderr)
    return 0


def configure_styles(p) -> None:
    p.add_argument("--styles-file", help="the styles.csv Visage uses (default ./styles.csv)")
    p.add_argument("--import", dest="import_from", type=Path,
                   help="add the styles of another A1111 styles.csv (same names are replaced)")
    p.add_argument("--export", dest="export_to", type=Path, help="write the styles to an A1111 styles.csv")


def run_styles(args) -> int:
    from modules.styles import load_styles, save_styles

    path = settings_from_args(args).styles_file
    styles = load_styles(path)
    if args.import_from:
        styles = styles | load_styles(args.import_from)
        save_styles(path, styles)
        print(f"{len(styles)} styles in {path}")
    if args.export_to:
        print(save_styles(args.export_to, styles))
    if not (args.import_from or args.export_to):
        for style in styles.values():
            print(f"{style.name}\t{style.prompt}\t{style.negative_prompt}")
    return 0


def configure_cache_stats(p) -> None:
    p.add_argument("--cache-dir", help="cache folder (default ./cache)")
    p.add_argument("--json", action="store_true")


def run_cache_stats(args) -> int:
    from modules.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(max_bytes=0, persist_dir=settings_from_args(args).folders.cache / "embeddings")
    stats = cache.stats()
    if args.json:
        print(json.dumps(dataclasses.asdict(stats) | {"hit_rate": stats.hit_rate}, indent=2))
    else:
        print(f"disk entries: {stats.disk_entries}\ndisk bytes: {stats.disk_bytes}")
    return 0


COMMANDS = (
    Command("presets", "list the one-click presets (and any preset file with errors)", run_presets,
            configure_presets),
    Command("styles", "list, import or export A1111 styles.csv styles", run_styles, configure_styles),
    Command("cache-stats", "prompt-embedding cache on disk: entries and bytes (live hit rates: System tab / API)",
            run_cache_stats, configure_cache_stats),
)
