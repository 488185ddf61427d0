"""Command line: ``python -m modules.cli <command> ...``. Typed errors become one-line messages here."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from modules.errors import VisageError
from modules.settings import REPO_ROOT, Settings, add_extension_flags

COMMANDS = {}


def command(name: str, help: str, configure=None):
    """Register ``fn(args) -> exit code`` as a subcommand; ``configure(parser)`` adds its flags."""
    def register(fn):
        COMMANDS[name] = (fn, help, configure)
        return fn
    return register


def _settings(args) -> Settings:
    def path(name: str, default: Path) -> Path:
        return Path(getattr(args, name, None) or default).expanduser().resolve()

    return Settings(models_dir=path("models_dir", REPO_ROOT / "models"),
                    outputs_dir=path("outputs_dir", REPO_ROOT / "outputs"),
                    cache_dir=path("cache_dir", REPO_ROOT / "cache"),
                    presets_dir=path("presets_dir", REPO_ROOT / "presets" / "user"),
                    styles_file=path("styles_file", REPO_ROOT / "styles.csv"),
                    device=getattr(args, "device", "auto"), dtype=getattr(args, "dtype", "auto"),
                    embed_cache_persist=getattr(args, "embed_cache_persist", True), ckpt_cache=0)


def _add_folder_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", help="models folder (default ./models; an A1111 'models' folder works)")
    p.add_argument("--cache-dir", help="hash/embedding cache folder (default ./cache)")


def _wait_with_progress(job, label: str):
    """Print a one-line progress bar on stderr while a job runs."""
    last = ""
    while not job.finished:
        p = job.progress
        line = f"\r{label}: {p.phase} {p.step}/{p.total}" if p.total else f"\r{label}: {p.phase}"
        if line != last:
            print(line.ljust(50), end="", file=sys.stderr, flush=True)
            last = line
        time.sleep(0.1)
    print(file=sys.stderr)
    return job.wait()


# -- commands ----------------------------------------------------------------------------------
def _make_tiny_parser(p):
    p.add_argument("--family", required=True, choices=["sd15", "sdxl", "zimage"])
    p.add_argument("--format", dest="fmt", default="diffusers", choices=["diffusers", "single-file"])
    p.add_argument("--out", required=True, type=Path, help="folder (diffusers) or .safetensors file")
    p.add_argument("--seed", type=int, default=0)


@command("make-tiny-model", "write a tiny seeded random model in a real on-disk format", _make_tiny_parser)
def cmd_make_tiny_model(args) -> int:
    from modules.tiny import make_tiny_model
    path = make_tiny_model(args.family, args.fmt, args.out, seed=args.seed)
    print(path)
    return 0


def _models_parser(p):
    _add_folder_flags(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-hash", action="store_true", help="skip hashing (faster on big folders)")


@command("models", "list what the registry finds: name, family, format, hash, or why unsupported", _models_parser)
def cmd_models(args) -> int:
    from modules.registry import HashCache, ModelRegistry
    settings = _settings(args)
    folders = settings.folders
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


def _generate_parser(p):
    _add_folder_flags(p)
    p.add_argument("--model", required=True, help="model name, title, hash or path")
    p.add_argument("--preset", help="preset id (python -m modules.cli presets); --prompt goes into its {prompt}")
    p.add_argument("--style", dest="styles", action="append", default=[],
                   help="apply a styles.csv style (repeatable)")
    p.add_argument("--styles-file", type=Path, help="A1111 styles.csv (default ./styles.csv)")
    p.add_argument("--prompt", default="")
    p.add_argument("--negative", default="")
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", type=float)
    p.add_argument("--seed", type=int, help="-1 = random (default; a preset's fixed seed when it has one)")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--sampler")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--batch-count", type=int, default=1)
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--no-embed-cache-persist", dest="embed_cache_persist", action="store_false")
    p.add_argument("--out", type=Path, help="outputs folder (default ./outputs)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--backend", default="auto", choices=["auto", "diffusers", "onnx"],
                   help="auto: edge packages (models/edge) in ONNX Runtime, other models in diffusers")
    p.add_argument("--onnx-threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    p.add_argument("--decoder", default="vae", choices=["vae", "taesd"], help="final decode: full VAE or TAESD")
    p.add_argument("--postprocess", action="append", default=[], metavar="ID",
                   help="run an extension post-processor on each image (repeatable; `extensions` lists them)")


@command("generate", "txt2img from the command line; prints the paths of the PNGs written", _generate_parser)
def cmd_generate(args) -> int:
    from modules.engine import Engine
    from modules.generation.params import GenerationRequest
    args.outputs_dir = args.out
    engine = Engine(dataclasses.replace(_settings(args), onnx_threads=max(0, args.onnx_threads)),
                    getattr(args, "extensions", None))
    engine.start(load_initial=False)
    try:
        engine.switch_model(args.model)
        seed = args.seed
        if seed is None:
            seed = engine.preset(args.preset).seed if args.preset else -1
        request = GenerationRequest(
            prompt=args.prompt, negative_prompt=args.negative, steps=args.steps, cfg_scale=args.cfg,
            seed=seed, width=args.width, height=args.height, sampler=args.sampler,
            batch_size=args.batch_size, batch_count=args.batch_count, clip_skip=args.clip_skip,
            preset=args.preset, styles=args.styles, backend=args.backend, decoder=args.decoder,
            postprocess=list(args.postprocess))
        result = _wait_with_progress(engine.generate(request), "generate")
    finally:
        engine.close()
    for path in result.paths:
        print(path)
    return 0


def _presets_parser(p):
    p.add_argument("--json", action="store_true")
    p.add_argument("--lang", choices=["zh", "en"], default="en")
    p.add_argument("--presets-dir", help="user presets folder (default presets/user)")


@command("presets", "list the one-click presets (and any preset file with errors)", _presets_parser)
def cmd_presets(args) -> int:
    from modules.presets import PresetStore
    user_dir = _settings(args).presets_dir
    store = PresetStore([REPO_ROOT / "presets", user_dir], save_dir=user_dir)
    if args.json:
        print(json.dumps({"presets": [p.to_dict() for p in store.list()],
                          "errors": [{"file": e.file, "field": e.field, "problem": e.problem}
                                     for e in store.errors]}, ensure_ascii=False, indent=2))
        return 0
    for p in store.list():
        families = ",".join(f.value for f in p.families)
        print(f"{p.id}	{p.name.get(args.lang)}	{families}")
    for e in store.errors:
        print(f"error: {e}", file=sys.stderr)
    return 0


def _styles_parser(p):
    p.add_argument("--styles-file", help="the styles.csv Visage uses (default ./styles.csv)")
    p.add_argument("--import", dest="import_from", type=Path,
                   help="add the styles of another A1111 styles.csv (same names are replaced)")
    p.add_argument("--export", dest="export_to", type=Path, help="write the styles to an A1111 styles.csv")


@command("styles", "list, import or export A1111 styles.csv styles", _styles_parser)
def cmd_styles(args) -> int:
    from modules.styles import load_styles, save_styles
    path = _settings(args).styles_file
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


def _cache_stats_parser(p):
    p.add_argument("--cache-dir", help="cache folder (default ./cache)")
    p.add_argument("--json", action="store_true")


@command("cache-stats", "prompt-embedding cache on disk: entries and bytes (live hit rates: System tab / API)",
         _cache_stats_parser)
def cmd_cache_stats(args) -> int:
    from modules.embedding_cache import EmbeddingCache
    cache = EmbeddingCache(max_bytes=0, persist_dir=_settings(args).folders.cache / "embeddings")
    stats = cache.stats()
    if args.json:
        print(json.dumps(dataclasses.asdict(stats) | {"hit_rate": stats.hit_rate}, indent=2))
    else:
        print(f"disk entries: {stats.disk_entries}\ndisk bytes: {stats.disk_bytes}")
    return 0


def _loras_parser(p):
    _add_folder_flags(p)
    p.add_argument("--lora-dir", dest="lora_dirs", action="append", default=[], help="extra LoRA folder")
    p.add_argument("--json", action="store_true")


@command("loras", "list LoRA files: format, family, rank, and why unsupported", _loras_parser)
def cmd_loras(args) -> int:
    from modules.lora import lora_folders, scan_loras
    infos = scan_loras(lora_folders(_settings(args).folders, args.lora_dirs))
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


def _download_parser(p):
    p.add_argument("repo_id", nargs="?", help="Hugging Face repo id, e.g. Tongyi-MAI/Z-Image-Turbo")
    p.add_argument("--list", action="store_true", help="show suggested models")


@command("download", "download a diffusers model repo into the Hugging Face cache", _download_parser)
def cmd_download(args) -> int:
    from modules.downloads import SUGGESTED, download_repo
    if args.list or not args.repo_id:
        for s in SUGGESTED:
            print(f"{s.repo_id}\t{s.family.value}\t{s.note}")
        return 0
    from tqdm.auto import tqdm
    bar = tqdm(unit="B", unit_scale=True, desc=args.repo_id)

    def on_progress(done, total):
        bar.total = total or bar.total
        bar.n = done
        bar.refresh()

    path = download_repo(args.repo_id, on_progress=on_progress)
    bar.close()
    print(path)
    return 0


def _fetch_tokenizer_parser(p):
    _add_folder_flags(p)
    p.add_argument("--from", dest="source", type=Path,
                   help="an open_clip_torch / clip-anytorch wheel, or a folder with vocab.json+merges.txt")


@command("fetch-tokenizer", "put the CLIP tokenizer that single-file SD checkpoints need into models/tokenizers", _fetch_tokenizer_parser)
def cmd_fetch_tokenizer(args) -> int:
    from modules.loader.tokenizers import install_clip_tokenizer
    print(install_clip_tokenizer(_settings(args).folders, args.source))
    return 0


def _merge_lora_parser(p):
    from modules.lora.merge import configure_merge_parser
    configure_merge_parser(p)


@command("merge-lora", "fuse LoRAs into a base model and save it as a new model (atomic)", _merge_lora_parser)
def cmd_merge_lora(args) -> int:
    from modules.lora.merge import cmd_merge_lora as run
    return run(args)


def _build_edge_parser(p):
    from modules.edge.build import configure_parser
    configure_parser(p)


@command("build-edge", "build an edge package (LoRAs merged, pruned, ONNX, INT8, TAESD) in models/edge",
         _build_edge_parser)
def cmd_build_edge(args) -> int:
    from modules.edge.build import cmd_build_edge as run
    return run(args)


def _bench_parser(p):
    from bench.edge import configure_parser
    p.add_argument("which", choices=["edge"], help="benchmark to run")
    configure_parser(p)


@command("bench", "run a benchmark (edge: the CPU edge path against diffusers and OpenVINO)", _bench_parser)
def cmd_bench(args) -> int:
    from bench.edge import run_from_args
    return run_from_args(args)




def _extensions_parser(p):
    p.add_argument("--json", action="store_true")


@command("extensions", "list the extensions: loaded, failed (with the error) or disabled, and what they provide",
         _extensions_parser)
def cmd_extensions(args) -> int:
    items = args.extensions.summary() if getattr(args, "extensions", None) is not None else []
    if args.json:
        print(json.dumps(items, ensure_ascii=False, indent=2))
        return 0
    for item in items:
        state = {"failed": f"failed: {item['error']}",
                 "disabled": f"disabled ({item['disabled_by']})"}.get(item["state"], item["state"])
        print(f"{item['name']}\t{item['version'] or '-'}\t{','.join(item['provides']) or '-'}\t{state}")
    return 0


def load_cli_extensions(argv: list[str] | None):
    """The extensions for this command line (its --extensions-dir / --disable-extension flags, given before
    the command). Cheap and torch-free: extensions do no heavy work when they register."""
    from modules.extensions import load_from_settings

    pre = argparse.ArgumentParser(add_help=False)
    add_extension_flags(pre)
    known, _rest = pre.parse_known_args(argv)
    settings = Settings(extensions_dir=known.extensions_dir.expanduser().resolve(),
                        disabled_extensions=tuple(known.disabled_extensions),
                        disable_all_extensions=known.disable_all_extensions,
                        extensions_config=known.extensions_config.expanduser().resolve())
    return load_from_settings(settings)


def _run_extension_command(cmd, args) -> int:
    try:
        code = cmd.run(args)
    except VisageError:
        raise
    except Exception as exc:  # noqa: BLE001 - an extension's failure is one line, not a traceback
        logging.getLogger(__name__).debug("extension command failed", exc_info=True)
        print(f"error: {cmd.name} (extension {cmd.extension}) failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return int(code or 0)


def build_parser(extensions=None) -> argparse.ArgumentParser:
    """Visage's commands, then the extensions' (``extensions``: an ExtensionSet; a name Visage uses is skipped)."""
    parser = argparse.ArgumentParser(prog="python -m modules.cli", description="Visage command line")
    add_extension_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_fn, help_text, configure) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if configure:
            configure(p)
    for cmd in (extensions.cli_commands if extensions is not None else ()):
        if cmd.name in COMMANDS:
            print(f"warning: extension {cmd.extension}: command {cmd.name!r} is Visage's own; skipped", file=sys.stderr)
            continue
        try:
            cmd.configure(argparse.ArgumentParser(prog=cmd.name))  # a dry run: a broken one is skipped
        except Exception as exc:  # noqa: BLE001
            print(f"warning: extension {cmd.extension}: command {cmd.name!r} skipped: configure raised "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        help_text = f"{cmd.help} [extension {cmd.extension}]"
        p = sub.add_parser(cmd.name, help=help_text, description=help_text)
        cmd.configure(p)
        p.set_defaults(extension_command=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    extensions = load_cli_extensions(argv)
    args = build_parser(extensions).parse_args(argv)
    args.extensions = extensions
    try:
        ext_cmd = getattr(args, "extension_command", None)
        if ext_cmd is not None:
            return _run_extension_command(ext_cmd, args)
        fn, _help, _configure = COMMANDS[args.command]
        return fn(args)
    except VisageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
