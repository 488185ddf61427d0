"""What the registry knows about one model, without loading it. Torch-free."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from modules.families import Family


class ModelFormat(str, Enum):
    SINGLE_FILE = "single-file"  # A1111/original-layout .safetensors
    DIFFUSERS = "diffusers"  # folder with model_index.json (in models/ or the HF cache)
    EDGE = "edge"  # Visage edge package (ONNX), models/edge/NAME/
    PICKLE = "pickle"  # .ckpt/.pt/.pth: listed, never loaded without an explicit opt-in

    def __str__(self) -> str:
        return self.value


@dataclass
class ModelEntry:
    name: str  # what users type: path relative to models/Stable-diffusion without extension, or an HF repo id
    path: Path  # file or folder on disk
    format: ModelFormat
    family: Family | None  # None when unsupported
    supported: bool = True
    reason: str = ""  # why unsupported (or a note)
    size_bytes: int = 0
    hash: str | None = None  # A1111 "Model hash": first 10 hex of sha256 (filled by the registry's hash cache)
    source: str = "models"  # "models" | "hf-cache" | "edge"
    details: dict = field(default_factory=dict)  # e.g. {"embedded_config": True, "components": [...]} 

    @property
    def title(self) -> str:
        """A1111's checkpoint title: ``name [hash]``."""
        return f"{self.name} [{self.hash}]" if self.hash else self.name

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["format"] = str(self.format)
        d["family"] = self.family.value if self.family else None
        d["title"] = self.title
        return d
