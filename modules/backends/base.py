"""The Backend seam. Torch-free: the engine's ``prepare`` and the page read capabilities without loading.

A backend wraps one loaded model and answers what a job needs from it: encode prompts (the embedding-cache
seam), apply LoRAs, pick a decoder for previews and the final image, and run a capability (``txt2img`` now;
``img2img``, ``inpaint``, ``controlnet``, ``ip_adapter`` come as new methods and new members of
``capabilities``). A request a backend cannot serve is refused by ``Engine.prepare`` before it is queued.
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from modules.generation.params import GenerationRequest
    from modules.jobs import JobContext
    from modules.backends.select import BackendInfo
    from modules.lora.patcher import ApplyReport


class Capability(str, Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    CONTROLNET = "controlnet"
    IP_ADAPTER = "ip_adapter"


class BackendKind(str, Enum):
    """The ``backend`` a request may ask for (besides ``auto``)."""

    DIFFUSERS = "diffusers"
    ONNX = "onnx"


class LatentDecoder(Protocol):
    """TAESD (torch or ONNX): denoiser-space latents -> PIL images."""

    def decode(self, latents) -> list: ...


class Backend(Protocol):
    """What the engine needs from a loaded model. Implementations: ``DiffusersBackend``, ``EdgeBackend``."""

    #: kind, capabilities and whether LoRAs apply at run time (:mod:`modules.backends.select`)
    info: ClassVar["BackendInfo"]

    pipe: Any  # the underlying pipeline (diffusers pipeline or EdgePipeline)

    def to(self, device) -> None:
        """Place the model's weights on ``device`` (the manager parks models on the CPU)."""

    def encode(self, prompt: str, negative: str, do_cfg: bool, clip_skip: int) -> dict:
        """Prompt embeddings: the keyword arguments the pipeline takes (``prompt_embeds``, ...)."""

    def apply_loras(self, loras) -> "ApplyReport":
        """Make exactly ``loras`` ((LoraInfo, U-Net weight, TE weight)) active; ``[]`` restores the base."""

    def text_encoder_state(self) -> list:
        """The LoRAs active on the text encoder(s) right now (part of the embedding-cache key)."""

    def decoder_for(self, req: "GenerationRequest") -> LatentDecoder | None:
        """The TAESD decoder for live previews / a TAESD final decode, or None when neither is asked for."""

    def txt2img(self, req: "GenerationRequest", ctx: "JobContext", *, encode, tae): ...

    # img2img(req, ctx, *, encode, tae) and inpaint(...): where ``info.capabilities`` has IMG2IMG / INPAINT
