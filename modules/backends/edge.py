"""The edge backend: an edge package (ONNX Runtime) through the same txt2img steps as diffusers."""
from __future__ import annotations

from modules.backends.select import EDGE
from modules.errors import MissingComponent
from modules.families import Family
from modules.generation.txt2img import txt2img
from modules.lora.patcher import ApplyReport


class EdgeBackend:
    """Wraps :class:`modules.edge.runtime.EdgePipeline`. LoRAs were merged when the package was built
    (``Engine.prepare`` refuses runtime LoRAs); sessions are placed by their execution providers."""

    info = EDGE

    def __init__(self, pipe, family: Family = Family.SD15):
        import torch

        self.pipe = pipe
        self.family = family
        self.device = torch.device("cpu")  # latents and schedulers run on the CPU; ORT places the graphs

    def to(self, device) -> None:
        """Nothing to move: the ONNX sessions were placed by their execution providers when loaded."""

    def encode(self, prompt: str, negative: str, do_cfg: bool, clip_skip: int) -> dict:
        return self.pipe.encode_prompts(prompt, negative, do_cfg, clip_skip)

    def apply_loras(self, loras) -> ApplyReport:
        assert not loras, "Engine.prepare refuses LoRAs for edge packages"
        return ApplyReport()

    def text_encoder_state(self) -> list:
        return []

    def has_taesd(self) -> bool:
        return self.pipe.tae() is not None

    def decoder_for(self, req):
        if not (req.preview_every or req.decoder == "taesd"):
            return None
        tae = self.pipe.tae()
        if tae is None and req.decoder == "taesd":
            raise MissingComponent(f"{self.pipe.package.name} has no TAESD decoder; rebuild it with TAESD")
        return tae

    def txt2img(self, req, ctx, *, encode, tae):
        return txt2img(self.pipe, self.family, req, ctx, device=self.device, encode=encode, tae=tae)
