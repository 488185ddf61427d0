"""The model families Visage knows, and the facts that differ between them.

Torch-free: the UI reads defaults and sampler lists from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Family(str, Enum):
    SD15 = "sd15"
    SDXL = "sdxl"
    ZIMAGE = "zimage"

    def __str__(self) -> str:  # argparse/JSON friendly
        return self.value


#: Samplers for U-Net (epsilon) families, in A1111's names.
SD_SAMPLERS = ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "UniPC", "DDIM", "LCM")
#: Z-Image is a flow-matching model: only flow-match samplers apply.
FLOW_SAMPLERS = ("Euler (flow match)",)


@dataclass(frozen=True)
class FamilyInfo:
    family: Family
    label: str
    pipeline_class: str  # diffusers class name, resolved lazily by the loader
    samplers: tuple[str, ...]
    default_sampler: str
    steps: int
    cfg: float
    width: int
    height: int
    supports_clip_skip: bool
    supports_negative: bool
    #: width/height must be multiples of this (latent factor 8; Z-Image patches 2x2 latents)
    size_multiple: int = 8
    min_side: int = 64
    max_side: int = 2048


FAMILIES: dict[Family, FamilyInfo] = {
    Family.SD15: FamilyInfo(
        Family.SD15, "Stable Diffusion 1.5", "StableDiffusionPipeline",
        SD_SAMPLERS, "DPM++ 2M Karras", steps=25, cfg=7.0, width=512, height=512,
        supports_clip_skip=True, supports_negative=True,
    ),
    Family.SDXL: FamilyInfo(
        Family.SDXL, "Stable Diffusion XL", "StableDiffusionXLPipeline",
        SD_SAMPLERS, "DPM++ 2M Karras", steps=30, cfg=6.0, width=1024, height=1024,
        supports_clip_skip=True, supports_negative=True,
    ),
    Family.ZIMAGE: FamilyInfo(
        Family.ZIMAGE, "Z-Image-Turbo", "ZImagePipeline",
        FLOW_SAMPLERS, "Euler (flow match)", steps=8, cfg=0.0, width=1024, height=1024,
        supports_clip_skip=False, supports_negative=True, size_multiple=16,
    ),
}


def family_info(family: Family | str) -> FamilyInfo:
    return FAMILIES[Family(family)]
