"""Turning what the user asked for into the final prompts: preset template, then A1111 styles. Torch-free."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from modules.errors import InvalidRequest
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.messages import Message
from modules.presets import PresetStore, apply_preset
from modules.styles import apply_styles, load_styles

#: request fields a preset fills when the request leaves them unset
PRESET_PARAMS = ("steps", "cfg_scale", "width", "height", "sampler")


def resolve_prompts(request: GenerationRequest, family: Family, presets: PresetStore,
                    styles_file: Path) -> GenerationRequest:
    """The request with its preset and styles applied: ``prompt``/``negative_prompt`` become final.

    The user's prompt goes into the preset's ``{prompt}``; unset parameters come from the preset's
    values for ``family``; then the styles are applied in order, as A1111 does.
    """
    if request.preset:
        preset = presets.get(request.preset)  # InvalidRequest when unknown
        fields = apply_preset(preset, request.prompt, family, request.negative_prompt)
        unset = {k: fields[k] for k in PRESET_PARAMS if getattr(request, k) is None}
        if request.clip_skip == 1 and family != Family.ZIMAGE:
            unset["clip_skip"] = fields["clip_skip"]
        request = replace(request, prompt=fields["prompt"], negative_prompt=fields["negative_prompt"], **unset)
    if request.styles:
        known = load_styles(styles_file)
        missing = [name for name in request.styles if name not in known]
        if missing:
            raise InvalidRequest("styles", Message("rule.unknown_styles", names=", ".join(missing)))
        prompt, negative = apply_styles(request.prompt, request.negative_prompt,
                                        [known[name] for name in request.styles])
        request = replace(request, prompt=prompt, negative_prompt=negative)
    return request
