"""The stages of an edge build after the LoRA merge, each a function of the one :class:`EdgeBuild` they share:
prune (+ distill), record calibration inputs, export to ONNX, quantize, write the manifest. Each stage
starts with ``build.op.stage(label)`` (the cancel point and the progress report) and writes only into
``build.temp``, the package's temp folder. Torch is imported inside the functions."""
from __future__ import annotations

import datetime as _dt
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modules import __version__
from modules.edge import manifest as mf
from modules.edge.calibration import decoder_calibration, encode_prompt, preset_prompts, record_unet_inputs
from modules.edge.options import EdgeBuildOptions
from modules.families import Family, family_info
from modules.operations import Operation
from modules.registry.entry import ModelEntry

#: the build's stage labels, in order (the page translates them: modules/ui/edge_tab.py STAGE_KEYS)
STAGES = ("merging LoRAs", "pruning", "distilling", "recording calibration inputs", "exporting text encoder",
          "exporting U-Net", "exporting decoders", "quantizing", "writing package")


@dataclass
class EdgeBuild:
    """One build in progress: its inputs, the operation (stages, progress, cancel) and what stages found."""

    pipe: object
    entry: ModelEntry
    family: Family
    options: EdgeBuildOptions
    op: Operation
    temp: Path | None = None
    hash_cache: object = None
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    lora_records: list[dict] = field(default_factory=list)
    prune_report: object = None
    distill_report: object = None
    calib: list[dict] = field(default_factory=list)
    components: dict[str, dict] = field(default_factory=dict)

    @property
    def quant(self) -> bool:
        return self.options.quantize == "int8"

    @property
    def calib_size(self) -> int:
        return int(self.options.calib_size or family_info(self.family).width // 2)

    @property
    def channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)

    def graph(self, name: str) -> str:
        """The file a component is exported to: ``NAME.fp32.onnx`` when it is quantized afterwards."""
        return f"{name}.fp32.onnx" if self.quant else f"{name}.onnx"

    @contextmanager
    def timed(self, key: str):
        t0 = time.perf_counter()
        yield
        self.timings[key] = round(time.perf_counter() - t0, 2)


def prune_and_distill(build: EdgeBuild) -> None:
    """Stages "pruning" and "distilling": prune the U-Net's inner channels, then (``distill_steps``)
    recover it for a few data-free steps from a copy of the unpruned one."""
    import copy

    import torch

    from modules.edge import prune as pr

    pipe, options = build.pipe, build.options
    build.op.stage("pruning")
    with build.timed("prune"):
        teacher = copy.deepcopy(pipe.unet) if options.prune and options.distill_steps else None
        build.prune_report = pr.prune_unet(pipe.unet, float(options.prune))
    build.op.stage("distilling")
    if teacher is None:
        return
    with build.timed("distill"):
        with torch.no_grad():
            embeds = [encode_prompt(pipe, build.family, p, n) for p, n in preset_prompts(build.family, 8)]
        at = build.op.done - 1

        def sub(label: str, i: int, n: int) -> None:
            build.op.report(f"{label} {i}/{n}", at)

        build.distill_report = pr.distill(pipe.unet, teacher, embeds, pipe.scheduler.alphas_cumprod,
                                          steps=int(options.distill_steps), latent_size=int(options.distill_latent),
                                          lr=float(options.distill_lr), on_progress=sub,
                                          should_stop=lambda: build.op.stopping)


def record_calibration(build: EdgeBuild) -> None:
    """Stage "recording calibration inputs" (static INT8 only), from the final torch U-Net."""
    import torch

    build.op.stage("recording calibration inputs")
    if build.options.unet_method != "static":
        return
    with build.timed("calibration_inputs"), torch.no_grad():
        prompts = preset_prompts(build.family, build.options.calib_prompts)
        build.calib = record_unet_inputs(build.pipe, build.family, prompts, steps=build.options.calib_steps,
                                         size=build.calib_size)


def export_components(build: EdgeBuild, taesd=None) -> None:
    """Stages "exporting text encoder", "exporting U-Net" and "exporting decoders" (ONNX, into the temp)."""
    from modules.edge import export as ex
    from modules.taesd import tae_decoder_module

    pipe, options, temp = build.pipe, build.options, build.temp
    seq_len = pipe.tokenizer.model_max_length
    build.op.stage("exporting text encoder")
    with build.timed("export_text_encoder"):
        ex.export_text_encoder(pipe.text_encoder, temp / build.graph("text_encoder"), max_length=seq_len)
    build.op.stage("exporting U-Net")
    with build.timed("export_unet"):
        ex.export_unet(pipe.unet, temp / build.graph("unet"), seq_len=seq_len, attention=options.attention)
    build.op.stage("exporting decoders")
    with build.timed("export_decoders"):
        if options.taesd:
            ex.export_decoder(tae_decoder_module(taesd.float().eval()), temp / build.graph("taesd_decoder"),
                              build.channels)
            build.components["taesd_decoder"] = {"file": "taesd_decoder.onnx",
                                                 "precision": "int8-static" if build.quant else "fp32"}
        if options.full_vae:
            ex.export_decoder(ex.vae_decoder_module(pipe.vae), temp / "vae_decoder.onnx", build.channels)
            build.components["vae_decoder"] = {"file": "vae_decoder.onnx", "precision": "fp32"}


def quantize_components(build: EdgeBuild) -> None:
    """Stage "quantizing": text encoder dynamic INT8 (MatMul + Gather); U-Net static QDQ INT8 on the recorded
    inputs (or dynamic MatMul-only); TAESD static INT8 (all convolutions: ~3x faster, docs/edge.md)."""
    from modules.edge import quantize as qz

    options, temp = build.options, build.temp
    build.op.stage("quantizing")
    if build.quant:
        with build.timed("quantize"):
            qz.quantize_dynamic_int8(temp / build.graph("text_encoder"), temp / "text_encoder.onnx",
                                     op_types=("MatMul", "Gather"))
            _remove_graph(temp / build.graph("text_encoder"))
            if options.unet_method == "static":
                qz.quantize_static_int8(temp / build.graph("unet"), temp / "unet.onnx", build.calib)
            else:
                qz.quantize_dynamic_int8(temp / build.graph("unet"), temp / "unet.onnx", op_types=("MatMul",))
            _remove_graph(temp / build.graph("unet"))
            if options.taesd:
                qz.quantize_static_int8(temp / build.graph("taesd_decoder"), temp / "taesd_decoder.onnx",
                                        decoder_calibration(build.calib, build.channels), op_types=("Conv",))
                _remove_graph(temp / build.graph("taesd_decoder"))
    build.components["text_encoder"] = {"file": "text_encoder.onnx",
                                        "precision": "int8-dynamic" if build.quant else "fp32"}
    build.components["unet"] = {"file": "unet.onnx", "attention": options.attention,
                                "precision": f"int8-{options.unet_method}" if build.quant else "fp32"}


def write_package(build: EdgeBuild, name: str) -> None:
    """Stage "writing package": tokenizer, scheduler and ``manifest.json`` into the temp, then checked."""
    build.op.stage("writing package")
    build.pipe.tokenizer.save_pretrained(str(build.temp / mf.TOKENIZER_DIR))
    build.pipe.scheduler.save_pretrained(str(build.temp / mf.SCHEDULER_DIR))
    mf.write_manifest(build.temp, manifest_data(build, name))
    mf.check_package(build.temp)


def manifest_data(build: EdgeBuild, name: str) -> dict:
    """The manifest of the package being built (:mod:`modules.edge.manifest`)."""
    from modules.edge import export as ex

    files = mf.package_files(build.temp)
    options, vae = build.options, build.pipe.vae
    return {
        "format": mf.FORMAT,
        "version": mf.VERSION,
        "name": name,
        "family": build.family.value,
        "source": {"name": build.entry.name, "hash": _source_hash(build.entry, build.hash_cache),
                   "format": build.entry.format},
        "loras": build.lora_records,
        "prune": {**build.prune_report.to_dict(),
                  "distill": build.distill_report.to_dict() if build.distill_report else None},
        "quantization": {"mode": options.quantize, "unet_method": options.unet_method,
                         "calibration_samples": len(build.calib),
                         "calibration_size": build.calib_size if build.calib else None},
        "components": build.components,
        "latent_channels": build.channels,
        "vae_scale_factor": 2 ** (len(vae.config.block_out_channels) - 1),
        "vae_scaling_factor": float(vae.config.scaling_factor),
        "files": files,
        "total_bytes": sum(files.values()),
        "build": {"seconds": round(time.perf_counter() - build.started, 2), "steps": build.timings,
                  "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                  "visage": __version__, **ex.versions(), "options": asdict(options)},
    }


def _remove_graph(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def _source_hash(entry: ModelEntry, hash_cache) -> str | None:
    if entry.hash or hash_cache is None:
        return entry.hash
    from modules.registry import entry_hash

    return entry_hash(hash_cache, entry)
