"""The released GPEN face-restoration models: sizes, widths and file names. Torch-free.

Facts from upstream (yangxy/GPEN ``demo.py`` / ``face_model/face_gan.py``, and ModelScope's
``cv_gpen_image-portrait-enhancement-hires`` pipeline for the 1024 model): every BFR generator uses a
512-wide style vector and an 8-layer mapping network; the variants differ in face size, channel
multiplier and narrow factor.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modules.errors import InvalidRequest, MissingComponent

from .strings import msg

#: folder under the models folder (``models/GPEN``)
MODELS_SUBDIR = "GPEN"
STYLE_DIM = 512
N_MLP = 8


@dataclass(frozen=True)
class Variant:
    name: str
    size: int  # face crop the generator restores (square)
    channel_multiplier: int
    narrow: float

    @property
    def filename(self) -> str:
        return f"{self.name}.pth"

    def path(self, models_dir: Path) -> Path:
        return Path(models_dir) / MODELS_SUBDIR / self.filename


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("GPEN-BFR-256", 256, 1, 0.5),
    Variant("GPEN-BFR-512", 512, 2, 1.0),
    Variant("GPEN-BFR-1024", 1024, 2, 1.0),
)}
DEFAULT_VARIANT = "GPEN-BFR-512"


def get_variant(name: str) -> Variant:
    key = name[:-4] if name.endswith(".pth") else name
    try:
        return VARIANTS[key]
    except KeyError:
        raise InvalidRequest("model", msg("gpen.rule.unknown_model", name=name, choices=", ".join(VARIANTS))) from None


def weights_path(variant: Variant, models_dir: Path) -> Path:
    """The weights file, or MissingComponent naming it and where to put it."""
    path = variant.path(models_dir)
    if not path.is_file():
        raise MissingComponent(msg("gpen.weights_missing", subdir=MODELS_SUBDIR, file=variant.filename,
                                   path=str(path), folder=str(path.parent)))
    return path
