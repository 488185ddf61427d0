"""``build-edge``: an edge package (LoRAs merged, pruned, ONNX, INT8, TAESD) in models/edge."""
from __future__ import annotations

import sys
import time

from modules.cli.base import Command
from modules.cli.lora import parse_lora_arg
from modules.cli.progress import StageLine
from modules.cli.settings import add_folder_flags, add_lora_dir_flag, settings_from_args


def configure(p) -> None:
    from modules.edge.export import ATTENTION_KINDS
    from modules.edge.options import METHODS, QUANTIZE

    p.add_argument("--model", required=True, help="SD1.5 model: name, title, hash or path")
    p.add_argument("--lora", dest="loras", action="append", default=[], type=parse_lora_arg,
                   metavar="NAME[:W|:UNET_W:TE_W]", help="LoRA merged into the package (repeatable)")
    p.add_argument("--prune", type=float, default=0.0, help="share of inner U-Net channels removed (0 = none)")
    p.add_argument("--distill-steps", type=int, default=0, help="data-free distillation steps after pruning")
    p.add_argument("--distill-lr", type=float, default=1e-5)
    p.add_argument("--quantize", choices=list(QUANTIZE), default="int8")
    p.add_argument("--method", choices=list(METHODS), default="auto",
                   help="U-Net INT8 method (auto = static QDQ, the fastest measured)")
    p.add_argument("--full-vae", action="store_true", help="also export the full VAE decoder")
    p.add_argument("--attention", choices=list(ATTENTION_KINDS), default="fused",
                   help="fused: ONNX Runtime's MultiHeadAttention (fastest, least memory); "
                        "standard: plain ONNX ops any runtime reads (e.g. OpenVINO)")
    p.add_argument("--no-taesd", action="store_true", help="no TAESD decoder (needs --full-vae)")
    p.add_argument("--calib-prompts", type=int, default=4)
    p.add_argument("--calib-steps", type=int, default=3)
    p.add_argument("--calib-size", type=int, help="image side while recording calibration inputs")
    p.add_argument("--out", help="package name under models/edge (default: from the model and options)")
    p.add_argument("--overwrite", action="store_true")
    add_folder_flags(p)
    add_lora_dir_flag(p)


def options_from_args(args):
    from modules.edge.options import EdgeBuildOptions

    return EdgeBuildOptions(loras=list(args.loras), prune=args.prune, distill_steps=args.distill_steps,
                            distill_lr=args.distill_lr, quantize=args.quantize, method=args.method,
                            full_vae=args.full_vae, attention=args.attention, taesd=not args.no_taesd,
                            calib_prompts=args.calib_prompts, calib_steps=args.calib_steps,
                            calib_size=args.calib_size, overwrite=args.overwrite)


def run(args) -> int:
    """Progress on stderr, the package folder on stdout."""
    from modules.edge.build import build_edge_for
    from modules.registry import HashCache, ModelRegistry

    settings = settings_from_args(args)
    folders = settings.folders
    hash_cache = HashCache(folders.cache / "hashes.json")
    entry = ModelRegistry(folders, hash_cache).get(args.model)
    start = time.perf_counter()
    line = StageLine("build-edge")
    try:
        path = build_edge_for(entry, folders, args.out, options_from_args(args), hash_cache=hash_cache,
                              lora_dirs=settings.lora_dirs, on_progress=line)
    finally:
        line.close()
    print(f"built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(path)
    return 0


COMMANDS = (Command("build-edge", "build an edge package (LoRAs merged, pruned, ONNX, INT8, TAESD) in models/edge",
                    run, configure),)
