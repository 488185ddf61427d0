"""Apply LoRAs to a loaded diffusers pipeline, reversibly, with diffusers/PEFT doing the injection.

Each LoRA file becomes one PEFT adapter named after its sha256 (``lora_<16 hex>``), loaded once and
kept resident (up to ``max_resident``) so that changing weights or switching between LoRAs already
seen is only a ``set_adapters`` call: no file is read and the base model is never reloaded. When no
LoRA is wanted the adapters are disabled (PEFT then returns the base layer's output unchanged, so the
image is bit-identical to the one made before any LoRA); ``unload_all`` removes them completely.

How keys reach the modules (what diffusers does is noted where it differs):

* SD 1.5 / SDXL, kohya: key names are matched against the pipeline's own modules (diffusers names and
  the original sgm ``input_blocks``/``middle_block``/``output_blocks`` names, both ``_``-joined), each
  layer keeps its own alpha (diffusers' converter loses per-layer alphas when they differ, and fails on
  text-encoder LoRAs without ``out_proj``), then diffusers/PEFT inject them with an explicit LoraConfig.
* SD 1.5 / SDXL, diffusers/PEFT: same, with diffusers' own metadata (rank/alpha) used as is when present.
* cloneofsimo lora_diffusion (SD 1.5): module *i* is the *i*-th Linear lora_diffusion patched, in its
  order (per transformer block attn1 q,k,v,out, ff GEGLU proj, attn2 q,k,v,out; down, up, then mid
  blocks; CLIP attention k,v,q,out), checked shape by shape. Scale 1 (no alpha). Embedded
  textual-inversion tokens are not loaded.
* Z-Image: diffusers' converter (``ZImagePipeline.lora_state_dict``: ``diffusion_model.``, kohya
  ``lora_unet_``, dotted and fused-qkv variants, LoKr), then unmatched layers are dropped and the rest
  loaded into the transformer.

Layers that match no module are left out and reported (``ApplyReport.unmatched_*``). A LoRA that
matches nothing, or whose layer shapes do not fit, raises ``LoraError``.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from modules.families import Family
from modules.lora.formats import (
    FAMILY_LABELS, LoraError, LoraFormat, LoraInfo, check_compatible, split_key, with_hashes,
)
from modules.lora.scan import lora_hashes
from modules.messages import Message

log = logging.getLogger(__name__)

DENOISERS = ("unet", "transformer")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
FAMILY_COMPONENTS: dict[Family, tuple[str, ...]] = {
    Family.SD15: ("unet", "text_encoder"),
    Family.SDXL: ("unet", "text_encoder", "text_encoder_2"),
    Family.ZIMAGE: ("transformer",),
}
MAX_EXAMPLES = 5
ADAPTER_PREFIX = "lora_"


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AppliedLora:
    """One LoRA active on the pipeline."""

    name: str
    hash: str  # A1111 short hash (12 hex)
    adapter: str  # PEFT adapter name
    unet_weight: float
    te_weight: float
    text_encoders: tuple[str, ...]  # text-encoder components it has layers in

    @property
    def touches_text_encoder(self) -> bool:
        return bool(self.text_encoders) and self.te_weight != 0.0


@dataclass
class ApplyReport:
    applied: list[str] = field(default_factory=list)  # names of the LoRAs now active
    unmatched_count: int = 0  # LoRA layers (down/up pairs) of the active LoRAs that matched no module
    unmatched_examples: list[str] = field(default_factory=list)
    active: list[AppliedLora] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)  # read from disk by this call
    reused: list[str] = field(default_factory=list)  # already resident, only re-weighted
    skipped: list[str] = field(default_factory=list)  # requested with both weights 0
    notes: list[str] = field(default_factory=list)

    @property
    def text_encoder_state(self) -> list[tuple[str, str, float]]:
        return text_encoder_state(self.active)


def text_encoder_state(applied: Sequence[AppliedLora]) -> list[tuple[str, str, float]]:
    """``(name, hash, te_weight)`` of the active LoRAs that change the text encoder(s), in the order
    they are applied. Empty means prompt embeddings equal the base model's (a cache key)."""
    return [(a.name, a.hash, a.te_weight) for a in applied if a.touches_text_encoder]


def adapter_name(info: LoraInfo) -> str:
    """PEFT adapter name of a LoRA file: from the whole-file sha256, because metadata (diffusers'
    rank/alpha) changes what a file does while the A1111 (data-only) hash stays the same."""
    if not info.sha256:
        raise ValueError("LoraInfo has no sha256 yet")
    return ADAPTER_PREFIX + info.sha256[:16]


# ---------------------------------------------------------------------------------------------
# reading and planning
# ---------------------------------------------------------------------------------------------

def read_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (on CPU) and the metadata of a LoRA safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        return {k: f.get_tensor(k) for k in f.keys()}, dict(metadata)


@dataclass
class _Layer:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # PEFT suffix -> tensor


@dataclass
class _Plan:
    """What will be loaded: per component, a PEFT state dict (keys prefixed with the component)."""

    state_dicts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    configs: dict[str, dict | None] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    matched: int = 0
    notes: list[str] = field(default_factory=list)


def _lora_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
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


def _in_out(module: torch.nn.Module) -> tuple[int, int]:
    if isinstance(module, torch.nn.Conv2d):
        return module.in_channels, module.out_channels
    return module.in_features, module.out_features


def _fit(tensor: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """2-D <-> 1x1-conv layout, as the target module needs."""
    if isinstance(module, torch.nn.Conv2d) and tensor.ndim == 2:
        return tensor[:, :, None, None]
    if isinstance(module, torch.nn.Linear) and tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        return tensor[:, :, 0, 0]
    return tensor


# --- kohya / sgm names -------------------------------------------------------------------------

_RESNET_SGM = ((".conv1", ".in_layers.2"), (".time_emb_proj", ".emb_layers.1"), (".conv2", ".out_layers.3"),
               (".conv_shortcut", ".skip_connection"))


def _sgm_prefixes(unet) -> dict[str, str]:
    """diffusers module-name prefix -> original (sgm/LDM) prefix for a UNet2DConditionModel."""
    out = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
           "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
           "add_embedding.linear_2": "label_emb.0.2", "conv_out": "out.2"}
    idx = 1
    for i, block in enumerate(unet.down_blocks):
        n = len(block.resnets)
        for j in range(n):
            out[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{idx + j}.0"
            if getattr(block, "attentions", None) is not None and j < len(block.attentions):
                out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{idx + j}.1"
        idx += n
        if getattr(block, "downsamplers", None):
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{idx}.0.op"
            idx += 1
    mid = getattr(unet, "mid_block", None)
    if mid is not None:
        out["mid_block.resnets.0"] = "middle_block.0"
        if getattr(mid, "attentions", None):
            out["mid_block.attentions.0"] = "middle_block.1"
            out["mid_block.resnets.1"] = "middle_block.2"
    idx = 0
    for i, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        has_attn = getattr(block, "attentions", None) is not None
        for j in range(n):
            out[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{idx + j}.0"
            if has_attn and j < len(block.attentions):
                out[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{idx + j}.1"
        if getattr(block, "upsamplers", None):
            out[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{idx + n - 1}.{2 if has_attn else 1}.conv"
        idx += n
    return out


def _sgm_name(name: str, prefixes: dict[str, str]) -> str | None:
    for dprefix in sorted(prefixes, key=len, reverse=True):
        if name == dprefix or name.startswith(dprefix + "."):
            rest = name[len(dprefix):]
            if ".resnets." in dprefix + "." or dprefix.startswith("mid_block.resnets"):
                for old, new in _RESNET_SGM:
                    if rest == old:
                        rest = new
            return prefixes[dprefix] + rest
    return None


def _kohya_map(pipe, components: Sequence[str], tables: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """kohya module name (``lora_unet_...``, ``lora_te1_...``) -> (component, module name)."""
    mapping: dict[str, tuple[str, str]] = {}
    if "unet" in components:
        prefixes = _sgm_prefixes(pipe.unet)
        for name in tables["unet"]:
            mapping["lora_unet_" + name.replace(".", "_")] = ("unet", name)
            sgm = _sgm_name(name, prefixes)
            if sgm:
                mapping.setdefault("lora_unet_" + sgm.replace(".", "_"), ("unet", name))
    te_prefixes = {"text_encoder": ("lora_te_", "lora_te1_"), "text_encoder_2": ("lora_te2_",)}
    for comp in components:
        if comp not in TEXT_ENCODERS:
            continue
        for name in tables[comp]:
            bare = name.removeprefix("text_model.")
            for p in te_prefixes[comp]:
                mapping.setdefault(p + "text_model_" + bare.replace(".", "_"), (comp, name))
                mapping.setdefault(p + bare.replace(".", "_"), (comp, name))
    return mapping


def _collect_layers(sd: dict[str, torch.Tensor]) -> tuple[dict[str, _Layer], list[str]]:
    """Group keys by LoRA layer (module path as written in the file)."""
    layers: dict[str, _Layer] = collections.OrderedDict()
    stray: list[str] = []
    for key, tensor in sd.items():
        module, kind = split_key(key)
        layer = layers.setdefault(module, _Layer())
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


_LEGACY_TE = ((".to_q", ".q_proj"), (".to_k", ".k_proj"), (".to_v", ".v_proj"), (".to_out", ".out_proj"))


def _diffusers_target(module: str, tables: dict[str, dict], components: Sequence[str]) -> tuple[str, str] | None:
    """(component, module) for a diffusers/PEFT-format layer path (with or without a component prefix)."""
    path = module.removeprefix("base_model.model.")
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
            for old, new in _LEGACY_TE:
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


# --- cloneofsimo ------------------------------------------------------------------------------

_CLONEOFSIMO_KEY = re.compile(r"^(unet|text_encoder):(\d+):(up|down)$")
_LEGACY_ATTN = ("to_q", "to_k", "to_v", "to_out.0")


def _cloneofsimo_orders(unet) -> list[list[str]]:
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


def _cloneofsimo_te_order(table: dict[str, torch.nn.Module]) -> list[str]:
    layers = sorted({int(m.group(1)) for n in table if (m := re.search(r"encoder\.layers\.(\d+)\.self_attn\.", n))})
    out = []
    for i in layers:
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            name = next((n for n in table if n.endswith(f"encoder.layers.{i}.self_attn.{p}")), None)
            if name:
                out.append(name)
    return out


def _fits(order: list[str], entries: dict[int, _Layer], table: dict[str, torch.nn.Module]) -> bool:
    if len(order) != len(entries) or set(entries) != set(range(len(order))):
        return False
    for i, name in enumerate(order):
        layer, module = entries[i], table.get(name)
        if module is None or layer.down is None or layer.up is None:
            return False
        if (layer.down.shape[-1], layer.up.shape[0]) != _in_out(module):
            return False
    return True


def _cloneofsimo_layers(pipe, sd, tables) -> tuple[dict[tuple[str, str], _Layer], list[str]]:
    parts: dict[str, dict[int, _Layer]] = {"unet": {}, "text_encoder": {}}
    for key, tensor in sd.items():
        m = _CLONEOFSIMO_KEY.match(key)
        if not m:
            continue  # textual-inversion tokens: not loaded (noted by formats)
        layer = parts[m.group(1)].setdefault(int(m.group(2)), _Layer())
        if m.group(3) == "down":
            layer.down = tensor
        else:
            layer.up = tensor
    out: dict[tuple[str, str], _Layer] = {}
    unmatched: list[str] = []
    if parts["unet"]:
        order = next((o for o in _cloneofsimo_orders(pipe.unet) if _fits(o, parts["unet"], tables["unet"])), None)
        if order is None:
            raise LoraError("cloneofsimo lora_diffusion (2022) LoRA does not fit this U-Net: its "
                            f"{len(parts['unet'])} layers do not line up with the model's attention layers; "
                            "convert it to a kohya LoRA made for this model")
        out.update({("unet", name): parts["unet"][i] for i, name in enumerate(order)})
    if parts["text_encoder"]:
        order = _cloneofsimo_te_order(tables["text_encoder"])
        if not _fits(order, parts["text_encoder"], tables["text_encoder"]):
            raise LoraError("cloneofsimo lora_diffusion (2022) LoRA does not fit this text encoder")
        out.update({("text_encoder", name): parts["text_encoder"][i] for i, name in enumerate(order)})
    return out, unmatched


# --- building ---------------------------------------------------------------------------------

def _component_metadata(metadata: dict[str, str], comp: str) -> dict | None:
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    sub = {k[len(comp) + 1:]: v for k, v in doc.items() if k.startswith(comp + ".")}
    return sub or None


def _lora_config(layers: dict[str, _Layer]) -> dict:
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


def _plan_sd(pipe, components, info: LoraInfo, sd, metadata) -> _Plan:
    tables = {c: _lora_modules(getattr(pipe, c)) for c in components}
    plan = _Plan()
    targets: dict[tuple[str, str], _Layer] = {}
    if info.format == LoraFormat.CLONEOFSIMO:
        targets, plan.unmatched = _cloneofsimo_layers(pipe, sd, tables)
    else:
        layers, stray = _collect_layers(sd)
        if stray:
            raise LoraError(f"LoRA '{info.name}': unexpected keys (e.g. {', '.join(stray[:3])})")
        kohya = _kohya_map(pipe, components, tables) if info.format == LoraFormat.KOHYA else None
        for module, layer in layers.items():
            if layer.down is None or layer.up is None:
                if layer.down is None and layer.up is None and layer.alpha is not None:
                    continue  # an alpha without weights: nothing to apply
                raise LoraError(f"LoRA '{info.name}': layer {module} lacks its down or up weight")
            target = kohya.get(module) if kohya is not None else _diffusers_target(module, tables, components)
            if target is None:
                plan.unmatched.append(module)
            else:
                targets[target] = layer
    by_comp: dict[str, dict[str, _Layer]] = {}
    for (comp, module), layer in targets.items():
        base = tables[comp][module]
        down, up = _fit(layer.down, base), _fit(layer.up, base)
        if (down.shape[1], up.shape[0]) != _in_out(base):
            plan.mismatched.append(f"{comp}.{module}: LoRA {down.shape[1]}->{up.shape[0]}, "
                                   f"model {_in_out(base)[0]}->{_in_out(base)[1]}")
            continue
        by_comp.setdefault(comp, {})[module] = _Layer(down, up, layer.alpha, layer.extra)
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
        plan.configs[comp] = _component_metadata(metadata, comp) or _lora_config(layers)
        plan.matched += len(layers)
    return plan


def _plan_zimage(pipe, info: LoraInfo, sd, metadata) -> _Plan:
    converted = type(pipe).lora_state_dict(dict(sd))
    if isinstance(converted, tuple):
        converted = converted[0]
    table = _lora_modules(pipe.transformer)
    plan = _Plan()
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
        if a is not None and b is not None and (a.shape[-1], b.shape[0]) != _in_out(base):
            plan.mismatched.append(f"transformer.{module}: LoRA {a.shape[-1]}->{b.shape[0]}, "
                                   f"model {_in_out(base)[0]}->{_in_out(base)[1]}")
            continue
        for suffix, tensor in params.items():
            state[f"transformer.{module}.{suffix}"] = tensor
        plan.matched += 1
    if state:
        plan.state_dicts["transformer"] = state
        plan.configs["transformer"] = _component_metadata(metadata, "transformer")
    return plan


def _examples(items: Sequence[str]) -> list[str]:
    return list(items[:MAX_EXAMPLES])


# ---------------------------------------------------------------------------------------------
# the patcher
# ---------------------------------------------------------------------------------------------

@dataclass
class _Resident:
    adapter: str
    info: LoraInfo
    components: tuple[str, ...]
    unmatched: list[str]
    notes: list[str]
    last_used: int = 0

    @property
    def text_encoders(self) -> tuple[str, ...]:
        return tuple(c for c in self.components if c in TEXT_ENCODERS)


@dataclass
class _PipeState:
    family: Family
    resident: dict[str, _Resident] = field(default_factory=dict)
    active: list[AppliedLora] = field(default_factory=list)
    disabled: bool = False
    tick: int = 0


class LoraPatcher:
    """Keeps track of the LoRAs on each pipeline it has patched (pipelines are held weakly)."""

    def __init__(self, hash_cache=None, max_resident: int = 8):
        self.hash_cache = hash_cache
        self.max_resident = max(1, int(max_resident))
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._hash_memo: dict[tuple[str, int, int], tuple[str, str]] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def _state(self, pipe, family: Family) -> _PipeState:
        state = self._states.get(pipe)
        if state is None or state.family != family:
            for comp in FAMILY_COMPONENTS[family]:
                if getattr(pipe, comp, None) is None and comp in DENOISERS:
                    raise LoraError(f"the loaded pipeline has no {comp}; is it really {FAMILY_LABELS[family]}?")
            state = _PipeState(family=family)
            self._states[pipe] = state
        return state

    def _hashed(self, info: LoraInfo) -> LoraInfo:
        if info.hash and info.sha256:
            return info
        st = os.stat(info.path)
        key = (os.path.realpath(info.path), st.st_size, st.st_mtime_ns)
        if key not in self._hash_memo:
            h = lora_hashes(info.path, self.hash_cache)
            self._hash_memo[key] = (h.sha256, h.addnet_sha256)
        sha, addnet = self._hash_memo[key]
        return with_hashes(info, sha, addnet)

    def active(self, pipe) -> list[AppliedLora]:
        state = self._states.get(pipe)
        return list(state.active) if state else []

    def resident(self, pipe) -> list[str]:
        """Adapter names loaded on ``pipe`` (active or not)."""
        state = self._states.get(pipe)
        return list(state.resident) if state else []

    def text_encoder_state(self, pipe) -> list[tuple[str, str, float]]:
        return text_encoder_state(self.active(pipe))

    # -- loading -------------------------------------------------------------------------------
    def _load(self, pipe, state: _PipeState, info: LoraInfo, adapter: str) -> _Resident:
        components = FAMILY_COMPONENTS[state.family]
        components = tuple(c for c in components if getattr(pipe, c, None) is not None)
        try:
            sd, metadata = read_lora_file(info.path)
        except (OSError, RuntimeError, ValueError) as exc:
            raise LoraError(f"LoRA '{info.name}' cannot be read: {exc}") from None
        try:
            if state.family == Family.ZIMAGE:
                plan = _plan_zimage(pipe, info, sd, metadata)
            else:
                plan = _plan_sd(pipe, components, info, sd, metadata)
        except LoraError:
            raise
        except (ValueError, KeyError, RuntimeError, IndexError) as exc:
            raise LoraError(f"LoRA '{info.name}' could not be converted: {exc}") from None
        label = FAMILY_LABELS[state.family]
        if plan.mismatched:
            raise LoraError(f"LoRA '{info.name}' does not fit this {label} model: {len(plan.mismatched)} layers "
                            f"have other sizes (e.g. {plan.mismatched[0]})")
        if plan.matched == 0:
            ex = ", ".join(_examples(plan.unmatched))
            raise LoraError(f"LoRA '{info.name}' matches no layer of this {label} model "
                            f"({len(plan.unmatched)} layers unmatched, e.g. {ex})")
        loaded: list[str] = []
        try:
            with warnings.catch_warnings():
                # PEFT warns whenever a second adapter joins a model; resident adapters are the point here
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                self._inject(pipe, plan, adapter, loaded)
        except Exception as exc:
            self._delete(pipe, adapter, loaded)
            raise LoraError(f"LoRA '{info.name}' could not be loaded: {exc}") from exc
        notes = list(info.notes)
        return _Resident(adapter=adapter, info=info, components=tuple(loaded), unmatched=plan.unmatched,
                         notes=notes)

    @staticmethod
    def _inject(pipe, plan: _Plan, adapter: str, loaded: list[str]) -> None:
        """Hand each component's state dict to diffusers/PEFT; ``loaded`` lists the components done."""
        for comp, state_dict in plan.state_dicts.items():
            model = getattr(pipe, comp)
            config = plan.configs.get(comp)
            # diffusers strips "<component>." from metadata keys as it does from weight keys
            config = {f"{comp}.{k}": v for k, v in config.items()} if config else None
            if comp in DENOISERS:
                model.load_lora_adapter(state_dict, prefix=comp, adapter_name=adapter,
                                        metadata=config, _pipeline=pipe)
            else:
                pipe.load_lora_into_text_encoder(state_dict, network_alphas=None, text_encoder=model,
                                                 prefix=comp, lora_scale=1.0, adapter_name=adapter,
                                                 _pipeline=pipe, metadata=config)
            loaded.append(comp)

    @staticmethod
    def _delete(pipe, adapter: str, components: Sequence[str]) -> None:
        from diffusers.utils.peft_utils import delete_adapter_layers

        for comp in components:
            model = getattr(pipe, comp, None)
            if model is None:
                continue
            if comp in DENOISERS:
                if adapter in getattr(model, "peft_config", {}):
                    model.delete_adapters([adapter])
            else:
                delete_adapter_layers(model, adapter)

    def _evict(self, pipe, state: _PipeState, keep: set[str]) -> None:
        spare = sorted((r for a, r in state.resident.items() if a not in keep), key=lambda r: r.last_used)
        while len(state.resident) > self.max_resident and spare:
            victim = spare.pop(0)
            self._delete(pipe, victim.adapter, victim.components)
            del state.resident[victim.adapter]

    # -- public API ----------------------------------------------------------------------------
    def apply(self, pipe, family: Family | str,
              loras: Sequence[tuple[LoraInfo, float, float]]) -> ApplyReport:
        """Make exactly ``loras`` (info, unet/DiT weight, text-encoder weight) active on ``pipe``.

        Same file twice: weights add up. Weight 0 for both: not active. Raises LoraError (nothing
        changed for LoRAs that were already active) when a LoRA cannot be used on this model."""
        family = Family(family)
        state = self._state(pipe, family)
        wanted: dict[str, list] = collections.OrderedDict()
        for info, unet_w, te_w in loras:
            check_compatible(info, family)
            info = self._hashed(info)
            a = adapter_name(info)
            if a in wanted:
                wanted[a][1] += float(unet_w)
                wanted[a][2] += float(te_w)
            else:
                wanted[a] = [info, float(unet_w), float(te_w)]
        report = ApplyReport()
        active = [(a, *v) for a, v in wanted.items() if v[1] != 0.0 or v[2] != 0.0]
        report.skipped = [v[0].name for v in wanted.values() if v[1] == 0.0 and v[2] == 0.0]

        try:
            for a, info, _, _ in active:
                state.tick += 1
                if a in state.resident:
                    report.reused.append(info.name)
                else:
                    state.resident[a] = self._load(pipe, state, info, a)
                    report.loaded.append(info.name)
                state.resident[a].last_used = state.tick
        except LoraError:
            self._activate(pipe, state, state.active)  # loading may have switched adapters on: undo
            raise
        self._evict(pipe, state, {a for a, *_ in active})

        applied: list[AppliedLora] = []
        for a, info, unet_w, te_w in active:
            res = state.resident[a]
            applied.append(AppliedLora(name=info.name, hash=info.hash or "", adapter=a, unet_weight=unet_w,
                                       te_weight=te_w, text_encoders=res.text_encoders))
            report.unmatched_count += len(res.unmatched)
            report.unmatched_examples += [f"{info.name}: {m}" for m in res.unmatched]
            report.notes += [Message("note.lora", lora=info.name, note=n) for n in res.notes]
        report.unmatched_examples = _examples(report.unmatched_examples)

        self._activate(pipe, state, applied)
        report.active = applied
        report.applied = [x.name for x in applied]
        return report

    @staticmethod
    def _activate(pipe, state: _PipeState, applied: list[AppliedLora]) -> None:
        """Make ``applied`` the active set: set_adapters with per-component weights, or disable all."""
        if not applied:
            if state.resident:
                pipe.disable_lora()
                state.disabled = True
        else:
            if state.disabled:
                pipe.enable_lora()
                state.disabled = False
            names = [x.adapter for x in applied]
            weights = [{c: (x.unet_weight if c in DENOISERS else x.te_weight)
                        for c in state.resident[x.adapter].components} for x in applied]
            pipe.set_adapters(names, adapter_weights=weights)
        state.active = list(applied)

    def clear(self, pipe) -> None:
        """No LoRA active (adapters stay resident for a quick return)."""
        state = self._states.get(pipe)
        if state is not None:
            self.apply(pipe, state.family, [])

    def unload_all(self, pipe) -> None:
        """Remove every adapter this patcher put on ``pipe``; the modules are the original ones again."""
        state = self._states.pop(pipe, None)
        if state is not None and state.resident:
            pipe.unload_lora_weights()
