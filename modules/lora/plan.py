"""Planning a LoRA load: the file's tensors -> one PEFT state dict and LoraConfig per pipeline component.

* SD 1.5 / SDXL (:func:`plan_sd`), kohya and diffusers/PEFT: layers are matched by :mod:`modules.lora.keymap`;
  each layer keeps its own alpha (``rank_pattern``/``alpha_pattern``; diffusers' converter loses per-layer
  alphas when they differ, and fails on text-encoder LoRAs without ``out_proj``); diffusers' own metadata
  (rank/alpha) is used as is when present. cloneofsimo files are scale 1 (no alpha).
* Z-Image (:func:`plan_zimage`): diffusers' converter (``ZImagePipeline.lora_state_dict``: ``diffusion_model.``,
  kohya ``lora_unet_``, dotted and fused-qkv variants, LoKr), then unmatched layers are dropped.

Layers that match no module are listed in ``Plan.unmatched``; layers whose shapes do not fit, in
``Plan.mismatched``.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch

from modules.checkpoints.lora_keys import adapter_metadata
from modules.lora.formats import LoraError, LoraFormat, LoraInfo
from modules.lora.keymap import (
    TEXT_ENCODERS, Layer, cloneofsimo_layers, collect_layers, diffusers_target, fit, in_out, kohya_map, lora_modules,
)


@dataclass
class Plan:
    """What will be loaded: per component, a PEFT state dict (keys prefixed with the component)."""

    state_dicts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    configs: dict[str, dict | None] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    matched: int = 0
    notes: list[str] = field(default_factory=list)


def component_metadata(metadata: dict[str, str], comp: str) -> dict | None:
    """diffusers' saved LoraConfig of one component (keys without the ``component.`` prefix), if any."""
    doc = adapter_metadata(metadata)
    sub = {k[len(comp) + 1:]: v for k, v in doc.items() if k.startswith(comp + ".")}
    return sub or None


def lora_config(layers: dict[str, Layer]) -> dict:
    """LoraConfig kwargs reproducing each layer's rank and alpha exactly."""
    ranks = {m: int(l.down.shape[0]) for m, l in layers.items()}
    alphas = {m: (l.alpha if l.alpha is not None else float(ranks[m])) for m, l in layers.items()}
    r = collections.Counter(ranks.values()).most_common(1)[0][0]
    alpha = collections.Counter(alphas.values()).most_common(1)[0][0]
    return {
        "r": r,
        "lora_alpha": alpha,
        "rank_pattern": {f"^{m}": v for m, v in ranks.items() if v != r},
        "alpha_pattern": {f"^{m}": v for m, v in alphas.items() if v != alpha},
        "target_modules": sorted(layers),
        "use_dora": any("lora_magnitude_vector" in l.extra for l in layers.values()),
        "lora_bias": any("lora_B.bias" in l.extra for l in layers.values()),
    }


def plan_sd(pipe, components, info: LoraInfo, sd, metadata) -> Plan:
    tables = {c: lora_modules(getattr(pipe, c)) for c in components}
    plan = Plan()
    targets: dict[tuple[str, str], Layer] = {}
    if info.format == LoraFormat.CLONEOFSIMO:
        targets, plan.unmatched = cloneofsimo_layers(pipe, sd, tables)
    else:
        layers, stray = collect_layers(sd)
        if stray:
            raise LoraError(f"LoRA '{info.name}': unexpected keys (e.g. {', '.join(stray[:3])})")
        kohya = kohya_map(pipe, components, tables) if info.format == LoraFormat.KOHYA else None
        for module, layer in layers.items():
            if layer.down is None or layer.up is None:
                if layer.down is None and layer.up is None and layer.alpha is not None:
                    continue  # an alpha without weights: nothing to apply
                raise LoraError(f"LoRA '{info.name}': layer {module} lacks its down or up weight")
            target = kohya.get(module) if kohya is not None else diffusers_target(module, tables, components)
            if target is None:
                plan.unmatched.append(module)
            else:
                targets[target] = layer
    by_comp: dict[str, dict[str, Layer]] = {}
    for (comp, module), layer in targets.items():
        base = tables[comp][module]
        down, up = fit(layer.down, base), fit(layer.up, base)
        if (down.shape[1], up.shape[0]) != in_out(base):
            plan.mismatched.append(f"{comp}.{module}: LoRA {down.shape[1]}->{up.shape[0]}, "
                                   f"model {in_out(base)[0]}->{in_out(base)[1]}")
            continue
        by_comp.setdefault(comp, {})[module] = Layer(down, up, layer.alpha, layer.extra)
    for comp in components:  # keep the pipeline's component order
        layers = by_comp.get(comp)
        if not layers:
            continue
        state = {}
        # Text encoders get diffusers' "lora_linear_layer" names: its text-encoder loader infers the
        # key style from q/k/v/out_proj keys and fails on PEFT-style files that only touch mlp layers.
        down, up = ((".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight") if comp in TEXT_ENCODERS
                    else (".lora_A.weight", ".lora_B.weight"))
        for module, layer in layers.items():
            state[f"{comp}.{module}{down}"] = layer.down
            state[f"{comp}.{module}{up}"] = layer.up
            for suffix, tensor in layer.extra.items():
                state[f"{comp}.{module}.{suffix}"] = tensor
        plan.state_dicts[comp] = state
        plan.configs[comp] = component_metadata(metadata, comp) or lora_config(layers)
        plan.matched += len(layers)
    return plan


def plan_zimage(pipe, info: LoraInfo, sd, metadata) -> Plan:
    converted = type(pipe).lora_state_dict(dict(sd))
    if isinstance(converted, tuple):
        converted = converted[0]
    table = lora_modules(pipe.transformer)
    plan = Plan()
    modules: dict[str, dict[str, torch.Tensor]] = collections.OrderedDict()
    for key, tensor in converted.items():
        path = key if key.startswith("transformer.") else "transformer." + key.removeprefix("diffusion_model.")
        rest = path[len("transformer."):]
        cut = min((i for i in (rest.find(".lora_"), rest.find(".lokr_")) if i >= 0), default=-1)
        module = rest[:cut] if cut >= 0 else rest
        modules.setdefault(module, {})[rest[len(module) + 1:] if cut >= 0 else ""] = tensor
    state = {}
    for module, params in modules.items():
        base = table.get(module)
        if base is None or "" in params:
            plan.unmatched.append(module)
            continue
        a, b = params.get("lora_A.weight"), params.get("lora_B.weight")
        if a is not None and b is not None and (a.shape[-1], b.shape[0]) != in_out(base):
            plan.mismatched.append(f"transformer.{module}: LoRA {a.shape[-1]}->{b.shape[0]}, "
                                   f"model {in_out(base)[0]}->{in_out(base)[1]}")
            continue
        for suffix, tensor in params.items():
            state[f"transformer.{module}.{suffix}"] = tensor
        plan.matched += 1
    if state:
        plan.state_dicts["transformer"] = state
        plan.configs["transformer"] = component_metadata(metadata, "transformer")
    return plan
