"""``build-edge``: turn an SD1.5 model (plus LoRAs) into an edge package under ``models/edge/NAME/``.

One :class:`~modules.operations.Operation` with these stages, in order (each reported through
``on_progress(label, done, total)``, each a cancel point):

1. merge the LoRAs into the weights (:func:`merge_loras_in_place`);
2. prune the U-Net's inner channels with torch-pruning (:mod:`modules.edge.prune`), then optionally
   distill it for a few data-free steps from the unpruned U-Net;
3. record calibration inputs (:mod:`modules.edge.calibration`), export text encoder, U-Net, TAESD decoder
   (and optionally the full VAE decoder) to ONNX;
4. quantize (``int8``): text encoder dynamic INT8 (MatMul + Gather); U-Net static QDQ INT8 calibrated on
   U-Net inputs recorded while sampling preset prompts (or dynamic MatMul-only INT8 with
   ``method="dynamic"``);
5. write ``manifest.json``; the finished folder is swapped into place by
   :func:`modules.atomic.atomic_output` (a reader sees the old package or the new one, never half of one).

The stages 2-5 live in :mod:`modules.edge.stages`, the options in :mod:`modules.edge.options`.
Only SD1.5 is supported: an SDXL U-Net is 2.6 G parameters and Z-Image's DiT 6 G; neither fits an edge CPU.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from modules.edge import stages as st
from modules.edge.options import EdgeBuildError, EdgeBuildOptions, default_name, package_path
from modules.errors import InvalidRequest, UnsupportedModel
from modules.families import Family
from modules.messages import Message
from modules.operations import Operation, ProgressCallback
from modules.paths import Folders
from modules.registry.entry import ModelEntry

__all__ = ["EdgeBuildError", "EdgeBuildOptions", "build_edge", "build_edge_for", "default_name",
           "merge_loras_in_place", "package_path"]


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------

def merge_loras_in_place(pipe, family: Family, loras, hash_cache=None) -> list[dict]:
    """Fuse ``loras`` ((LoraInfo, U-Net weight, TE weight)) into ``pipe``'s own (float32) weights with the one
    LoRA fuse, :func:`modules.lora.fuse.fuse_loras`; returns their records."""
    from modules.lora.fuse import fuse_loras

    return fuse_loras(pipe, family, loras, hash_cache=hash_cache).records()


# ---------------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------------

def build_edge(pipe, entry: ModelEntry, folders: Folders, name: str, options: EdgeBuildOptions, *,
               taesd=None, loras: Sequence = (), hash_cache=None, on_progress: ProgressCallback | None = None,
               should_stop: Callable[[], bool] | None = None,
               before_swap: Callable[[Path], None] | None = None) -> Path:
    """Build the package ``models/edge/<name>`` from ``pipe`` (the model ``entry``, float32 on the CPU).

    ``pipe`` is changed in place (LoRAs fused, U-Net pruned): pass a pipeline of your own.
    ``taesd``: an ``AutoencoderTiny`` (required when ``options.taesd``). ``loras``: resolved
    ``(LoraInfo, unet_weight, te_weight)``. ``should_stop()`` true stops at the next stage (Interrupted;
    nothing left behind). ``before_swap(temp)`` runs with the finished package in its temp folder.
    Returns the package folder.
    """
    import torch

    family = _check_source(entry, options, taesd)
    final = package_path(folders, name, overwrite=options.overwrite)
    build = st.EdgeBuild(pipe=pipe, entry=entry, family=family, options=options, hash_cache=hash_cache,
                         op=Operation(st.STAGES, on_progress=on_progress, should_stop=should_stop))
    with build.op.output(final, folder=True, overwrite=options.overwrite, tag="build", before_swap=before_swap,
                         error=EdgeBuildError) as temp:
        build.temp = temp
        if pipe.unet.dtype != torch.float32 or pipe.unet.device.type != "cpu":
            pipe.to("cpu", torch.float32)
        build.op.stage("merging LoRAs")
        with build.timed("merge"):
            build.lora_records = merge_loras_in_place(pipe, family, list(loras), hash_cache)
        st.prune_and_distill(build)
        st.record_calibration(build)  # from the final torch U-Net (merged, pruned, distilled)
        st.export_components(build, taesd)
        st.quantize_components(build)
        st.write_package(build, final.name)
    build.op.finish()
    return final


def _check_source(entry: ModelEntry, options: EdgeBuildOptions, taesd) -> Family:
    options.check()
    family = Family(entry.family) if entry.family else None
    if family is not Family.SD15:
        raise UnsupportedModel(f"{entry.name}: edge packages are built from SD1.5 models only "
                               f"(SDXL's and Z-Image's denoisers are too large for an edge CPU)")
    if options.taesd and taesd is None:
        raise InvalidRequest("taesd", Message("rule.edge_taesd"))
    return family


# ---------------------------------------------------------------------------------------------
# from a registry entry (the CLI and the engine's build job)
# ---------------------------------------------------------------------------------------------

def check_source_entry(entry: ModelEntry) -> None:
    """UnsupportedModel unless ``entry`` is a supported SD1.5 model (checked before anything is queued or loaded)."""
    if not entry.supported or entry.family is None:
        raise UnsupportedModel(f"{entry.name}: {entry.reason or 'not a supported model'}")
    if Family(entry.family) is not Family.SD15:
        raise UnsupportedModel(f"{entry.name}: edge packages are built from SD1.5 models only")


def build_edge_for(entry: ModelEntry, folders: Folders, name: str | None, options: EdgeBuildOptions, *,
                   hf_cache: Path | None = None, hash_cache=None, lora_dirs: Sequence = (), taesd=None,
                   on_progress: ProgressCallback | None = None, should_stop: Callable[[], bool] | None = None,
                   before_swap: Callable[[Path], None] | None = None) -> Path:
    """Load ``entry`` (a fresh float32 copy: the model being served is never touched), its TAESD and
    LoRAs, then :func:`build_edge`. ``name`` None: :func:`default_name`."""
    import torch

    from modules.loader import load_pipeline
    from modules.taesd import load_taesd

    options.check()
    check_source_entry(entry)
    name = name or default_name(entry, options)
    package_path(folders, name, overwrite=options.overwrite)  # fail before the long load
    resolved = _resolve_loras(entry, folders, options, lora_dirs)
    if options.taesd and taesd is None:
        taesd = load_taesd(entry.family, folders, hf_cache)  # MissingComponent says where to put it
    if on_progress is not None:
        on_progress(f"loading {entry.name}", 0, 1)
    pipe = load_pipeline(entry, folders=folders, hf_cache=hf_cache, torch_dtype=torch.float32)
    try:
        return build_edge(pipe, entry, folders, name, options, taesd=taesd, loras=resolved,
                          hash_cache=hash_cache, on_progress=on_progress, should_stop=should_stop,
                          before_swap=before_swap)
    finally:
        del pipe


def _resolve_loras(entry: ModelEntry, folders: Folders, options: EdgeBuildOptions, lora_dirs: Sequence) -> list:
    """``options.loras`` (name, U-Net weight, TE weight) -> (LoraInfo, U-Net weight, TE weight), checked."""
    from modules.lora.formats import check_compatible
    from modules.lora.scan import find_lora, lora_folders, scan_loras

    if not options.loras:
        return []
    available = scan_loras(lora_folders(folders, lora_dirs))
    resolved = []
    for lora_name, unet_w, te_w in options.loras:
        info = find_lora(available, lora_name)
        check_compatible(info, entry.family)
        resolved.append((info, unet_w, te_w))
    return resolved
