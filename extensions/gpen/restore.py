"""The face-restoration pipeline: detect -> align -> GPEN at the model's size -> paste back.

:class:`FaceRestorer` is built once (by the extension's ``register``) and holds the loaded generators.
Torch is imported only when a restoration actually runs. Memory stays bounded on big photos: the
detector sees a resized copy (``max_side``) or one tile at a time (``tile``), each face is restored
alone at the model's size, and paste-back touches only the face's own region of the full image.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from modules.errors import InvalidRequest, ModelLoadError
from modules.messages import Message

from .align import face_transform, feather_mask, paste_back, warp_face
from .detect import DEFAULT_MIN_NEIGHBORS, DetectOptions, Face, detect_faces, make_detector, resolve_detector
from .strings import msg
from .variants import DEFAULT_VARIANT, Variant, get_variant, weights_path

log = logging.getLogger(__name__)

#: refuse outputs above this many pixels (an --upscale of a huge photo)
MAX_OUTPUT_PIXELS = 80_000_000
Report = Callable[[str, int, int], None]


@dataclass
class RestoreOptions:
    model: str = DEFAULT_VARIANT
    max_side: int = 1024  # detection on a copy with this long side (0 = full size)
    tile: int = 0  # >0: detect in overlapping tiles of this size at full resolution instead
    fp16: bool = False  # half precision (CUDA only; CPU always runs fp32)
    device: str = "auto"  # auto | cpu | cuda
    detector: str = "auto"  # auto (mtcnn when its weights are there, else haar) | haar | mtcnn | retinaface
    min_neighbors: int = DEFAULT_MIN_NEIGHBORS  # Haar threshold (votes per face)
    upscale: int = 1  # resize the whole image by this factor first (small faces gain detail)
    strength: float = 1.0  # blend weight of the restored faces (0..1)
    color_match: bool = True

    def check(self) -> "RestoreOptions":
        get_variant(self.model)
        if self.max_side < 0 or (0 < self.max_side < 64):
            raise InvalidRequest("max_side", msg("gpen.rule.off_or_64"))
        if self.tile < 0 or (0 < self.tile < 64):
            raise InvalidRequest("tile", msg("gpen.rule.off_or_64"))
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidRequest("device", msg("gpen.rule.device"))
        if not 1 <= self.upscale <= 4:
            raise InvalidRequest("upscale", msg("gpen.rule.upscale"))
        if not 0.0 <= self.strength <= 1.0:
            raise InvalidRequest("strength", Message("rule.between", low=0, high=1))
        if self.min_neighbors < 1:
            raise InvalidRequest("min_neighbors", msg("gpen.rule.at_least_1"))
        return self

    @classmethod
    def from_mapping(cls, values, defaults: "RestoreOptions | None" = None) -> "RestoreOptions":
        """Options from a dict (API body, post-processor options); unknown keys are ignored."""
        base = defaults or cls()
        known = {k: values[k] for k in cls.__dataclass_fields__ if k in values and values[k] is not None}
        return cls(**{**base.__dict__, **known})


@dataclass
class RestoreResult:
    image: Image.Image
    faces: list[dict]
    model: str
    device: str
    dtype: str
    seconds: float
    seconds_per_face: float
    notes: list[str] = field(default_factory=list)

    @property
    def infotext(self) -> dict[str, str]:
        """A1111's key for face restoration, plus the faces found."""
        return {"Face restoration": self.model, "Faces restored": str(len(self.faces))}


class FaceRestorer:
    """Loaded GPEN generators (one per model/device/dtype) and the detectors; reused across jobs."""

    def __init__(self, models_dir: Path, default_device: str = "auto"):
        self.models_dir = Path(models_dir)
        self.default_device = default_device
        self._models: dict[tuple, object] = {}
        self._detectors: dict[tuple, object] = {}
        self._lock = threading.Lock()

    # -- checks that need no torch: used by the page, API and CLI before queueing ---------------------
    def check_ready(self, options: RestoreOptions) -> Path:
        """Raise InvalidRequest / MissingComponent now, not inside a job."""
        options.check()
        return weights_path(get_variant(options.model), self.models_dir)

    # -- loading -------------------------------------------------------------------------------------
    def _device(self, options: RestoreOptions):
        import torch
        from modules.devices import resolve_device
        requested = options.device if options.device != "auto" else self.default_device
        try:
            device = resolve_device(requested)
        except RuntimeError as exc:
            raise InvalidRequest("device", str(exc)) from None
        dtype = torch.float16 if (options.fp16 and device.type == "cuda") else torch.float32
        return device, dtype

    def load_model(self, variant: Variant, device, dtype):
        key = (variant.name, str(device), str(dtype))
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = load_gpen(weights_path(variant, self.models_dir), variant, device, dtype)
                self._models.clear()  # keep one generator in memory (up to ~280 MB)
                self._models[key] = model
            return model

    def detector(self, options: RestoreOptions, device: str = "cpu"):
        name = resolve_detector(options.detector, self.models_dir)
        key = (name, options.min_neighbors)
        with self._lock:
            det = self._detectors.get(key)
            if det is None:
                det = make_detector(name, models_dir=self.models_dir,
                                    min_neighbors=options.min_neighbors, device=device)
                self._detectors[key] = det
            return det

    # -- running -------------------------------------------------------------------------------------
    def restore(self, image: Image.Image, options: RestoreOptions | None = None, *,
                report: Report | None = None, cancelled: Callable[[], bool] | None = None) -> RestoreResult:
        import torch

        options = (options or RestoreOptions()).check()
        report = report or (lambda phase, step, total: None)
        variant = get_variant(options.model)
        weights_path(variant, self.models_dir)  # the typed error before any work
        started = time.perf_counter()
        notes = []
        device, dtype = self._device(options)
        if options.fp16 and device.type != "cuda":
            notes.append(msg("gpen.note.fp16_cpu"))
        report("loading", 0, 0)
        model = self.load_model(variant, device, dtype)

        rgb = np.array(image.convert("RGB"))
        if options.upscale > 1:
            import cv2
            h, w = rgb.shape[:2]
            if h * w * options.upscale ** 2 > MAX_OUTPUT_PIXELS:
                raise InvalidRequest("upscale", msg("gpen.rule.output_over", mp=MAX_OUTPUT_PIXELS // 1_000_000))
            rgb = cv2.resize(rgb, (w * options.upscale, h * options.upscale), interpolation=cv2.INTER_LANCZOS4)

        report("detecting", 0, 0)
        det = self.detector(options, device="cuda" if device.type == "cuda" else "cpu")
        faces = detect_faces(det, rgb, DetectOptions(max_side=options.max_side, tile=options.tile))
        size = variant.size
        mask = feather_mask(size)
        face_seconds = 0.0
        for i, face in enumerate(faces):
            if cancelled is not None and cancelled():
                from modules.errors import Interrupted
                raise Interrupted(i, len(faces))
            report("restoring", i, len(faces))
            t0 = time.perf_counter()
            m = face_transform(face, size)
            crop = warp_face(rgb, m, size)
            restored = run_gpen(model, crop, device, dtype)
            paste_back(rgb, restored, m, strength=options.strength, color_match=options.color_match, mask=mask)
            face_seconds += time.perf_counter() - t0
        report("restoring", len(faces), len(faces))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elapsed = time.perf_counter() - started
        return RestoreResult(
            image=Image.fromarray(rgb), faces=[f.to_dict() for f in faces], model=variant.name,
            device=device.type, dtype="fp16" if dtype == torch.float16 else "fp32", seconds=elapsed,
            seconds_per_face=face_seconds / len(faces) if faces else 0.0, notes=notes)


def load_gpen(path: Path, variant: Variant, device, dtype):
    """Build the generator for ``variant`` and load ``path`` strictly (weights-only unpickler)."""
    import torch

    from .arch import GPEN

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) .pth format
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one typed error
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if isinstance(state, dict) and "g_ema" in state and isinstance(state["g_ema"], dict):
        state = state["g_ema"]  # a checkpoint from upstream's training script
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} does not hold a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    model = GPEN.for_variant(variant)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise ModelLoadError(f"{path.name} is not a {variant.name} generator "
                             f"({variant.size}px, channel multiplier {variant.channel_multiplier}, "
                             f"narrow {variant.narrow}): {' '.join(first)[:400]}") from None
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def run_gpen(model, crop: np.ndarray, device, dtype) -> np.ndarray:
    """uint8 RGB (size, size, 3) -> restored uint8 RGB of the same shape."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(crop).to(device).permute(2, 0, 1)[None].to(dtype) / 127.5 - 1.0
        y = model(x)
        y = ((y[0].float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
        return y.cpu().numpy()
