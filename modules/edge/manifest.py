"""The edge package on disk: ``models/edge/NAME/manifest.json`` and the files it lists. Torch-free.

Layout::

    manifest.json                 what was built from what, and how (see :func:`new_manifest`)
    text_encoder.onnx             input_ids (B, 77) -> normed hidden states of every layer (L+1, B, 77, D)
    unet.onnx [+ unet.onnx.data]  sample, timestep, encoder_hidden_states -> noise prediction
    taesd_decoder.onnx            latents -> images in [0, 1]        (at least one decoder)
    vae_decoder.onnx              latents -> images in [0, 1]        (optional)
    tokenizer/                    CLIP tokenizer files
    scheduler/scheduler_config.json

:func:`check_package` refuses a package whose manifest is missing or malformed, or whose files are
missing or of another size than the manifest says (a partial copy or an interrupted build).
"""
from __future__ import annotations

import json
from pathlib import Path

from modules.errors import ModelLoadError

MANIFEST = "manifest.json"
FORMAT = "visage-edge"
VERSION = 1
COMPONENTS = ("text_encoder", "unet", "taesd_decoder", "vae_decoder")
REQUIRED = ("text_encoder", "unet")
DECODERS = ("taesd_decoder", "vae_decoder")
TOKENIZER_DIR = "tokenizer"
SCHEDULER_DIR = "scheduler"


def read_manifest(package: Path) -> dict:
    """The parsed manifest of ``package``; ModelLoadError naming the problem otherwise."""
    package = Path(package)
    path = package / MANIFEST
    if not package.is_dir():
        raise ModelLoadError(f"{package.name}: edge package folder does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{package.name}: no {MANIFEST} (not an edge package, or an interrupted build)") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{package.name}: {MANIFEST} is unreadable ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelLoadError(f"{package.name}: {MANIFEST} is not a Visage edge manifest")
    if int(data.get("version", 0)) > VERSION:
        raise ModelLoadError(f"{package.name}: edge package version {data.get('version')} is newer than this "
                             f"Visage understands ({VERSION}); rebuild it with build-edge")
    return data


def check_package(package: Path) -> dict:
    """Validate ``package`` against its manifest (files present, sizes equal). Returns the manifest."""
    package = Path(package)
    data = read_manifest(package)
    components = data.get("components")
    if not isinstance(components, dict):
        raise ModelLoadError(f"{package.name}: {MANIFEST} lists no components")
    missing = [c for c in REQUIRED if c not in components]
    if missing or not any(d in components for d in DECODERS):
        need = missing or ["a decoder (taesd_decoder or vae_decoder)"]
        raise ModelLoadError(f"{package.name}: {MANIFEST} lacks {', '.join(need)}")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(f"{package.name}: {MANIFEST} lists no files")
    problems = []
    for rel, size in sorted(files.items()):
        f = package / rel
        if not f.is_file():
            problems.append(f"{rel} is missing")
        elif f.stat().st_size != int(size):
            problems.append(f"{rel} has {f.stat().st_size} bytes, the manifest says {size}")
    for name in (TOKENIZER_DIR, SCHEDULER_DIR):
        if not (package / name).is_dir():
            problems.append(f"{name}/ is missing")
    if problems:
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise ModelLoadError(f"{package.name}: incomplete edge package: {shown}. Rebuild it with "
                             f"`python -m modules.cli build-edge`")
    return data


def package_files(package: Path) -> dict[str, int]:
    """Relative path -> size of every file of a package except the manifest."""
    package = Path(package)
    return {f.relative_to(package).as_posix(): f.stat().st_size
            for f in sorted(package.rglob("*")) if f.is_file() and f.name != MANIFEST}


def write_manifest(package: Path, data: dict) -> Path:
    from modules.atomic import atomic_write_json

    return atomic_write_json(Path(package) / MANIFEST, data)
