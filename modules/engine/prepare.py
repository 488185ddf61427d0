"""``Engine.prepare``: what was asked for, checked and resolved once, for the page, the API and the CLI alike.

A :class:`PreparedJob` is everything a generation job needs that can be known before it runs: the model
entry, the final request (preset, styles and family defaults applied, ``check_inputs`` passed), the LoRAs
resolved to files inside the LoRA folders and checked against the family, the backend that will run it and
the capability it uses, the decoder availability and the post-processors. Torch-free.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from modules.backends.base import BackendKind, Capability
from modules.backends.select import BackendInfo, backend_info
from modules.errors import InvalidRequest, UnsupportedCapability
from modules.generation.params import GenerationRequest
from modules.generation.prompting import resolve_prompts
from modules.lora import LoraInfo, check_compatible, find_lora, parse_prompt_loras
from modules.messages import Message
from modules.names import UnsafeField, check_name, inside
from modules.presets import PresetStore
from modules.registry.entry import ModelEntry

log = logging.getLogger(__name__)

#: (LoRA, U-Net weight, text-encoder weight)
LoraUse = tuple[LoraInfo, float, float]


@dataclass(frozen=True)
class PreparedJob:
    entry: ModelEntry
    request: GenerationRequest  # final prompts, family defaults filled, checked
    loras: tuple[LoraUse, ...]
    backend: BackendInfo
    capability: Capability
    postprocessors: tuple = ()  # modules.extensions.postprocess.Postprocessor


@dataclass
class Preparer:
    """The rules, built once by the engine. ``taesd_available(family)`` says whether TAESD weights are on disk
    or can be fetched now by the job that needs them (decided without a network call); ``taesd_missing(family)``
    says what is missing, where it goes, which command fetches it and why it is not fetched now."""

    presets: PresetStore
    styles_file: Path
    loras: Callable[[], Sequence[LoraInfo]]
    lora_roots: Callable[[], list[Path]]
    taesd_available: Callable[[object], bool]
    taesd_missing: Callable[[object], str]
    extensions: object  # modules.extensions.ExtensionSet
    default_backend: str = "auto"

    def prepare(self, request: GenerationRequest, entry: ModelEntry,
                capability: Capability | None = None) -> PreparedJob:
        # 1. the backend that will run the model, and whether it can do what is asked (by default the request
        #    says: an init image is img2img, an init image and a mask is inpainting)
        capability = capability or Capability(request.capability_name)
        info = backend_info(entry)
        self._check_backend(request, entry, info)
        if capability not in info.capabilities:
            raise UnsupportedCapability(capability.value, entry.name, info.kind.value)
        if request.enable_hr and capability is Capability.TXT2IMG and Capability.IMG2IMG not in info.capabilities:
            raise UnsupportedCapability("hires fix", entry.name, info.kind.value)  # its second pass is img2img
        if getattr(request.detailer, "enabled", False) and Capability.INPAINT not in info.capabilities:
            raise UnsupportedCapability("face detailer", entry.name, info.kind.value)  # it inpaints each face
        # 2. preset, styles and family defaults; then the diffusers-style input checks
        self._check_names(request)
        req = resolve_prompts(request, entry.family, self.presets, self.styles_file).with_defaults(entry.family)
        req.check_inputs(entry.family)
        # 3. LoRAs: <lora:…> tags and the request's list, each inside the LoRA folders and fitting the family
        loras = self._resolve_loras(req, entry, info)
        # 4. decoders: TAESD for a fast final decode (required) or live previews (skipped when absent)
        req = self._check_decoder(req, entry, info)
        # 5. extension post-processors (InvalidRequest for an unknown id)
        post = tuple(self.extensions.resolve_postprocess(req.postprocess))
        return PreparedJob(entry=entry, request=req, loras=tuple(loras), backend=info, capability=capability,
                           postprocessors=post)

    # -- steps -----------------------------------------------------------------------------------------
    def _check_backend(self, req: GenerationRequest, entry: ModelEntry, info: BackendInfo) -> None:
        wanted = req.backend if req.backend != "auto" else self.default_backend
        if wanted == "auto" or wanted not in {k.value for k in BackendKind}:
            return  # an unknown value is refused by check_inputs with the list of choices
        if wanted == info.kind:
            return
        if info.kind is BackendKind.ONNX:
            raise InvalidRequest("backend", Message("rule.is_edge", name=entry.name))
        raise InvalidRequest("backend", Message("rule.not_edge", name=entry.name))

    @staticmethod
    def _check_names(req: GenerationRequest) -> None:
        if req.preset:
            check_name("preset", req.preset)
        for i, style in enumerate(req.styles):
            check_name(f"styles.{i}", style)
        for tag in parse_prompt_loras(req.negative_prompt)[1]:  # removed from the prompt, never loaded
            check_name("negative_prompt", tag.name)

    def _resolve_loras(self, req: GenerationRequest, entry: ModelEntry, info: BackendInfo) -> list[LoraUse]:
        _clean, tags = parse_prompt_loras(req.prompt)
        wanted = [("prompt", t.name, t.unet_weight, t.te_weight) for t in tags]
        wanted += [(f"loras.{i}.name", name, float(w), float(w)) for i, (name, w) in enumerate(req.loras)]
        if not wanted:
            return []
        if not info.runtime_loras:
            merged = (", ".join(x["name"] for x in (entry.details.get("manifest") or {}).get("loras", []))
                      or Message("rule.none"))
            raise InvalidRequest("loras", Message("rule.edge_loras", merged=merged))
        return self.resolve_loras([(field, name, u, t) for field, name, u, t in wanted], entry)

    def resolve_loras(self, wanted: Sequence[tuple[str, str, float, float]], entry: ModelEntry) -> list[LoraUse]:
        """``(field, name, U-Net weight, TE weight)`` -> LoRAs inside the LoRA folders that fit ``entry``'s
        family (generation and merge-and-save share it). UnsafeField / LoraNotFound / LoraError name the field."""
        infos, roots = self.loras(), self.lora_roots()
        resolved = []
        for field, name, unet_w, te_w in wanted:
            check_name(field, name)
            lora = find_lora(infos, name)
            if not inside(Path(lora.path), roots):
                raise UnsafeField(field, Message("rule.lora_outside", name=lora.name))
            check_compatible(lora, entry.family)  # LoraError names both families
            resolved.append((lora, float(unet_w), float(te_w)))
        return resolved

    def _check_decoder(self, req: GenerationRequest, entry: ModelEntry, info: BackendInfo) -> GenerationRequest:
        if not (req.decoder == "taesd" or req.preview_every):
            return req
        if info.kind is BackendKind.ONNX:
            has = "taesd_decoder" in ((entry.details.get("manifest") or {}).get("components") or {})
            missing = Message("rule.edge_no_taesd", name=entry.name)
        else:
            has = self.taesd_available(entry.family)
            missing = self.taesd_missing(entry.family)
        if has:
            return req
        if req.decoder == "taesd":
            raise InvalidRequest("decoder", Message("rule.taesd_needed", missing=missing))
        log.info("no live preview: %s", missing)
        return replace(req, preview_every=0)
