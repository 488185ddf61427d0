"""``build-edge``: turn an SD1.5 model (plus LoRAs) into an edge package under ``models/edge/NAME/``.

Steps, in order (each reported through ``on_progress(label, done, total)``):

1. merge the LoRAs into the weights (the live LoRA patcher, then ``fuse_lora`` + ``unload_lora_weights``);
2. prune the U-Net's inner channels with torch-pruning (:mod:`modules.edge.prune`), then optionally
   distill it for a few data-free steps from the unpruned U-Net;
3. export text encoder, U-Net, TAESD decoder (and optionally the full VAE decoder) to ONNX;
4. quantize (``int8``): text encoder dynamic INT8 (MatMul + Gather); U-Net static QDQ INT8 calibrated on
   U-Net inputs recorded while sampling preset prompts (or dynamic MatMul-only INT8 with
   ``method="dynamic"``);
5. write ``manifest.json`` and move the finished folder into place (temp folder + rename: a reader sees
   the old package or the new one, never half of one).

Only SD1.5 is supported: an SDXL U-Net is 2.6 G parameters and Z-Image's DiT 6 G; neither fits an edge CPU.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modules import __version__
from modules.edge import manifest as mf
from modules.edge.export import ATTENTION_KINDS
from modules.edge.quantize import DEFAULT_UNET_METHOD
from modules.errors import Interrupted, InvalidRequest, UnsupportedModel, VisageError
from modules.families import Family, family_info
from modules.messages import Message
from modules.paths import Folders, safe_child
from modules.registry.entry import ModelEntry

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
QUANTIZE = ("none", "int8")
METHODS = ("auto", "static", "dynamic")  # auto: quantize.DEFAULT_UNET_METHOD (the fastest measured)
CALIB_PROMPT = "a person"  # the user part put into each preset's template for calibration/distillation
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(build|old)\.tmp$")


class EdgeBuildError(VisageError):
    """The package could not be built or written; nothing was left behind."""

    code = "edge_build_error"


@dataclass
class EdgeBuildOptions:
    loras: list[tuple[str, float, float]] = field(default_factory=list)  # (name, U-Net weight, TE weight)
    prune: float = 0.0  # share of inner U-Net channels removed; 0 skips pruning
    distill_steps: int = 0  # data-free distillation steps after pruning (0: none)
    distill_lr: float = 1e-5
    distill_latent: int = 32  # latent side used while distilling (32 -> 256 px)
    quantize: str = "int8"  # none | int8
    method: str = "auto"  # U-Net INT8 method: auto (= static) | static | dynamic
    full_vae: bool = False  # also export the full VAE decoder
    attention: str = "fused"  # fused: ONNX Runtime's MultiHeadAttention; standard: plain ONNX ops (OpenVINO)
    taesd: bool = True  # export the TAESD decoder (needs its weights)
    calib_prompts: int = 4  # preset prompts sampled to record calibration inputs
    calib_steps: int = 3  # sampling steps per calibration prompt (each records one U-Net input)
    calib_size: int | None = None  # image side while recording (default: half the family default: memory)
    overwrite: bool = False

    def check(self) -> None:
        if not 0.0 <= float(self.prune) <= 0.9:
            raise InvalidRequest("prune", Message("rule.between", low=0, high=0.9))
        if self.quantize not in QUANTIZE:
            raise InvalidRequest("quantize", Message("rule.choice", choices=", ".join(QUANTIZE)))
        if self.method not in METHODS:
            raise InvalidRequest("method", Message("rule.choice", choices=", ".join(METHODS)))
        if not 0 <= int(self.distill_steps) <= 100_000:
            raise InvalidRequest("distill_steps", Message("rule.between", low=0, high=100000))
        if self.distill_steps and not self.prune:
            raise InvalidRequest("distill_steps", "distillation recovers a pruned U-Net: give --prune too")
        if self.attention not in ATTENTION_KINDS:
            raise InvalidRequest("attention", Message("rule.choice", choices=", ".join(ATTENTION_KINDS)))
        if not (self.taesd or self.full_vae):
            raise InvalidRequest("decoder", "a package needs a decoder: TAESD, the full VAE, or both")
        if self.calib_prompts < 1 or self.calib_steps < 1:
            raise InvalidRequest("calibration", "needs at least one prompt and one step")

    @property
    def unet_method(self) -> str | None:
        if self.quantize == "none":
            return None
        return DEFAULT_UNET_METHOD if self.method == "auto" else self.method


def decoder_calibration(unet_samples: Sequence[dict], channels: int, count: int = 8) -> list[dict]:
    """Calibration inputs for the TAESD decoder: the recorded U-Net latents (unit-variance, like the final
    latents it decodes), or seeded standard-normal latents when none were recorded (dynamic INT8 U-Net)."""
    import numpy as np

    if unet_samples:
        return [{"latents": np.ascontiguousarray(s["sample"][:1])} for s in unet_samples[:count]]
    rng = np.random.default_rng(0)
    return [{"latents": rng.standard_normal((1, channels, 32, 32)).astype(np.float32)} for _ in range(count)]


def default_name(entry: ModelEntry, options: EdgeBuildOptions) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(entry.name).name).strip("-.") or "model"
    parts = [base]
    if options.loras:
        parts.append("lora")
    if options.prune:
        parts.append(f"p{int(round(options.prune * 100))}")
    parts.append(options.quantize if options.quantize != "none" else "fp32")
    if options.attention != "fused":
        parts.append(options.attention)
    return "-".join(parts)


def package_path(folders: Folders, name: str, *, overwrite: bool = False) -> Path:
    """``models/edge/NAME`` for a new package; refuses unsafe, hidden, nested and taken names."""
    if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name or name.startswith("."):
        raise InvalidRequest("out", f"{name!r} is not a usable package name (one plain folder name)")
    path = safe_child(folders.edge, name.strip())
    if path.exists() and not overwrite:
        raise InvalidRequest("out", f"edge package {name!r} already exists (choose another name or overwrite)")
    return path


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------

def merge_loras_in_place(pipe, family: Family, loras, hash_cache=None) -> list[dict]:
    """Fuse ``loras`` ((LoraInfo, U-Net weight, TE weight)) into ``pipe``'s own weights; returns their records."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from modules.lora.patcher import FAMILY_COMPONENTS, LoraPatcher

    if not loras:
        return []
    report = LoraPatcher(hash_cache=hash_cache).apply(pipe, family, loras)
    comps = [c for c in FAMILY_COMPONENTS[family] if getattr(pipe, c, None) is not None
             and any(isinstance(m, BaseTunerLayer) for m in getattr(pipe, c).modules())]
    if comps:
        pipe.fuse_lora(components=comps, lora_scale=1.0, adapter_names=[a.adapter for a in report.active])
        pipe.unload_lora_weights()
    return [{"name": a.name, "hash": a.hash, "unet_weight": a.unet_weight, "te_weight": a.te_weight}
            for a in report.active]


def preset_prompts(family: Family, count: int) -> list[tuple[str, str]]:
    """(prompt, negative) of the first ``count`` shipped presets for ``family``, filled with a neutral subject."""
    from modules.presets import PresetStore, apply_preset
    from modules.settings import REPO_ROOT

    store = PresetStore([REPO_ROOT / "presets"])
    out = []
    for preset in store.list():
        if family not in preset.families:
            continue
        fields = apply_preset(preset, CALIB_PROMPT, family)
        out.append((re.sub(r"<lora:[^>]*>", "", fields["prompt"]).strip(), fields["negative_prompt"]))
        if len(out) >= count:
            break
    return out or [(CALIB_PROMPT, "")]


def record_unet_inputs(pipe, family: Family, prompts: Sequence[tuple[str, str]], *, steps: int, size: int,
                       seed: int = 0) -> list[dict]:
    """Sample each prompt (Euler, no CFG) and record every U-Net input as numpy feeds for calibration."""
    import numpy as np
    import torch

    from modules.generation.encoding import encode_prompts
    from modules.generation.samplers import make_scheduler

    records: list[dict] = []

    def hook(_module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        ehs = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
        records.append({"sample": sample.detach().float().numpy().copy(),
                        "timestep": np.ascontiguousarray(t.numpy(), dtype=np.float32),
                        "encoder_hidden_states": ehs.detach().float().numpy().copy()})

    old_scheduler = pipe.scheduler
    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        pipe.scheduler = make_scheduler("Euler", old_scheduler.config)
        for i, (prompt, negative) in enumerate(prompts):
            embeds = encode_prompts(pipe, family, prompt, negative, do_cfg=False, clip_skip=1,
                                    device=torch.device("cpu"))
            pipe(prompt_embeds=embeds["prompt_embeds"], height=size, width=size, num_inference_steps=steps,
                 guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(seed + i), output_type="latent")
    finally:
        handle.remove()
        pipe.scheduler = old_scheduler
    return records


def _clear_stale(folder: Path, name: str) -> None:
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        m = _TEMP.match(child.name)
        if not m or m.group("name") != name:
            continue
        pid = int(m.group("pid"))
        try:
            if pid != os.getpid():
                os.kill(pid, 0)
                continue  # its builder is still running
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(child, ignore_errors=True)


def _dir_files(folder: Path) -> dict[str, int]:
    return mf.package_files(folder)


# ---------------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------------

def build_edge(pipe, entry: ModelEntry, folders: Folders, name: str, options: EdgeBuildOptions, *,
               taesd=None, loras: Sequence = (), hash_cache=None, on_progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None) -> Path:
    """Build the package ``models/edge/<name>`` from ``pipe`` (the model ``entry``, float32 on the CPU).

    ``pipe`` is changed in place (LoRAs fused, U-Net pruned): pass a pipeline of your own.
    ``taesd``: an ``AutoencoderTiny`` (required when ``options.taesd``). ``loras``: resolved
    ``(LoraInfo, unet_weight, te_weight)``. Returns the package folder.
    """
    import copy

    import torch

    from modules.edge import export as ex
    from modules.edge import prune as pr
    from modules.edge import quantize as qz
    from modules.taesd import tae_decoder_module

    options.check()
    family = Family(entry.family) if entry.family else None
    if family is not Family.SD15:
        raise UnsupportedModel(f"{entry.name}: edge packages are built from SD1.5 models only "
                               f"(SDXL's and Z-Image's denoisers are too large for an edge CPU)")
    if options.taesd and taesd is None:
        raise InvalidRequest("taesd", "TAESD weights are needed (or build with the full VAE decoder only)")
    final = package_path(folders, name, overwrite=options.overwrite)
    folders.edge.mkdir(parents=True, exist_ok=True)
    _clear_stale(folders.edge, final.name)
    temp = final.with_name(f".{final.name}.{os.getpid()}.build.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)

    stages = ["merging LoRAs", "pruning", "distilling", "recording calibration inputs",
              "exporting text encoder", "exporting U-Net", "exporting decoders", "quantizing", "writing package"]
    done = 0

    def stage(label: str) -> None:
        nonlocal done
        if should_stop is not None and should_stop():
            raise Interrupted(done, len(stages))
        if on_progress is not None:
            on_progress(label, done, len(stages))
        done += 1

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(label: str, t0: float) -> None:
        timings[label] = round(time.perf_counter() - t0, 2)

    try:
        if pipe.unet.dtype != torch.float32 or pipe.unet.device.type != "cpu":
            pipe.to("cpu", torch.float32)
        # 1. LoRAs
        stage(stages[0])
        t0 = time.perf_counter()
        lora_records = merge_loras_in_place(pipe, family, list(loras), hash_cache)
        timed("merge", t0)

        # 2. prune (+ distill)
        stage(stages[1])
        t0 = time.perf_counter()
        teacher = copy.deepcopy(pipe.unet) if options.prune and options.distill_steps else None
        prune_report = pr.prune_unet(pipe.unet, float(options.prune))
        timed("prune", t0)
        stage(stages[2])
        distill_report = None
        if teacher is not None:
            t0 = time.perf_counter()
            with torch.no_grad():
                embeds = [_encode(pipe, family, p, n) for p, n in preset_prompts(family, 8)]
            sub = (lambda label, i, n: on_progress(f"{label} {i}/{n}", done - 1, len(stages))) if on_progress else None
            distill_report = pr.distill(pipe.unet, teacher, embeds, pipe.scheduler.alphas_cumprod,
                                        steps=int(options.distill_steps), latent_size=int(options.distill_latent),
                                        lr=float(options.distill_lr), on_progress=sub, should_stop=should_stop)
            del teacher
            timed("distill", t0)

        # calibration inputs come from the final torch U-Net (merged, pruned, distilled)
        stage(stages[3])
        calib = []
        if options.unet_method == "static":
            t0 = time.perf_counter()
            size = int(options.calib_size or family_info(family).width // 2)
            with torch.no_grad():
                calib = record_unet_inputs(pipe, family, preset_prompts(family, options.calib_prompts),
                                           steps=options.calib_steps, size=size)
            timed("calibration_inputs", t0)

        # 3. export
        components: dict[str, dict] = {}
        quant = options.quantize == "int8"
        stage(stages[4])
        t0 = time.perf_counter()
        te_name = "text_encoder.fp32.onnx" if quant else "text_encoder.onnx"
        ex.export_text_encoder(pipe.text_encoder, temp / te_name, max_length=pipe.tokenizer.model_max_length)
        timed("export_text_encoder", t0)
        stage(stages[5])
        t0 = time.perf_counter()
        unet_name = "unet.fp32.onnx" if quant else "unet.onnx"
        ex.export_unet(pipe.unet, temp / unet_name, seq_len=pipe.tokenizer.model_max_length,
                       attention=options.attention)
        timed("export_unet", t0)
        stage(stages[6])
        t0 = time.perf_counter()
        channels = int(pipe.unet.config.in_channels)
        tae_name = "taesd_decoder.fp32.onnx" if quant else "taesd_decoder.onnx"
        if options.taesd:
            ex.export_decoder(tae_decoder_module(taesd.float().eval()), temp / tae_name, channels)
            components["taesd_decoder"] = {"file": "taesd_decoder.onnx", "precision": "int8-static" if quant else "fp32"}
        if options.full_vae:
            ex.export_decoder(ex.vae_decoder_module(pipe.vae), temp / "vae_decoder.onnx", channels)
            components["vae_decoder"] = {"file": "vae_decoder.onnx", "precision": "fp32"}
        timed("export_decoders", t0)

        # 4. quantize
        stage(stages[7])
        t0 = time.perf_counter()
        if quant:
            qz.quantize_dynamic_int8(temp / te_name, temp / "text_encoder.onnx", op_types=("MatMul", "Gather"))
            _remove_graph(temp / te_name)
            if options.unet_method == "static":
                qz.quantize_static_int8(temp / unet_name, temp / "unet.onnx", calib)
            else:
                qz.quantize_dynamic_int8(temp / unet_name, temp / "unet.onnx", op_types=("MatMul",))
            _remove_graph(temp / unet_name)
            if options.taesd:  # TAESD is all convolutions: static INT8 decodes ~3x faster (docs/edge.md)
                qz.quantize_static_int8(temp / tae_name, temp / "taesd_decoder.onnx",
                                        decoder_calibration(calib, channels), op_types=("Conv",))
                _remove_graph(temp / tae_name)
            timed("quantize", t0)
        components["text_encoder"] = {"file": "text_encoder.onnx", "precision": "int8-dynamic" if quant else "fp32"}
        components["unet"] = {"file": "unet.onnx", "attention": options.attention,
                              "precision": f"int8-{options.unet_method}" if quant else "fp32"}

        # 5. package
        stage(stages[8])
        pipe.tokenizer.save_pretrained(str(temp / mf.TOKENIZER_DIR))
        pipe.scheduler.save_pretrained(str(temp / mf.SCHEDULER_DIR))
        files = _dir_files(temp)
        data = {
            "format": mf.FORMAT,
            "version": mf.VERSION,
            "name": final.name,
            "family": family.value,
            "source": {"name": entry.name, "hash": _source_hash(entry, hash_cache), "format": entry.format},
            "loras": lora_records,
            "prune": {**prune_report.to_dict(),
                      "distill": distill_report.to_dict() if distill_report else None},
            "quantization": {"mode": options.quantize, "unet_method": options.unet_method,
                             "calibration_samples": len(calib),
                             "calibration_size": int(options.calib_size or family_info(family).width // 2)
                             if calib else None},
            "components": components,
            "latent_channels": channels,
            "vae_scale_factor": 2 ** (len(pipe.vae.config.block_out_channels) - 1),
            "vae_scaling_factor": float(pipe.vae.config.scaling_factor),
            "files": files,
            "total_bytes": sum(files.values()),
            "build": {"seconds": round(time.perf_counter() - started, 2), "steps": timings,
                      "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                      "visage": __version__, **ex.versions(), "options": asdict(options)},
        }
        mf.write_manifest(temp, data)
        mf.check_package(temp)
        if should_stop is not None and should_stop():
            raise Interrupted(done, len(stages))
        _move_into_place(temp, final, options.overwrite)
    except OSError as exc:
        raise EdgeBuildError(f"could not write {final.name}: {exc.strerror or exc}") from exc
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    if on_progress is not None:
        on_progress("done", len(stages), len(stages))
    return final


def _encode(pipe, family: Family, prompt: str, negative: str):
    import torch

    from modules.generation.encoding import encode_prompts

    return encode_prompts(pipe, family, prompt, negative, do_cfg=False, clip_skip=1,
                          device=torch.device("cpu"))["prompt_embeds"].float()


def _remove_graph(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def _source_hash(entry: ModelEntry, hash_cache) -> str | None:
    if entry.hash or hash_cache is None:
        return entry.hash
    from modules.registry import entry_hash

    return entry_hash(hash_cache, entry)


def _move_into_place(temp: Path, final: Path, overwrite: bool) -> None:
    old = None
    if final.exists():
        if not overwrite:
            raise InvalidRequest("out", f"edge package {final.name!r} appeared while building")
        old = final.with_name(f".{final.name}.{os.getpid()}.old.tmp")
        os.replace(final, old)
    try:
        os.replace(temp, final)
    except OSError:
        if old is not None and not final.exists():
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# from a registry entry (the CLI and the engine's build job)
# ---------------------------------------------------------------------------------------------

def build_edge_for(entry: ModelEntry, folders: Folders, name: str | None, options: EdgeBuildOptions, *,
                   hf_cache: Path | None = None, hash_cache=None, lora_dirs: Sequence = (), taesd=None,
                   on_progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> Path:
    """Load ``entry`` (a fresh float32 copy: the model being served is never touched), its TAESD and
    LoRAs, then :func:`build_edge`. ``name`` None: :func:`default_name`."""
    import torch

    from modules.loader import load_pipeline
    from modules.lora.formats import check_compatible
    from modules.lora.scan import find_lora, lora_folders, scan_loras
    from modules.taesd import load_taesd

    options.check()
    if not entry.supported or entry.family is None:
        raise UnsupportedModel(f"{entry.name}: {entry.reason or 'not a supported model'}")
    if Family(entry.family) is not Family.SD15:
        raise UnsupportedModel(f"{entry.name}: edge packages are built from SD1.5 models only")
    name = name or default_name(entry, options)
    package_path(folders, name, overwrite=options.overwrite)  # fail before the long load
    resolved = []
    if options.loras:
        available = scan_loras(lora_folders(folders, lora_dirs))
        for lora_name, unet_w, te_w in options.loras:
            info = find_lora(available, lora_name)
            check_compatible(info, entry.family)
            resolved.append((info, unet_w, te_w))
    if options.taesd and taesd is None:
        taesd = load_taesd(entry.family, folders, hf_cache)  # MissingComponent says where to put it
    if on_progress is not None:
        on_progress(f"loading {entry.name}", 0, 1)
    pipe = load_pipeline(entry, folders=folders, hf_cache=hf_cache, torch_dtype=torch.float32)
    try:
        return build_edge(pipe, entry, folders, name, options, taesd=taesd, loras=resolved,
                          hash_cache=hash_cache, on_progress=on_progress, should_stop=should_stop)
    finally:
        del pipe


def parse_lora(text: str) -> tuple[str, float, float]:
    from modules.lora.merge import parse_lora_arg

    return parse_lora_arg(text)


def configure_parser(p) -> None:
    p.add_argument("--model", required=True, help="SD1.5 model: name, title, hash or path")
    p.add_argument("--lora", dest="loras", action="append", default=[], type=parse_lora,
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
    p.add_argument("--models-dir", help="models folder (default ./models)")
    p.add_argument("--cache-dir", help="hash cache folder (default ./cache)")
    p.add_argument("--lora-dir", dest="lora_dirs", action="append", default=[], help="extra LoRA folder")


def options_from_args(args) -> EdgeBuildOptions:
    return EdgeBuildOptions(loras=list(args.loras), prune=args.prune, distill_steps=args.distill_steps,
                            distill_lr=args.distill_lr, quantize=args.quantize, method=args.method,
                            full_vae=args.full_vae, attention=args.attention, taesd=not args.no_taesd, calib_prompts=args.calib_prompts,
                            calib_steps=args.calib_steps, calib_size=args.calib_size, overwrite=args.overwrite)


def cmd_build_edge(args) -> int:
    """``python -m modules.cli build-edge``: progress on stderr, the package folder on stdout."""
    import sys

    from modules.registry import HashCache, ModelRegistry
    from modules.settings import REPO_ROOT

    models = Path(args.models_dir or REPO_ROOT / "models").expanduser().resolve()
    cache = Path(args.cache_dir or REPO_ROOT / "cache").expanduser().resolve()
    folders = Folders(models=models, outputs=REPO_ROOT / "outputs", cache=cache)
    hash_cache = HashCache(folders.cache / "hashes.json")
    entry = ModelRegistry(folders, hash_cache).get(args.model)
    options = options_from_args(args)
    start = time.perf_counter()

    def on_progress(label: str, i: int, n: int) -> None:
        print(f"\rbuild-edge [{i}/{n}] {label}".ljust(60), end="", file=sys.stderr, flush=True)

    path = build_edge_for(entry, folders, args.out, options, hash_cache=hash_cache, lora_dirs=args.lora_dirs,
                          on_progress=on_progress)
    print(f"\nbuilt in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(path)
    return 0
