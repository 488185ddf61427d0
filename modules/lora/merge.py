"""Merge LoRAs into a base model and save the result as a new model. Torch-free at import.

How (:func:`merge_loras`):

1. A *working copy* of the pipeline is made whose modules are new objects but whose parameters are the
   base's own tensors (no memory cost; a pipeline on a GPU is copied to the CPU, which does the merge).
2. The LoRAs are applied to the copy with :class:`~modules.lora.patcher.LoraPatcher` (so every format the
   patcher reads can be merged, with the same per-layer alphas); LoRAs the live patcher already holds on
   the base come along with the copy and are reused, not read again. ``set_adapters`` sets the weights;
   the weights the LoRAs patch are replaced by private float32 clones and the deltas added there (what
   ``fuse_lora(lora_scale=1)`` computes, as one in-place ``addmm`` per plain LoRA layer; PEFT's own merge
   for other layer kinds), then ``unload_lora_weights``: the saved state dict holds no LoRA keys.
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
from modules.operations import Operation
from modules.messages import Message
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


def _tuner_layers(model):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def _layer_adapters(layer) -> set[str]:
    """Adapter names held by one PEFT tuner layer (LoRA, LoKr, ...)."""
    return set(layer._get_available_adapters())


def _fast_fusable(layer, adapter: str) -> bool:
    """A plain LoRA on a Linear or an ungrouped Conv2d with a 1x1 up-projection: delta = s * B @ A."""
    from peft.tuners.lora.layer import Conv2d, Linear

    if adapter not in getattr(layer, "lora_A", {}) or adapter in getattr(layer, "lora_variant", {}):
        return False
    if getattr(layer, "lora_bias", {}).get(adapter, False):
        return False
    if isinstance(layer, Linear):
        return not layer.fan_in_fan_out
    if isinstance(layer, Conv2d):
        base = layer.get_base_layer()
        return base.groups == 1 and tuple(layer.lora_B[adapter].weight.shape[2:]) == (1, 1)
    return False


def _privatize(base, names: Sequence[str] = ("weight", "bias")) -> None:
    """Give a base layer its own float32 copies of ``names``, so PEFT's in-place merge cannot reach the
    tensors shared with the live pipeline."""
    import torch

    for pname in names:
        p = base._parameters.get(pname)
        if p is not None:
            data = p.detach().to(torch.float32 if p.is_floating_point() else p.dtype, copy=True)
            base._parameters[pname] = torch.nn.Parameter(data, requires_grad=False)


def _fuse(model, adapters: Sequence[str]) -> int:
    """Add the listed adapters into the base layers of ``model`` (each scaled as ``set_adapters`` left it),
    writing into new float32 tensors, never into the ones shared with the live pipeline.

    Plain LoRA layers: the first adapter is one out-of-place ``addmm`` (the new weight), further ones
    in-place ``addmm_`` (PEFT's merge, i.e. ``fuse_lora``, would also clone the weight and build two
    full-size temporaries per layer: several seconds on SD1.5). Anything else (DoRA, LoKr, LoRA bias,
    grouped convolutions): a private float32 copy, then PEFT's own ``merge``. Returns the layers changed."""
    import torch

    changed = 0
    for layer in _tuner_layers(model):
        mine = [a for a in adapters if a in _layer_adapters(layer)]
        if not mine:
            continue
        base = layer.get_base_layer()
        private = False
        rest = []
        for a in mine:
            if not _fast_fusable(layer, a):
                rest.append(a)
                continue
            weight = base.weight.detach()
            down = layer.lora_A[a].weight.detach().float()
            up = layer.lora_B[a].weight.detach().float()
            flat_up, flat_down = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
            scale = float(layer.scaling[a])
            if private:
                weight.view(weight.shape[0], -1).addmm_(flat_up, flat_down, alpha=scale)
            else:
                new = torch.addmm(weight.float().reshape(weight.shape[0], -1), flat_up, flat_down, alpha=scale)
                base._parameters["weight"] = torch.nn.Parameter(new.view(weight.shape), requires_grad=False)
                private = True
        if rest:
            _privatize(base, ("bias",) if private else ("weight", "bias"))
            layer.merge(safe_merge=False, adapter_names=rest)
        changed += 1
    return changed


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

    from modules.lora.patcher import FAMILY_COMPONENTS, LoraPatcher
    from modules.lora.scan import ensure_hashes

    family = Family(family)
    _check_choice("format", fmt, FORMATS)
    _check_choice("dtype", dtype, DTYPES)
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    out_path = Path(out_path)
    if base_entry.family is not None and Family(base_entry.family) is not family:
        raise InvalidRequest("base", f"{base_entry.name} is {Family(base_entry.family).value}, not {family.value}")
    if fmt == ModelFormat.SINGLE_FILE and out_path.suffix.lower() != SUFFIX:
        raise InvalidRequest("out", f"a single-file model must end with {SUFFIX}")
    if out_path.name.startswith("."):
        raise InvalidRequest("out", "hidden names are not allowed")
    base_path = Path(base_entry.path).resolve()
    target = out_path.resolve()
    if target == base_path or base_path in target.parents or target in base_path.parents:
        raise InvalidRequest("out", Message("rule.inside_base"))
    if out_path.exists() and not overwrite:
        raise InvalidRequest("out", Message("rule.exists", name=out_path.name))
    if out_path.exists() and out_path.is_dir() != (fmt == ModelFormat.DIFFUSERS):
        raise InvalidRequest("out", f"{out_path.name} exists and is not a {fmt} model")
    wanted = [(info, float(u), float(t)) for info, u, t in loras if float(u) != 0.0 or float(t) != 0.0]
    if not wanted:
        raise InvalidRequest("loras", Message("rule.lora_nonzero"))
    for info, _, _ in wanted:
        check_compatible(info, family)

    # stages: hashing, one per LoRA, fusing, converting, writing
    op = Operation(len(wanted) + 4, on_progress=on_progress, should_stop=should_stop)
    stage = op.stage
    cache = hash_cache if hash_cache is not None else getattr(patcher, "hash_cache", None)
    stage("hashing")
    wanted_by_adapter = _by_adapter([(ensure_hashes(info, cache), u, t) for info, u, t in wanted])
    op.total = len(wanted_by_adapter) + 4  # the same file twice is one LoRA
    base_hash, base_sha = _base_hashes(base_entry, cache)

    work = _working_copy(pipe)
    components = [c for c in FAMILY_COMPONENTS[family] if getattr(work, c, None) is not None]
    patcher = patcher if patcher is not None else LoraPatcher(hash_cache=cache)
    with torch.no_grad():
        _load_adapters(work, family, components, wanted_by_adapter, patcher, stage)
        stage("fusing")
        names = list(wanted_by_adapter)
        patched = [c for c in components if set(names) & _adapters_in(getattr(work, c))]
        for c in patched:
            _fuse(getattr(work, c), names)
        work.unload_lora_weights()
        leftovers = [c for c in components if _tuner_layers(getattr(work, c))]
        if leftovers:
            raise MergeError(f"LoRA layers remained in {', '.join(leftovers)} after fusing")
        stage(f"converting to {dtype}")
        for value in work.components.values():
            if isinstance(value, torch.nn.Module):
                _cast_module(value, torch_dtype)

    merged = [MergedLora(name=info.name, hash=info.hash or "", sha256=info.sha256 or "", unet_weight=u,
                         te_weight=t, format=info.format) for info, u, t in wanted_by_adapter.values()]
    record = merge_metadata(base_entry, base_hash, merged, dtype, fmt, base_sha)
    stage(f"writing {out_path.name}")
    with op.output(out_path, overwrite=overwrite, tag="merge", before_swap=before_swap, error=MergeError) as temp:
        _write(work, family, temp, fmt, record, base_entry)
    op.finish()
    return out_path


def _by_adapter(loras) -> dict[str, tuple[LoraInfo, float, float]]:
    """PEFT adapter name -> (hashed info, U-Net weight, text-encoder weight); the same file twice adds up
    (as in ``LoraPatcher.apply``)."""
    from modules.lora.patcher import adapter_name

    out: dict[str, tuple[LoraInfo, float, float]] = {}
    for info, u, t in loras:
        a = adapter_name(info)
        if a in out:
            out[a] = (out[a][0], out[a][1] + u, out[a][2] + t)
        else:
            out[a] = (info, u, t)
    return out


def _adapters_in(model) -> set[str]:
    return set(getattr(model, "peft_config", None) or {})


def _load_adapters(work, family: Family, components: Sequence[str], wanted: dict, patcher, stage) -> None:
    """Make exactly ``wanted`` active on the working copy, with their weights.

    Adapters the live pipeline already had (copied along, sharing its LoRA tensors) are reused as they
    are (same file hash = same adapter); the others are loaded by the patcher."""
    from modules.lora.patcher import DENOISERS

    present = set().union(*(_adapters_in(getattr(work, c)) for c in components))
    missing = [(info, u, t) for a, (info, u, t) in wanted.items() if a not in present]
    for a, (info, _, _) in wanted.items():
        if a in present:
            stage(f"reusing loaded LoRA {info.name}")
    for i, (info, _, _) in enumerate(missing):
        stage(f"loading LoRA {info.name}")
        patcher.apply(work, family, missing[: i + 1])
    if present:
        work.enable_lora()  # the live patcher may have disabled its adapters
    weights = []
    for a, (_, u, t) in wanted.items():
        comps = [c for c in components if a in _adapters_in(getattr(work, c))]
        weights.append({c: (u if c in DENOISERS else t) for c in comps})
    work.set_adapters(list(wanted), adapter_weights=weights)


def _write(work, family: Family, temp: Path, fmt: str, record: dict, base_entry: ModelEntry) -> None:
    """Write the merged model to ``temp`` (a file, or a diffusers folder with its ``visage_merge.json``)."""
    from modules.checkpoints.single_file import save_single_file

    if fmt == ModelFormat.SINGLE_FILE:
        comps = _zimage_file_components(base_entry) if family is Family.ZIMAGE else None
        save_single_file(work, family, temp, {MERGE_KEY: json.dumps(record)}, components=comps)
    else:
        work.save_pretrained(str(temp), safe_serialization=True)
        (temp / SIDECAR_NAME).write_text(json.dumps(record, indent=1), encoding="utf-8")
