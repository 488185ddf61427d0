"""Apply LoRAs to a loaded diffusers pipeline, reversibly, with diffusers/PEFT doing the injection.

Each LoRA file becomes one PEFT adapter named after its sha256 (``lora_<16 hex>``), loaded once and
kept resident (up to ``max_resident``) so that changing weights or switching between LoRAs already
seen is only a ``set_adapters`` call: no file is read and the base model is never reloaded. When no
LoRA is wanted the adapters are disabled (PEFT then returns the base layer's output unchanged, so the
image is bit-identical to the one made before any LoRA); ``unload_all`` removes them completely.

How a file's layers reach the modules is planned by :mod:`modules.lora.plan` (per-layer alphas, diffusers'
metadata, Z-Image through diffusers' converter), with the key mapping of :mod:`modules.lora.keymap`
(kohya and sgm names, diffusers/PEFT names, cloneofsimo's numbered layers).

Layers that match no module are left out and reported (``ApplyReport.unmatched_*``). A LoRA that
matches nothing, or whose layer shapes do not fit, raises ``LoraError``.
"""
from __future__ import annotations

import collections
import logging
import os
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from modules.families import Family
from modules.lora.formats import FAMILY_LABELS, LoraError, LoraInfo, check_compatible, with_hashes
from modules.lora.keymap import DENOISERS, FAMILY_COMPONENTS, TEXT_ENCODERS
from modules.lora.plan import Plan, plan_sd, plan_zimage
from modules.lora.scan import lora_hashes
from modules.messages import Message

log = logging.getLogger(__name__)

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
                plan = plan_zimage(pipe, info, sd, metadata)
            else:
                plan = plan_sd(pipe, components, info, sd, metadata)
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
    def _inject(pipe, plan: Plan, adapter: str, loaded: list[str]) -> None:
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
