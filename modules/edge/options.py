"""What an edge build is asked to do (:class:`EdgeBuildOptions`) and where its package goes. Torch-free."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from modules.edge.export import ATTENTION_KINDS
from modules.edge.quantize import DEFAULT_UNET_METHOD
from modules.errors import InvalidRequest, VisageError
from modules.messages import Message
from modules.paths import Folders, safe_child
from modules.registry.entry import ModelEntry

QUANTIZE = ("none", "int8")
METHODS = ("auto", "static", "dynamic")  # auto: quantize.DEFAULT_UNET_METHOD (the fastest measured)


class EdgeBuildError(VisageError):
    """The package could not be built or written; nothing was left behind."""

    code = "edge_build_error"


@dataclass
class EdgeBuildOptions:
    loras: list[tuple[str, float, float]] = field(default_factory=list)  # (name, U-Net weight, TE weight)
    prune: float = 0.0  # share of inner U-Net channels removed; 0 skips pruning
    distill_steps: int = 0  # data-free distillation steps after pruning (0: none)
    distill_lr: float = 1e-5
    distill_latent: int = 32  # latent side used while distilling (32 -> 256 px)
    quantize: str = "int8"  # none | int8
    method: str = "auto"  # U-Net INT8 method: auto (= static) | static | dynamic
    full_vae: bool = False  # also export the full VAE decoder
    attention: str = "fused"  # fused: ONNX Runtime's MultiHeadAttention; standard: plain ONNX ops (OpenVINO)
    taesd: bool = True  # export the TAESD decoder (needs its weights)
    calib_prompts: int = 4  # preset prompts sampled to record calibration inputs
    calib_steps: int = 3  # sampling steps per calibration prompt (each records one U-Net input)
    calib_size: int | None = None  # image side while recording (default: half the family default: memory)
    overwrite: bool = False

    def check(self) -> None:
        if not 0.0 <= float(self.prune) <= 0.9:
            raise InvalidRequest("prune", Message("rule.between", low=0, high=0.9))
        if self.quantize not in QUANTIZE:
            raise InvalidRequest("quantize", Message("rule.choice", choices=", ".join(QUANTIZE)))
        if self.method not in METHODS:
            raise InvalidRequest("method", Message("rule.choice", choices=", ".join(METHODS)))
        if not 0 <= int(self.distill_steps) <= 100_000:
            raise InvalidRequest("distill_steps", Message("rule.between", low=0, high=100000))
        if self.distill_steps and not self.prune:
            raise InvalidRequest("distill_steps", Message("rule.distill_prune"))
        if self.attention not in ATTENTION_KINDS:
            raise InvalidRequest("attention", Message("rule.choice", choices=", ".join(ATTENTION_KINDS)))
        if not (self.taesd or self.full_vae):
            raise InvalidRequest("decoder", Message("rule.decoder_needed"))
        if self.calib_prompts < 1 or self.calib_steps < 1:
            raise InvalidRequest("calibration", Message("rule.calibration"))

    @property
    def unet_method(self) -> str | None:
        if self.quantize == "none":
            return None
        return DEFAULT_UNET_METHOD if self.method == "auto" else self.method


def default_name(entry: ModelEntry, options: EdgeBuildOptions) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(entry.name).name).strip("-.") or "model"
    parts = [base]
    if options.loras:
        parts.append("lora")
    if options.prune:
        parts.append(f"p{int(round(options.prune * 100))}")
    parts.append(options.quantize if options.quantize != "none" else "fp32")
    if options.attention != "fused":
        parts.append(options.attention)
    return "-".join(parts)


def package_path(folders: Folders, name: str, *, overwrite: bool = False) -> Path:
    """``models/edge/NAME`` for a new package; refuses unsafe, hidden, nested and taken names."""
    if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name or name.startswith("."):
        raise InvalidRequest("out", Message("rule.package_name", name=name))
    path = safe_child(folders.edge, name.strip())
    if path.exists() and not overwrite:
        raise InvalidRequest("out", Message("rule.edge_exists", name=name))
    return path
