"""Merge LoRAs into a base model and save the result as a new model. Torch-free at import.

How (:func:`merge_loras`):

1. A *working copy* of the pipeline is made whose modules are new objects but whose parameters are the
   base's own tensors (no memory cost; a pipeline on a GPU is copied to the CPU, which does the merge).
2. The LoRAs are fused into the copy by :func:`modules.lora.fuse.fuse_loras` (the one fuse, also used by
   the edge build): LoRAs the live patcher already holds on the base come along with the copy and are
   reused, not read again; the weights the LoRAs patch are replaced by private float32 tensors holding
   base + delta, so the saved state dict holds no LoRA keys and the live pipeline is untouched.
3. Tensors are cast to the output dtype by replacing them (never in place), then written:
   a single ``.safetensors`` via :func:`~modules.checkpoints.single_file.save_single_file` with metadata
   ``visage.merge`` (JSON: base, LoRAs with hashes and weights, dtype, date), or a diffusers folder with the
   same JSON in ``visage_merge.json``.

The base pipeline in memory is never modified (its tensors are only read) and the base file is only read.
Output is atomic (:meth:`modules.operations.Operation.output`, i.e. :func:`modules.atomic.atomic_output`):
everything is written under a hidden temp name (``.NAME.PID.merge.tmp``, which the registry and LoRA
scanners skip) in the destination folder and swapped in at the end; an interrupted merge leaves at most
such a temp entry, which the next merge to the same name removes once its process is gone.

Z-Image single-file output mirrors the base: a DiT-only base gives a DiT-only file (it needs the same
companion folder), an all-in-one file or a diffusers folder gives an all-in-one file.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modules.errors import InvalidRequest, VisageError
from modules.families import Family
from modules.lora.formats import LoraInfo, check_compatible
from modules.messages import Message
from modules.operations import Operation
from modules.paths import Folders, safe_child
from modules.registry.entry import ModelEntry, ModelFormat

log = logging.getLogger(__name__)

MERGE_KEY = "visage.merge"
SIDECAR_NAME = "visage_merge.json"
MERGE_VERSION = 1
FORMATS = (ModelFormat.SINGLE_FILE, ModelFormat.DIFFUSERS)
DTYPES = ("fp16", "bf16", "fp32")
SUFFIX = ".safetensors"

Progress = Callable[[str, int, int], None]


class MergeError(VisageError):
    """The merged model could not be written (disk full, permissions); nothing was left behind."""

    code = "merge_error"


@dataclass(frozen=True)
class MergedLora:
    """One LoRA as recorded in a merged model's metadata."""

    name: str
    hash: str  # A1111 "Lora hashes" value (12 hex of the data-section sha256)
    sha256: str
    unet_weight: float  # U-Net / DiT weight
    te_weight: float
    format: str


# ---------------------------------------------------------------------------------------------
# names, metadata
# ---------------------------------------------------------------------------------------------

def merge_output_path(folders: Folders, name: str, fmt: str, *, overwrite: bool = False) -> Path:
    """Where a merged model called ``name`` goes in ``models/Stable-diffusion`` (``.safetensors`` added
    for single files). Refuses names leaving the folder (UnsafeName), hidden names, and names already
    taken by a model of either format unless ``overwrite`` (then only the same format may be replaced)."""
    _check_choice("format", fmt, FORMATS)
    raw = name.strip() if isinstance(name, str) else name
    if isinstance(raw, str) and raw.lower().endswith(SUFFIX):
        if fmt == ModelFormat.DIFFUSERS:
            raise InvalidRequest("out", Message("rule.diffusers_folder"))
        raw = raw[: -len(SUFFIX)]
    stem = safe_child(folders.checkpoints, raw)
    if stem == folders.checkpoints.resolve() or stem.name.startswith("."):
        raise InvalidRequest("out", Message("rule.bad_name", name=name))
    path = stem.with_name(stem.name + SUFFIX) if fmt == ModelFormat.SINGLE_FILE else stem
    other = stem if fmt == ModelFormat.SINGLE_FILE else stem.with_name(stem.name + SUFFIX)
    if other.exists():
        raise InvalidRequest("out", Message("rule.model_exists", name=raw, file=other.name))
    if path.exists() and not overwrite:
        raise InvalidRequest("out", Message("rule.exists_in", name=path.name, folder=str(path.parent)))
    return path


def merge_metadata(base: ModelEntry, base_hash: str | None, loras: Sequence[MergedLora], dtype: str,
                   fmt: str, base_sha256: str | None = None) -> dict:
    """The ``visage.merge`` record."""
    return {
        "version": MERGE_VERSION,
        "base": {"name": base.name, "hash": base_hash, "sha256": base_sha256,
                 "family": Family(base.family).value if base.family else None, "format": base.format},
        "loras": [{"name": x.name, "hash": x.hash, "sha256": x.sha256, "unet_weight": x.unet_weight,
                   "te_weight": x.te_weight, "format": x.format} for x in loras],
        "dtype": dtype,
        "format": fmt,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def read_merge_info(path: str | os.PathLike) -> dict | None:
    """The ``visage.merge`` record of a merged model (single file or diffusers folder), else None."""
    from modules.checkpoints.header import SafetensorsHeaderError, read_header

    path = Path(path)
    try:
        if path.is_dir():
            return json.loads((path / SIDECAR_NAME).read_text(encoding="utf-8"))
        raw = read_header(path).metadata.get(MERGE_KEY)
    except (OSError, ValueError, SafetensorsHeaderError):
        return None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _check_choice(field: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidRequest(field, Message("rule.one_of_not", choices=", ".join(choices), value=value))


def _base_hashes(entry: ModelEntry, cache) -> tuple[str | None, str | None]:
    """(A1111 10-hex model hash, full sha256 when it is a file and known) of the base. The registry's
    hash is used when the entry has one (no re-reading of a multi-GB file); computed otherwise."""
    from modules.registry.hashing import (
        DIFFUSERS_HASH_NAMES, DIFFUSERS_HASH_SUFFIXES, combine_folder_hash, folder_hash_files, sha256_file,
        short_hash,
    )

    path = Path(entry.path)
    if path.is_file():
        if entry.hash:
            return entry.hash, cache.cached_sha256(path) if cache is not None else None
        full = cache.full_sha256(path) if cache is not None else sha256_file(path)
        return short_hash(full), full
    if entry.hash or not path.is_dir():
        return entry.hash, None
    if cache is not None:
        full = cache.folder_sha256(path, DIFFUSERS_HASH_SUFFIXES, DIFFUSERS_HASH_NAMES)
    else:
        files = folder_hash_files(path, DIFFUSERS_HASH_SUFFIXES, DIFFUSERS_HASH_NAMES)
        full = combine_folder_hash([(f.relative_to(path).as_posix(), sha256_file(f)) for f in files])
    return (short_hash(full) if full else None), None


# ---------------------------------------------------------------------------------------------
# the working copy
# ---------------------------------------------------------------------------------------------

def _share_copy(module):
    """A copy of ``module`` (new module objects) holding the very same tensors when they are on the CPU;
    tensors on an accelerator are copied to the CPU, so merging takes no accelerator memory."""
    import copy

    import torch

    memo = {}
    for p in module.parameters():
        memo[id(p)] = p if p.device.type == "cpu" else torch.nn.Parameter(p.detach().to("cpu"), requires_grad=False)
    for b in module.buffers():
        memo[id(b)] = b if b.device.type == "cpu" else b.to("cpu")
    return copy.deepcopy(module, memo)


def _working_copy(pipe):
    """A new pipeline of the same class: torch modules share-copied, schedulers copied, the rest shared."""
    import copy
    import inspect

    import torch

    parts = {}
    for name, value in pipe.components.items():
        if isinstance(value, torch.nn.Module):
            parts[name] = _share_copy(value)
        elif value is not None and hasattr(value, "set_timesteps"):
            parts[name] = copy.deepcopy(value)
        else:
            parts[name] = value
    init = inspect.signature(type(pipe).__init__).parameters
    extra = {k: pipe.config[k] for k in init if k not in parts and k in pipe.config}
    work = type(pipe)(**parts, **extra)
    if hasattr(work, "set_progress_bar_config"):
        work.set_progress_bar_config(disable=True)
    return work


def _cast_module(model, dtype) -> None:
    """Replace floating parameters and persistent buffers by ``dtype`` copies (shared tensors untouched)."""
    import torch

    done: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None or not p.is_floating_point() or p.dtype == dtype:
                continue
            if id(p) not in done:
                done[id(p)] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
            module._parameters[name] = done[id(p)]
        for name, b in list(module._buffers.items()):
            if (b is None or not b.is_floating_point() or b.dtype == dtype
                    or name in module._non_persistent_buffers_set):
                continue
            if id(b) not in done:
                done[id(b)] = b.to(dtype)
            module._buffers[name] = done[id(b)]


def _zimage_file_components(entry: ModelEntry) -> tuple[str, ...] | None:
    """("transformer",) when the Z-Image base is a DiT-only file, else None (all components)."""
    from modules.checkpoints.layouts import ZIMAGE_TE_PREFIX, ZIMAGE_VAE_PREFIX
    from modules.checkpoints.header import SafetensorsHeaderError, read_header

    if entry.format != ModelFormat.SINGLE_FILE:
        return None
    try:
        keys = read_header(entry.path).tensors
    except SafetensorsHeaderError:
        return None
    whole = all(any(k.startswith(p) for k in keys) for p in (ZIMAGE_TE_PREFIX, ZIMAGE_VAE_PREFIX))
    return None if whole else ("transformer",)


# ---------------------------------------------------------------------------------------------
# merging
# ---------------------------------------------------------------------------------------------

def merge_loras(pipe, family: Family | str, loras: Sequence[tuple[LoraInfo, float, float]], *,
                out_path: Path, fmt: str, dtype: str, base_entry: ModelEntry, patcher=None,
                on_progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                overwrite: bool = False, hash_cache=None, before_swap: Callable[[Path], None] | None = None) -> Path:
    """Fuse ``loras`` ((info, U-Net/DiT weight, text-encoder weight), as for ``LoraPatcher.apply``) into a
    copy of ``pipe`` and write it to ``out_path`` as ``fmt`` ("single-file" | "diffusers") in ``dtype``
    ("fp16" | "bf16" | "fp32"). Returns the written path. ``pipe`` and the base files are left as they were.

    An :class:`~modules.operations.Operation`: ``on_progress(label, done, total)`` is called as each stage
    starts; ``should_stop()`` true stops before the next stage, or after writing but before the output is
    swapped in (Interrupted; nothing left behind). ``before_swap(temp)`` runs with the finished output
    under its temp name. Raises LoraError, InvalidRequest, MergeError.
    """
    import torch

    from modules.lora.fuse import fuse_loras, group_loras

    family = Family(family)
    _check_choice("format", fmt, FORMATS)
    _check_choice("dtype", dtype, DTYPES)
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    out_path = Path(out_path)
    if base_entry.family is not None and Family(base_entry.family) is not family:
        raise InvalidRequest("base", Message("rule.base_family", name=base_entry.name,
                                                   family=Family(base_entry.family).value, wanted=family.value))
    if fmt == ModelFormat.SINGLE_FILE and out_path.suffix.lower() != SUFFIX:
        raise InvalidRequest("out", Message("rule.single_file_suffix", suffix=SUFFIX))
    if out_path.name.startswith("."):
        raise InvalidRequest("out", Message("rule.hidden_name"))
    base_path = Path(base_entry.path).resolve()
    target = out_path.resolve()
    if target == base_path or base_path in target.parents or target in base_path.parents:
        raise InvalidRequest("out", Message("rule.inside_base"))
    if out_path.exists() and not overwrite:
        raise InvalidRequest("out", Message("rule.exists", name=out_path.name))
    if out_path.exists() and out_path.is_dir() != (fmt == ModelFormat.DIFFUSERS):
        raise InvalidRequest("out", Message("rule.exists_not_model", name=out_path.name, fmt=fmt))
    wanted = [(info, float(u), float(t)) for info, u, t in loras if float(u) != 0.0 or float(t) != 0.0]
    if not wanted:
        raise InvalidRequest("loras", Message("rule.lora_nonzero"))
    for info, _, _ in wanted:
        check_compatible(info, family)

    # stages: hashing, one per LoRA, fusing, converting, writing
    op = Operation(len(wanted) + 4, on_progress=on_progress, should_stop=should_stop)
    cache = hash_cache if hash_cache is not None else getattr(patcher, "hash_cache", None)
    op.stage("hashing")
    wanted = list(group_loras(wanted, family, cache).values())
    op.total = len(wanted) + 4  # the same file twice is one LoRA
    base_hash, base_sha = _base_hashes(base_entry, cache)

    work = _working_copy(pipe)
    fused = fuse_loras(work, family, wanted, patcher=patcher, hash_cache=cache, stage=op.stage)
    op.stage(f"converting to {dtype}")
    with torch.no_grad():
        for value in work.components.values():
            if isinstance(value, torch.nn.Module):
                _cast_module(value, torch_dtype)

    merged = [MergedLora(name=info.name, hash=info.hash or "", sha256=info.sha256 or "", unet_weight=u,
                         te_weight=t, format=info.format) for info, u, t in fused.loras]
    record = merge_metadata(base_entry, base_hash, merged, dtype, fmt, base_sha)
    op.stage(f"writing {out_path.name}")
    with op.output(out_path, overwrite=overwrite, tag="merge", before_swap=before_swap, error=MergeError) as temp:
        _write(work, family, temp, fmt, record, base_entry)
    op.finish()
    return out_path


def _write(work, family: Family, temp: Path, fmt: str, record: dict, base_entry: ModelEntry) -> None:
    """Write the merged model to ``temp`` (a file, or a diffusers folder with its ``visage_merge.json``)."""
    from modules.checkpoints.single_file import save_single_file

    if fmt == ModelFormat.SINGLE_FILE:
        comps = _zimage_file_components(base_entry) if family is Family.ZIMAGE else None
        save_single_file(work, family, temp, {MERGE_KEY: json.dumps(record)}, components=comps)
    else:
        work.save_pretrained(str(temp), safe_serialization=True)
        (temp / SIDECAR_NAME).write_text(json.dumps(record, indent=1), encoding="utf-8")
