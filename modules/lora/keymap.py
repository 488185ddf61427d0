"""Where each layer of a LoRA file goes: the pipeline modules a LoRA can patch, and the mapping from the
file's layer names (kohya, diffusers/PEFT, cloneofsimo's numbered layers) to (component, module).

The naming tables are in :mod:`modules.checkpoints.lora_keys`, the sgm block names in
:mod:`modules.checkpoints.layouts`. cloneofsimo lora_diffusion (SD 1.5): module *i* is the *i*-th Linear
lora_diffusion patched, in its order (per transformer block attn1 q,k,v,out, ff GEGLU proj, attn2
q,k,v,out; down, up, then mid blocks; CLIP attention k,v,q,out), checked shape by shape.
"""
from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from modules.checkpoints.layouts import original_unet_key, unet_block_prefixes
from modules.checkpoints.lora_keys import (
    CLONEOFSIMO_KEY, KOHYA_TE_BY_COMPONENT, KOHYA_UNET, LEGACY_TE, PEFT_WRAPPER, kohya_name, split_key,
)
from modules.families import Family
from modules.lora.formats import LoraError

DENOISERS = ("unet", "transformer")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
FAMILY_COMPONENTS: dict[Family, tuple[str, ...]] = {
    Family.SD15: ("unet", "text_encoder"),
    Family.SDXL: ("unet", "text_encoder", "text_encoder_2"),
    Family.ZIMAGE: ("transformer",),
}


@dataclass
class Layer:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # PEFT suffix -> tensor


def lora_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Module name -> the base layer a LoRA can patch (through any PEFT wrapper already there)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    table: dict[str, torch.nn.Module] = {}
    tuner_prefix = None
    for name, module in model.named_modules():
        if tuner_prefix is not None and name.startswith(tuner_prefix):
            continue
        if isinstance(module, BaseTunerLayer):
            table[name] = module.get_base_layer()
            tuner_prefix = name + "."
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            table[name] = module
    return table


def in_out(module: torch.nn.Module) -> tuple[int, int]:
    if isinstance(module, torch.nn.Conv2d):
        return module.in_channels, module.out_channels
    return module.in_features, module.out_features


def fit(tensor: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """2-D <-> 1x1-conv layout, as the target module needs."""
    if isinstance(module, torch.nn.Conv2d) and tensor.ndim == 2:
        return tensor[:, :, None, None]
    if isinstance(module, torch.nn.Linear) and tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        return tensor[:, :, 0, 0]
    return tensor



# --- kohya / diffusers names ------------------------------------------------------------------

def kohya_map(pipe, components: Sequence[str], tables: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """kohya module name (``lora_unet_...``, ``lora_te1_...``) -> (component, module name). U-Net modules are
    reachable by their diffusers name and by their original sgm name (the single-file block table)."""
    mapping: dict[str, tuple[str, str]] = {}
    if "unet" in components:
        blocks = unet_block_prefixes(pipe.unet.config)
        for name in tables["unet"]:
            mapping[kohya_name(KOHYA_UNET, name)] = ("unet", name)
            sgm = original_unet_key(name + ".", blocks)
            if sgm:
                mapping.setdefault(kohya_name(KOHYA_UNET, sgm.removesuffix(".")), ("unet", name))
    for comp in components:
        if comp not in TEXT_ENCODERS:
            continue
        for name in tables[comp]:
            bare = name.removeprefix("text_model.")
            for p in KOHYA_TE_BY_COMPONENT[comp]:
                mapping.setdefault(kohya_name(p, "text_model." + bare), (comp, name))
                mapping.setdefault(kohya_name(p, bare), (comp, name))
    return mapping


def collect_layers(sd: dict[str, torch.Tensor]) -> tuple[dict[str, Layer], list[str]]:
    """Group keys by LoRA layer (module path as written in the file)."""
    layers: dict[str, Layer] = collections.OrderedDict()
    stray: list[str] = []
    for key, tensor in sd.items():
        module, kind = split_key(key)
        layer = layers.setdefault(module, Layer())
        if kind in ("down", "A"):
            layer.down = tensor
        elif kind in ("up", "B"):
            layer.up = tensor
        elif kind == "alpha":
            layer.alpha = float(tensor.float().item())
        elif kind == "dora_peft":
            layer.extra["lora_magnitude_vector"] = tensor
        elif kind == "bias" and ".lora_B." in key:
            layer.extra["lora_B.bias"] = tensor
        else:
            stray.append(key)
    return layers, stray



def diffusers_target(module: str, tables: dict[str, dict], components: Sequence[str]) -> tuple[str, str] | None:
    """(component, module) for a diffusers/PEFT-format layer path (with or without a component prefix)."""
    path = module.removeprefix(PEFT_WRAPPER)
    comp = None
    for c in sorted(components, key=len, reverse=True):
        if path.startswith(c + "."):
            comp, path = c, path[len(c) + 1:]
            break
    candidates = [comp] if comp else list(components)
    for c in candidates:
        names = [path.replace(".processor.", ".")]
        if c in TEXT_ENCODERS:
            base = names[0]
            for old, new in LEGACY_TE:
                if base.endswith(old):
                    names.append(base[: -len(old)] + new)
            names += [n.removeprefix("text_model.") for n in names] + ["text_model." + n for n in names]
        else:
            if names[0].endswith(".to_out"):
                names.append(names[0] + ".0")
        for n in names:
            if n in tables.get(c, {}):
                return c, n
    return None


# --- cloneofsimo -----------------------------------------------------------------------------

_LEGACY_ATTN = ("to_q", "to_k", "to_v", "to_out.0")


def cloneofsimo_orders(unet) -> list[list[str]]:
    """Candidate orders of the Linear layers lora_diffusion patched in a U-Net."""
    blocks: list[str] = []
    for group in ("down_blocks", "up_blocks", "mid_block"):
        for name, module in unet.named_modules():
            if name.startswith(group + ".") and type(module).__name__ == "BasicTransformerBlock":
                blocks.append(name)
    attn = lambda b, a: [f"{b}.{a}.{p}" for p in _LEGACY_ATTN]  # noqa: E731
    old = [m for b in blocks for m in attn(b, "attn1") + [f"{b}.ff.net.0.proj"] + attn(b, "attn2")]
    new = [m for b in blocks for m in attn(b, "attn1") + attn(b, "attn2") + [f"{b}.ff.net.0.proj"]]
    return [old, new]


def cloneofsimo_te_order(table: dict[str, torch.nn.Module]) -> list[str]:
    layers = sorted({int(m.group(1)) for n in table if (m := re.search(r"encoder\.layers\.(\d+)\.self_attn\.", n))})
    out = []
    for i in layers:
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            name = next((n for n in table if n.endswith(f"encoder.layers.{i}.self_attn.{p}")), None)
            if name:
                out.append(name)
    return out


def fits_order(order: list[str], entries: dict[int, Layer], table: dict[str, torch.nn.Module]) -> bool:
    if len(order) != len(entries) or set(entries) != set(range(len(order))):
        return False
    for i, name in enumerate(order):
        layer, module = entries[i], table.get(name)
        if module is None or layer.down is None or layer.up is None:
            return False
        if (layer.down.shape[-1], layer.up.shape[0]) != in_out(module):
            return False
    return True


def cloneofsimo_layers(pipe, sd, tables) -> tuple[dict[tuple[str, str], Layer], list[str]]:
    parts: dict[str, dict[int, Layer]] = {"unet": {}, "text_encoder": {}}
    for key, tensor in sd.items():
        m = CLONEOFSIMO_KEY.match(key)
        if not m:
            continue  # textual-inversion tokens: not loaded (noted by formats)
        layer = parts[m.group(1)].setdefault(int(m.group(2)), Layer())
        if m.group(3) == "down":
            layer.down = tensor
        else:
            layer.up = tensor
    out: dict[tuple[str, str], Layer] = {}
    unmatched: list[str] = []
    if parts["unet"]:
        order = next((o for o in cloneofsimo_orders(pipe.unet) if fits_order(o, parts["unet"], tables["unet"])), None)
        if order is None:
            raise LoraError("cloneofsimo lora_diffusion (2022) LoRA does not fit this U-Net: its "
                            f"{len(parts['unet'])} layers do not line up with the model's attention layers; "
                            "convert it to a kohya LoRA made for this model")
        out.update({("unet", name): parts["unet"][i] for i, name in enumerate(order)})
    if parts["text_encoder"]:
        order = cloneofsimo_te_order(tables["text_encoder"])
        if not fits_order(order, parts["text_encoder"], tables["text_encoder"]):
            raise LoraError("cloneofsimo lora_diffusion (2022) LoRA does not fit this text encoder")
        out.update({("text_encoder", name): parts["text_encoder"][i] for i, name in enumerate(order)})
    return out, unmatched
