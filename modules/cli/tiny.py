"""``make-tiny-model``: a tiny seeded random model in a real on-disk format (tests, offline demo)."""
from __future__ import annotations

from pathlib import Path

from modules.cli.base import Command


def configure(p) -> None:
    p.add_argument("--family", required=True, choices=["sd15", "sdxl", "zimage"])
    p.add_argument("--format", dest="fmt", default="diffusers", choices=["diffusers", "single-file"])
    p.add_argument("--out", required=True, type=Path, help="folder (diffusers) or .safetensors file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inpainting", action="store_true",
                   help="sd15/sdxl: a dedicated inpainting model (9-channel U-Net)")


def run(args) -> int:
    from modules.tiny import make_tiny_model

    print(make_tiny_model(args.family, args.fmt, args.out, seed=args.seed, inpainting=args.inpainting))
    return 0


COMMANDS = (Command("make-tiny-model", "write a tiny seeded random model in a real on-disk format", run, configure),)
