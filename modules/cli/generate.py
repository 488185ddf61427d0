"""``generate``: txt2img through the engine (the same prepare/queue path as the page and the API)."""
from __future__ import annotations

from pathlib import Path

from modules.cli.base import Command
from modules.cli.progress import wait_with_progress
from modules.cli.settings import add_folder_flags, settings_from_args


def configure(p) -> None:
    add_folder_flags(p)
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
    p.add_argument("--out", dest="outputs_dir", type=Path, help="outputs folder (default ./outputs)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--backend", default="auto", choices=["auto", "diffusers", "onnx"],
                   help="auto: edge packages (models/edge) in ONNX Runtime, other models in diffusers")
    p.add_argument("--onnx-threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    p.add_argument("--decoder", default="vae", choices=["vae", "taesd"], help="final decode: full VAE or TAESD")
    p.add_argument("--postprocess", action="append", default=[], metavar="ID",
                   help="run an extension post-processor on each image (repeatable; `extensions` lists them)")


def run(args) -> int:
    from modules.engine import Engine
    from modules.generation.params import GenerationRequest

    engine = Engine(settings_from_args(args, ckpt_cache=0), getattr(args, "extensions", None))
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
        result = wait_with_progress(engine.generate(request), "generate")
    finally:
        engine.close()
    for path in result.paths:
        print(path)
    return 0


COMMANDS = (Command("generate", "txt2img from the command line; prints the paths of the PNGs written", run, configure),)
