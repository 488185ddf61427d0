"""The diffusers backend: SD1.5, SDXL and Z-Image pipelines on the torch device."""
from __future__ import annotations

import torch

from modules.backends.select import DIFFUSERS
from modules.backends.taesd import TaesdSource
from modules.families import Family
from modules.loader import INPAINT_CHANNELS
from modules.generation.encoding import encode_prompts
from modules.generation.img2img import img2img, txt2img_on_inpaint_model
from modules.generation.txt2img import txt2img


class DiffusersBackend:
    info = DIFFUSERS

    def __init__(self, pipe, family: Family, *, device: torch.device, dtype: torch.dtype, patcher,
                 taesd: TaesdSource):
        self.pipe = pipe
        self.family = family
        self.device = device
        self.dtype = dtype
        self._patcher = patcher  # modules.lora.patcher.LoraPatcher, shared by all models
        self._taesd = taesd
        self._derived: dict = {}  # img2img / inpaint pipelines built from this one's components
        # a dedicated inpainting model (9-channel U-Net: latents + mask + masked-image latents): every
        # capability runs through its own inpaint pipeline
        unet = getattr(pipe, "unet", None)
        self.inpaint_model = (family is not Family.ZIMAGE and unet is not None
                              and getattr(unet.config, "in_channels", 4) == INPAINT_CHANNELS)
        pipe.set_progress_bar_config(disable=True)

    def to(self, device) -> None:
        self.pipe.to(device)

    def encode(self, prompt: str, negative: str, do_cfg: bool, clip_skip: int) -> dict:
        return encode_prompts(self.pipe, self.family, prompt, negative, do_cfg=do_cfg, clip_skip=clip_skip,
                              device=self.device)

    def apply_loras(self, loras):
        return self._patcher.apply(self.pipe, self.family, loras)

    def text_encoder_state(self) -> list:
        return self._patcher.text_encoder_state(self.pipe)

    def decoder_for(self, req):
        if not (req.preview_every or req.decoder == "taesd"):
            return None
        return self._taesd.decoder(self.family, self.device, self.dtype, required=req.decoder == "taesd")

    def txt2img(self, req, ctx, *, encode, tae):
        if self.inpaint_model:  # (as A1111: the whole picture masked, from pure noise)
            return txt2img_on_inpaint_model(self.pipe, self.family, req, ctx, device=self.device, encode=encode,
                                            tae=tae, cache=self._derived)
        return txt2img(self.pipe, self.family, req, ctx, device=self.device, encode=encode, tae=tae)

    def img2img(self, req, ctx, *, encode, tae):
        """img2img through the pipeline built from this one's components (``from_pipe``: no new weights)."""
        return img2img(self.pipe, self.family, req, ctx, device=self.device, encode=encode, tae=tae,
                       inpaint_model=self.inpaint_model, cache=self._derived)

    def inpaint(self, req, ctx, *, encode, tae):
        """Inpainting (``req.mask``), through the inpaint pipeline built from this one's components (a
        dedicated inpainting model's own pipeline: the 9-channel conditioning, masked-image latents + mask)."""
        return img2img(self.pipe, self.family, req, ctx, device=self.device, encode=encode, tae=tae,
                       inpaint_model=self.inpaint_model, cache=self._derived)
