"""The one LoRA fuse: add LoRAs into a pipeline's own weights, for merge-and-save and the edge build.

:func:`fuse_loras` applies the LoRAs with :class:`~modules.lora.patcher.LoraPatcher` (every format the
patcher reads, with the same per-layer alphas; adapters already on the pipeline are reused, not read
again), sets their weights with ``set_adapters``, then adds the deltas into the base layers
(:func:`fuse_adapters`, what ``fuse_lora(lora_scale=1)`` computes) and removes the adapters: the state
dict afterwards holds no LoRA keys.

The fused layers get new float32 weight tensors; the tensors they had before are never written to, so a
working copy that shares them with a live pipeline (:mod:`modules.lora.merge`) leaves that pipeline as it
was. Cast the result afterwards when another dtype is wanted. Torch-free at import.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from modules.families import Family
from modules.lora.formats import LoraError, LoraInfo, check_compatible

Stage = Callable[[str], None]


@dataclass
class FuseReport:
    """What was fused: each LoRA file once (hashed; the same file twice adds its weights up)."""

    loras: list[tuple[LoraInfo, float, float]] = field(default_factory=list)  # (info, U-Net/DiT, TE weight)
    components: list[str] = field(default_factory=list)  # pipeline components changed
    layers: int = 0  # layers changed

    def records(self) -> list[dict]:
        """``{name, hash, unet_weight, te_weight}`` per LoRA (as edge manifests record them)."""
        return [{"name": i.name, "hash": i.hash or "", "unet_weight": u, "te_weight": t} for i, u, t in self.loras]


def group_loras(loras: Sequence[tuple[LoraInfo, float, float]], family: Family | str,
                hash_cache=None) -> dict[str, tuple[LoraInfo, float, float]]:
    """The LoRAs with a non-zero weight, checked against ``family``, hashed and keyed by adapter name."""
    from modules.lora.scan import ensure_hashes

    wanted = [(info, float(u), float(t)) for info, u, t in loras if float(u) != 0.0 or float(t) != 0.0]
    for info, _, _ in wanted:
        check_compatible(info, family)
    return by_adapter([(ensure_hashes(info, hash_cache), u, t) for info, u, t in wanted])


def fuse_loras(pipe, family: Family | str, loras: Sequence[tuple[LoraInfo, float, float]], *, patcher=None,
               hash_cache=None, stage: Stage | None = None) -> FuseReport:
    """Fuse ``loras`` ((info, U-Net/DiT weight, text-encoder weight), as for ``LoraPatcher.apply``) into
    ``pipe``'s own modules. ``stage(label)`` is called before loading each LoRA and before fusing.
    Weight-0 LoRAs are skipped. Raises LoraError (a LoRA that does not fit, or layers left unfused)."""
    import torch

    from modules.lora.keymap import FAMILY_COMPONENTS
    from modules.lora.patcher import LoraPatcher

    family = Family(family)
    stage = stage or (lambda label: None)
    cache = hash_cache if hash_cache is not None else getattr(patcher, "hash_cache", None)
    wanted = group_loras(loras, family, cache)
    if not wanted:
        return FuseReport()
    components = [c for c in FAMILY_COMPONENTS[family] if getattr(pipe, c, None) is not None]
    patcher = patcher if patcher is not None else LoraPatcher(hash_cache=cache)
    report = FuseReport(loras=list(wanted.values()))
    with torch.no_grad():
        _load_adapters(pipe, family, components, wanted, patcher, stage)
        stage("fusing")
        names = list(wanted)
        report.components = [c for c in components if set(names) & _adapters_in(getattr(pipe, c))]
        report.layers = sum(fuse_adapters(getattr(pipe, c), names) for c in report.components)
        pipe.unload_lora_weights()
    leftovers = [c for c in components if tuner_layers(getattr(pipe, c))]
    if leftovers:
        raise LoraError(f"LoRA layers remained in {', '.join(leftovers)} after fusing")
    return report


def by_adapter(loras) -> dict[str, tuple[LoraInfo, float, float]]:
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


def _load_adapters(work, family: Family, components: Sequence[str], wanted: dict, patcher,
                   stage: Stage) -> None:
    """Make exactly ``wanted`` active on ``work``, with their weights.

    Adapters ``work`` already has (a working copy shares the live pipeline's, same file hash = same adapter)
    are reused as they are; the others are loaded by the patcher."""
    from modules.lora.keymap import DENOISERS

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


def tuner_layers(model):
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


def fuse_adapters(model, adapters: Sequence[str]) -> int:
    """Add the listed adapters into the base layers of ``model`` (each scaled as ``set_adapters`` left it),
    writing into new float32 tensors, never into the ones shared with the live pipeline.

    Plain LoRA layers: the first adapter is one out-of-place ``addmm`` (the new weight), further ones
    in-place ``addmm_`` (PEFT's merge, i.e. ``fuse_lora``, would also clone the weight and build two
    full-size temporaries per layer: several seconds on SD1.5). Anything else (DoRA, LoKr, LoRA bias,
    grouped convolutions): a private float32 copy, then PEFT's own ``merge``. Returns the layers changed."""
    import torch

    changed = 0
    for layer in tuner_layers(model):
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
