"""Benchmark: the CPU edge path against plain diffusers and OpenVINO, one run, same seed, same weights.

Full-size SD1.5-architecture random weights (one fp16 single-file checkpoint, as most shared SD1.5 files
are), 512x512, 4 Euler steps, no CFG (few-step LCM/Turbo-style use), batch 1. Variants:

  a      diffusers, torch fp32, full VAE decode (what a CPU user gets by default)
  b      edge package, ONNX Runtime fp32, TAESD (U-Net attention fused into ORT's MultiHeadAttention)
  b-std  the same with the U-Net exported in standard ONNX ops only (the graph variant (e) runs)
  c      edge package, ONNX Runtime INT8 (U-Net static QDQ), TAESD
  c-dyn  the same with the U-Net dynamic INT8 (MatMul only): the quantization-method comparison
  d30    U-Net pruned 0.3 + INT8 (static) + TAESD
  d50    U-Net pruned 0.5 + INT8 (static) + TAESD
  e      OpenVINO fp32 on package b-std's ONNX graphs (static shapes, INFERENCE_PRECISION_HINT f32)

Packages are built with the real ``build_edge`` code. Every variant is measured in its own process
(honest peak RSS): one warm-up image, then ``--runs`` timed images. PSNR is against (a)'s image;
with random weights it is only a bug detector (an identical pipeline gives > 40 dB, a broken one < 10 dB).

    python -m bench.edge [--workdir DIR] [--runs 3] [--variants a,b,c,...] [--no-wait] [--build-only]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_TOKENIZER = REPO.parent / "shared" / "assets" / "clip-tokenizer"
MODEL_NAME = "random-sd15"
PROMPT = "portrait photo of a woman, soft window light, film grain"
SEED = 1234
VARIANTS = {
    "a": {"label": "(a) diffusers torch fp32 + full VAE", "kind": "torch"},
    "b": {"label": "(b) ORT fp32 + TAESD", "kind": "ort", "package": "bench-fp32",
          "build": {"quantize": "none"}},
    "b-std": {"label": "(b') ORT fp32, standard-op attention + TAESD", "kind": "ort", "package": "bench-fp32-std",
              "build": {"quantize": "none", "attention": "standard"}},
    "c": {"label": "(c) ORT INT8 (static QDQ) + TAESD", "kind": "ort", "package": "bench-int8",
          "build": {"quantize": "int8", "method": "static"}},
    "c-dyn": {"label": "(c') ORT INT8 (dynamic, MatMul only) + TAESD", "kind": "ort", "package": "bench-int8-dyn",
              "build": {"quantize": "int8", "method": "dynamic"}},
    "d30": {"label": "(d) pruned 0.3 + ORT INT8 + TAESD", "kind": "ort", "package": "bench-p30-int8",
            "build": {"quantize": "int8", "method": "static", "prune": 0.3}},
    "d50": {"label": "(d) pruned 0.5 + ORT INT8 + TAESD", "kind": "ort", "package": "bench-p50-int8",
            "build": {"quantize": "int8", "method": "static", "prune": 0.5}},
    "e": {"label": "(e) OpenVINO fp32 (graphs of b') + TAESD", "kind": "openvino", "package": "bench-fp32-std"},
}
DEFAULT_VARIANTS = "a,b,b-std,c,c-dyn,d30,d50,e"


def package_matches(package: Path, build: dict) -> bool:
    """Whether an existing package was built with ``build``'s options (else the benchmark rebuilds it)."""
    try:
        data = json.loads((package / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    quant = data.get("quantization", {})
    return (quant.get("mode") == build.get("quantize", "int8")
            and (quant.get("unet_method") or None) == (build.get("method", "static") if build.get("quantize") != "none" else None)
            and float(data.get("prune", {}).get("ratio", 0)) == float(build.get("prune", 0.0))
            and data["components"]["unet"].get("attention") == build.get("attention", "fused"))


# ---------------------------------------------------------------------------------------------
# set-up (parent process)
# ---------------------------------------------------------------------------------------------

def folders_for(work: Path):
    from modules.paths import Folders

    return Folders(models=work / "models", outputs=work / "outputs", cache=work / "cache")


def prepare_model(work: Path) -> None:
    """The random checkpoint (fp16 single file), the CLIP tokenizer and a random TAESD, written once."""
    import torch

    from bench.common import random_pipeline
    from modules.families import Family
    from modules.checkpoints.single_file import save_single_file
    from modules.taesd import random_taesd
    from modules.tiny import install_tiny_clip_tokenizer

    folders = folders_for(work)
    folders.checkpoints.mkdir(parents=True, exist_ok=True)
    tok = folders.tokenizers / "clip-vit-large-patch14"
    if not tok.is_dir():
        if SHARED_TOKENIZER.is_dir():
            shutil.copytree(SHARED_TOKENIZER, tok)
        else:
            install_tiny_clip_tokenizer(folders)
    ckpt = folders.checkpoints / f"{MODEL_NAME}.safetensors"
    if not ckpt.exists():
        pipe = random_pipeline(Family.SD15, seed=0, tokenizer_dir=tok)
        pipe.to(torch.float16)
        save_single_file(pipe, Family.SD15, ckpt)
        del pipe
    tae_dir = folders.vae_approx / "taesd"
    if not (tae_dir / "config.json").is_file():
        random_taesd(Family.SD15, seed=0).save_pretrained(str(tae_dir))


def wait_quiet(max_wait_s: float, min_free_gb: float = 14.0, max_load: float = 1.5) -> dict:
    """Poll (every 60 s, up to ``max_wait_s``) until enough memory is free and the load is low."""
    import psutil

    start = time.monotonic()
    while True:
        free = psutil.virtual_memory().available / 2**30
        load = os.getloadavg()[0]
        waited = time.monotonic() - start
        if (free >= min_free_gb and load < max_load) or waited >= max_wait_s:
            return {"available_gib": round(free, 1), "load1": round(load, 2), "waited_s": round(waited),
                    "quiet": free >= min_free_gb and load < max_load}
        print(f"waiting for a quiet machine: {free:.1f} GiB available, load {load:.2f}", file=sys.stderr)
        time.sleep(60)


def _child(args: list[str], timeout: float) -> dict:
    """Run ``python -m bench.edge --worker ...`` and return the JSON it prints last."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "bench.edge", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        raise RuntimeError(f"worker {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# workers (child processes)
# ---------------------------------------------------------------------------------------------

def worker_build(work: Path, variant: str) -> dict:
    from modules.edge.build import EdgeBuildOptions, build_edge_for
    from modules.registry import HashCache, ModelRegistry

    spec = VARIANTS[variant]
    folders = folders_for(work)
    cache = HashCache(folders.cache / "hashes.json")
    entry = ModelRegistry(folders, cache, hf_cache=work / "no-hf-cache").get(MODEL_NAME)
    options = EdgeBuildOptions(overwrite=True, **spec["build"])
    start = time.perf_counter()
    path = build_edge_for(entry, folders, spec["package"], options, hf_cache=work / "no-hf-cache", hash_cache=cache)
    manifest = json.loads((path / "manifest.json").read_text())
    return {"variant": variant, "seconds": time.perf_counter() - start, "steps": manifest["build"]["steps"],
            "bytes": manifest["total_bytes"], "prune": manifest["prune"], "peak_rss": _peak_rss()}


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Timer:
    """Wraps a callable and records how long each call takes."""

    def __init__(self, fn):
        self.fn = fn
        self.times: list[float] = []

    def __call__(self, *a, **k):
        t = time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.times.append(time.perf_counter() - t)


def worker_run(work: Path, variant: str, runs: int, steps: int, size: int, threads: int) -> dict:
    import numpy as np
    import torch

    spec = VARIANTS[variant]
    folders = folders_for(work)
    if threads:
        torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    if spec["kind"] == "torch":
        gen_fn, unet_timer, bytes_on_disk = _torch_variant(work, folders)
    else:
        gen_fn, unet_timer, bytes_on_disk = _edge_variant(folders, spec, threads)
    load_s = time.perf_counter() - t0

    totals, encodes, decodes, steps_s = [], [], [], []
    (work / "images").mkdir(exist_ok=True)
    image = None
    for i in range(runs + 1):  # the first image warms up (OpenVINO compiles for the shape here)
        unet_timer.times.clear()
        r = gen_fn(steps, size)
        if i == 0:
            image = r["image"]
            np.save(work / "images" / f"{variant}.npy", r["latents"].float().numpy())
            continue
        totals.append(r["total"])
        encodes.append(r["encode"])
        decodes.append(r["decode"])
        steps_s.append(statistics.median(unet_timer.times))
    extra = {}
    if spec["kind"] == "torch":  # the cost of one live preview on this path: TAESD (torch) on 512x512 latents
        from modules.families import Family
        from modules.taesd import TaeDecoder, load_taesd

        tae = TaeDecoder(load_taesd(Family.SD15, folders))
        latents = torch.randn(1, 4, size // 8, size // 8)
        tae.decode(latents)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            tae.decode(latents)
            times.append(time.perf_counter() - t)
        extra["preview_decode_s"] = statistics.median(times)
    out_png = work / "images" / f"{variant}.png"
    out_png.parent.mkdir(exist_ok=True)
    image.save(out_png)
    return {"variant": variant, "label": spec["label"], "load_s": load_s,
            "s_per_image": statistics.median(totals), "s_per_image_all": totals,
            "s_per_unet_step": statistics.median(steps_s), "encode_s": statistics.median(encodes),
            "decode_s": statistics.median(decodes), "peak_rss": _peak_rss(), "bytes": bytes_on_disk,
            "image": str(out_png), "threads": torch.get_num_threads(),
            "pixels_mean": float(np.asarray(image, dtype=np.float32).mean()),
            "load1": [round(load_before, 2), round(os.getloadavg()[0], 2)], **extra}


def _torch_variant(work: Path, folders):
    import torch

    from modules.families import Family
    from modules.generation.encoding import encode_prompts
    from modules.generation.samplers import make_scheduler
    from modules.loader import load_pipeline
    from modules.registry import HashCache, ModelRegistry

    entry = ModelRegistry(folders, HashCache(folders.cache / "hashes.json"), hf_cache=work / "no-hf-cache").get(MODEL_NAME)
    pipe = load_pipeline(entry, folders=folders, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("Euler", pipe.scheduler.config)
    timer = _Timer(pipe.unet.forward)
    pipe.unet.forward = timer
    cpu = torch.device("cpu")

    def generate(steps: int, size: int) -> dict:
        start = time.perf_counter()
        with torch.no_grad():
            embeds = encode_prompts(pipe, Family.SD15, PROMPT, "", do_cfg=False, clip_skip=1, device=cpu)
            t_enc = time.perf_counter() - start
            latents = pipe(prompt_embeds=embeds["prompt_embeds"], height=size, width=size, num_inference_steps=steps,
                           guidance_scale=1.0, generator=[torch.Generator("cpu").manual_seed(SEED)],
                           output_type="latent").images
            t_dec = time.perf_counter()
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
            t_end = time.perf_counter()
        return {"image": image, "latents": latents, "total": t_end - start, "encode": t_enc, "decode": t_end - t_dec}

    return generate, timer, Path(entry.path).stat().st_size


def _edge_variant(folders, spec: dict, threads: int):
    import torch

    from modules.edge.manifest import package_files
    from modules.edge.runtime import EdgePipeline
    from modules.generation.samplers import make_scheduler

    package = folders.edge / spec["package"]
    engine = "openvino" if spec["kind"] == "openvino" else "onnxruntime"
    pipe = EdgePipeline(package, threads=threads, engine=engine)
    pipe.scheduler = make_scheduler("Euler", pipe.scheduler.config)
    timer = _Timer(pipe.unet.run)
    pipe.unet.run = timer
    decoder = pipe.decoder("taesd")

    def generate(steps: int, size: int) -> dict:
        start = time.perf_counter()
        embeds = pipe.encode_prompts(PROMPT, "", False, 1)
        t_enc = time.perf_counter() - start
        latents = pipe(prompt_embeds=embeds["prompt_embeds"], height=size, width=size, num_inference_steps=steps,
                       guidance_scale=1.0, generator=[torch.Generator("cpu").manual_seed(SEED)],
                       output_type="latent").images
        t_dec = time.perf_counter()
        image = decoder.decode(latents)[0]
        t_end = time.perf_counter()
        return {"image": image, "latents": latents, "total": t_end - start, "encode": t_enc, "decode": t_end - t_dec}

    return generate, timer, sum(package_files(package).values())


def worker_profile(work: Path, variant: str, size: int, threads: int) -> dict:
    """ORT's profiler on one U-Net step of a package: share of time per operator type."""
    import numpy as np
    import onnxruntime as ort

    package = folders_for(work).edge / VARIANTS[variant]["package"]
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"profile-{variant}")
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(package / "unet.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"sample": rng.standard_normal((1, 4, size // 8, size // 8)).astype(np.float32),
             "timestep": np.array([500.0], np.float32),
             "encoder_hidden_states": rng.standard_normal((1, 77, 768)).astype(np.float32)}
    for _ in range(2):
        sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("ts", 0) >= last_start and e["name"].endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e6
    total = sum(by_op.values()) or 1.0
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:10]
    return {"variant": variant, "kernel_s": total, "ops": [(k, round(v, 3), round(100 * v / total, 1)) for k, v in top]}


def worker_distill(work: Path, steps: int) -> dict:
    """Cost of the data-free distillation step on the full-size U-Net (pruned 0.5, latent 32x32)."""
    import copy

    import torch

    from modules.edge.calibration import encode_prompt, preset_prompts
    from modules.edge.prune import distill, prune_unet
    from modules.families import Family
    from modules.loader import load_pipeline
    from modules.registry import HashCache, ModelRegistry

    folders = folders_for(work)
    entry = ModelRegistry(folders, HashCache(folders.cache / "hashes.json"), hf_cache=work / "no-hf-cache").get(MODEL_NAME)
    pipe = load_pipeline(entry, folders=folders, torch_dtype=torch.float32)
    with torch.no_grad():
        embeds = [encode_prompt(pipe, Family.SD15, p, n) for p, n in preset_prompts(Family.SD15, 2)]
    teacher = copy.deepcopy(pipe.unet)
    prune_s = time.perf_counter()
    report = prune_unet(pipe.unet, 0.5)
    prune_s = time.perf_counter() - prune_s
    result = distill(pipe.unet, teacher, embeds, pipe.scheduler.alphas_cumprod, steps=steps, latent_size=32)
    return {"prune_s": prune_s, "params_before": report.params_before, "params_after": report.params_after,
            "distill_steps": steps, "distill_s": result.seconds, "s_per_step": result.seconds / max(1, steps),
            "peak_rss": _peak_rss()}


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

def psnr(path_a: str, path_b: str) -> float:
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(path_a).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(path_b).convert("RGB").resize((a.shape[1], a.shape[0])), dtype=np.float64)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def latent_psnr(work: Path, variant: str, ref: str = "a") -> float | None:
    """PSNR of ``variant``'s final latents decoded with the same (torch TAESD) decoder as (a)'s latents:
    isolates the denoising path from the decoder choice."""
    import numpy as np
    import torch

    from modules.families import Family
    from modules.taesd import decode_latents, load_taesd

    a, b = work / "images" / f"{ref}.npy", work / "images" / f"{variant}.npy"
    if not (a.is_file() and b.is_file()):
        return None
    tae = load_taesd(Family.SD15, folders_for(work))
    x = decode_latents(tae, torch.from_numpy(np.load(a))).numpy() * 255
    y = decode_latents(tae, torch.from_numpy(np.load(b))).numpy() * 255
    x, y = x.round(), y.round()
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def table(results: list[dict]) -> str:
    ref = next((r for r in results if r["variant"] == "a"), None)
    lines = ["| variant | s/image | s/U-Net step | encode s | decode s | peak RSS | on disk | PSNR vs (a) | "
             "PSNR vs (a), same decoder | speed-up vs (a) | load1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        speed = f"{ref['s_per_image'] / r['s_per_image']:.1f}x" if ref else "-"
        def db(p):
            return "-" if p is None else ("inf" if math.isinf(p) else f"{p:.1f} dB")

        lines.append(f"| {r['label']} | {r['s_per_image']:.2f} | {r['s_per_unet_step']:.2f} | {r['encode_s']:.2f} | "
                     f"{r['decode_s']:.2f} | {r['peak_rss'] / 2**30:.2f} GiB | {r['bytes'] / 2**30:.2f} GiB | "
                     f"{db(r.get('psnr'))} | {db(r.get('psnr_latents'))} | {speed} | {r.get('load1')} |")
    return "\n".join(lines)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", type=Path, help="where models, packages and images go (default: a temp dir)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--runs", type=int, default=3, help="timed images per variant (median reported)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=0, help="torch / ORT / OpenVINO threads (0 = library default)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    p.add_argument("--max-wait", type=float, default=1200, help="seconds to wait for a quiet machine")
    p.add_argument("--profile", default="c", help="variant whose U-Net step is profiled ('' = none)")
    p.add_argument("--distill-steps", type=int, default=0, help="also measure N full-size distillation steps")
    p.add_argument("--build-only", action="store_true", help="build the packages, measure nothing")
    p.add_argument("--rebuild", action="store_true", help="rebuild packages even when they exist")
    p.add_argument("--keep", action="store_true", help="keep the work folder (default when --workdir is given)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)


def run_from_args(args) -> int:
    if args.worker:
        return _worker_main(args)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="visage-bench-edge-"))).resolve()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variant(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        print(f"work folder: {work}", file=sys.stderr)
        prepare_model(work)
        builds = {}
        for v in variants:
            pkg = VARIANTS[v].get("package")
            spec_v = next((k for k, s in VARIANTS.items() if s.get("package") == pkg and "build" in s), None)
            if pkg and spec_v and spec_v not in builds:
                if args.rebuild or not package_matches(folders_for(work).edge / pkg, VARIANTS[spec_v]["build"]):
                    print(f"building {pkg} ...", file=sys.stderr)
                    builds[spec_v] = _child(["--worker", "build", "--variant", spec_v, "--workdir", str(work)], 3600)
                    print(f"  {builds[spec_v]['seconds']:.0f} s", file=sys.stderr)
                else:
                    builds[spec_v] = {"variant": spec_v, "reused": True}
        if args.build_only:
            return 0
        conditions = {"before": wait_quiet(0 if args.no_wait else args.max_wait)}
        results = []
        for i, v in enumerate(variants):
            quiet = conditions["before"] if i == 0 else wait_quiet(0 if args.no_wait else args.max_wait)
            print(f"measuring {v} ...", file=sys.stderr)
            r = _child(["--worker", "run", "--variant", v, "--workdir", str(work), "--runs", str(args.runs),
                        "--steps", str(args.steps), "--size", str(args.size), "--threads", str(args.threads)], 3600)
            r["conditions"] = quiet
            results.append(r)
            print(f"  {r['s_per_image']:.2f} s/image (load {r.get('load1')})", file=sys.stderr)
        conditions["after"] = wait_quiet(0)
        ref = next((r for r in results if r["variant"] == "a"), None)
        for r in results:
            r["psnr"] = psnr(ref["image"], r["image"]) if ref else None
            r["psnr_latents"] = latent_psnr(work, r["variant"]) if ref else None
        extra = {}
        if args.profile and args.profile in variants and VARIANTS[args.profile]["kind"] == "ort":
            extra["profile"] = _child(["--worker", "profile", "--variant", args.profile, "--workdir", str(work),
                                       "--size", str(args.size), "--threads", str(args.threads)], 1800)
        if args.distill_steps:
            extra["distill"] = _child(["--worker", "distill", "--workdir", str(work), "--steps",
                                       str(args.distill_steps)], 3600)
        from bench.common import machine_line

        report = {"machine": machine_line(), "conditions": conditions, "builds": builds, "results": results,
                  **extra, "settings": {"steps": args.steps, "size": args.size, "runs": args.runs,
                                        "threads": args.threads, "seed": SEED, "cfg": "off", "sampler": "Euler"}}
        (work / "results.json").write_text(json.dumps(report, indent=1, default=str))
        print(f"machine: {report['machine']}")
        print(f"conditions: {json.dumps(conditions)}")
        print(table(results))
        if "profile" in extra:
            print(f"profile ({extra['profile']['variant']}, one U-Net step, kernel time {extra['profile']['kernel_s']:.2f} s): "
                  + ", ".join(f"{op} {pct}%" for op, _s, pct in extra["profile"]["ops"]))
        if "distill" in extra:
            print(f"distillation: {json.dumps(extra['distill'])}")
        print(f"results: {work / 'results.json'}")
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _worker_main(args) -> int:
    work = args.workdir
    if args.worker == "build":
        out = worker_build(work, args.variant)
    elif args.worker == "run":
        out = worker_run(work, args.variant, args.runs, args.steps, args.size, args.threads)
    elif args.worker == "profile":
        out = worker_profile(work, args.variant, args.size, args.threads)
    elif args.worker == "distill":
        out = worker_distill(work, args.distill_steps or args.steps)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    print(json.dumps(out, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
