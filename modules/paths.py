"""Folder layout (A1111 names) and safe resolution of user-supplied names. Torch-free."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from modules.errors import UnsafeName

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class Folders:
    """Where Visage reads models and writes outputs.

    ``models`` may be an existing A1111 ``models/`` folder: the sub-folder names are A1111's.
    """

    models: Path
    outputs: Path
    cache: Path

    @property
    def checkpoints(self) -> Path:
        return self.models / "Stable-diffusion"

    @property
    def lora(self) -> Path:
        return self.models / "Lora"

    @property
    def vae(self) -> Path:
        return self.models / "VAE"

    @property
    def vae_approx(self) -> Path:
        return self.models / "VAE-approx"

    @property
    def tokenizers(self) -> Path:
        """Visage's own folder for tokenizers that single-file checkpoints lack."""
        return self.models / "tokenizers"

    @property
    def edge(self) -> Path:
        return self.models / "edge"

    def txt2img_outputs(self) -> Path:
        return self.outputs / "txt2img"


def safe_child(root: Path, name: str) -> Path:
    """Resolve ``name`` inside ``root``; refuse anything that would leave it.

    Refused: empty names, NUL bytes, over-long names, absolute paths, ``..`` parts,
    and symlinks whose target lies outside ``root``.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafeName("empty name")
    if "\x00" in name:
        raise UnsafeName("name contains a NUL byte")
    if len(name) > MAX_NAME_LENGTH:
        raise UnsafeName(f"name longer than {MAX_NAME_LENGTH} characters")
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeName(f"absolute paths are not accepted: {name!r}")
    if any(part == ".." for part in normalized.split("/")):
        raise UnsafeName(f"'..' is not accepted in names: {name!r}")
    root_resolved = root.resolve()
    candidate = (root_resolved / normalized).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise UnsafeName(f"{name!r} leads outside {root}")
    return candidate
