"""Face detectors behind one interface. Torch-free (the default detector needs only OpenCV).

``detect(rgb) -> list[Face]``: boxes in pixel coordinates of the image given, with either five
landmarks (eyes, nose, mouth corners, RetinaFace-style) or just the two eye centres.

* :class:`HaarDetector` (default, ``"haar"``): OpenCV's Haar cascades shipped inside
  ``opencv-python-headless`` (``haarcascade_frontalface_alt2.xml`` for faces, ``haarcascade_eye.xml``
  for the eyes), so nothing is downloaded. Its score is the number of raw detections merged into a
  box; ``min_neighbors`` (default 5, see docs/gpen.md for how it was chosen) is the threshold.
* ``"mtcnn"``: MTCNN (:mod:`modules.faces`, torch), five landmarks per face, with the weights
  ``python -m modules.cli fetch-face-detector`` puts in ``models/face-detection/mtcnn/``.
* ``"auto"`` (what GPEN uses unless told otherwise): ``"mtcnn"`` when those weights are present, ``"haar"``
  otherwise (:func:`resolve_detector`).
* ``"retinaface"``: a RetinaFace-R50 checkpoint the user supplies (``models/GPEN/RetinaFace-R50.pth``,
  the file upstream GPEN uses); see :mod:`.retinaface`.

Large images are searched on a copy whose long side is at most ``max_side`` (auto-resize; when that copy
shows no face, or only faces near the detector's smallest window, once more at twice that size) or, with
``tile``, in overlapping full-resolution tiles whose detections are merged (non-maximum suppression).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from .strings import msg

#: where the eyes sit in a frontal Haar face box (fractions of its width/height), measured on the
#: real test photos (docs/gpen.md); used when the eye cascade does not find a plausible pair
FALLBACK_EYES = ((0.33, 0.40), (0.67, 0.40))
DEFAULT_MIN_NEIGHBORS = 5
DETECTORS = ("auto", "haar", "mtcnn", "retinaface")


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    landmarks: np.ndarray | None = None  # (5, 2): left eye, right eye, nose, left/right mouth corner
    eyes: np.ndarray | None = None  # (2, 2): left and right eye centre (image left first)
    eyes_estimated: bool = False  # eyes placed from the box, not detected

    def scaled(self, s: float, dx: float = 0.0, dy: float = 0.0) -> "Face":
        def tr(p):
            return None if p is None else p * s + np.array([dx, dy])
        x0, y0, x1, y1 = self.box
        return replace(self, box=(x0 * s + dx, y0 * s + dy, x1 * s + dx, y1 * s + dy),
                       landmarks=tr(self.landmarks), eyes=tr(self.eyes))

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    def to_dict(self) -> dict:
        d = {"box": [round(float(v), 1) for v in self.box], "score": round(float(self.score), 3)}
        if self.landmarks is not None:
            d["landmarks"] = np.round(self.landmarks, 1).tolist()
        if self.eyes is not None:
            d["eyes"] = np.round(self.eyes, 1).tolist()
        return d


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


@dataclass
class DetectOptions:
    max_side: int = 1024  # search a copy whose long side is at most this (0 = full size)
    tile: int = 0  # >0: search overlapping tiles of this size at full resolution instead
    extra: dict = field(default_factory=dict)


def _cv2():
    import cv2  # opencv-python-headless; imported on use so the extension registers without it
    return cv2


class HaarDetector:
    name = "haar"

    def __init__(self, min_neighbors: int = DEFAULT_MIN_NEIGHBORS, scale_factor: float = 1.1,
                 min_face: int = 20, find_eyes: bool = True):
        cv2 = _cv2()
        root = cv2.data.haarcascades
        self._faces = cv2.CascadeClassifier(root + "haarcascade_frontalface_alt2.xml")
        self._eyes = cv2.CascadeClassifier(root + "haarcascade_eye.xml")
        if self._faces.empty() or self._eyes.empty():
            from modules.errors import MissingComponent
            raise MissingComponent(msg("gpen.haar_missing", root=root))
        self.min_neighbors = min_neighbors
        self.scale_factor = scale_factor
        self.min_face = min_face
        self.find_eyes = find_eyes

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """What the cascade looks at: the histogram-equalised gray image. Tiles are cut from this, so every
        tile sees the same contrast as the whole photo."""
        cv2 = _cv2()
        return cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self.detect_prepared(self.prepare(rgb))

    def detect_prepared(self, gray: np.ndarray) -> list[Face]:
        boxes, votes = self._faces.detectMultiScale2(
            np.ascontiguousarray(gray), scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_face, self.min_face))
        return [Face((float(x), float(y), float(x + w), float(y + h)), float(n))
                for (x, y, w, h), n in zip(np.asarray(boxes).reshape(-1, 4), np.ravel(votes))]

    def refine(self, rgb: np.ndarray, faces: list[Face]) -> list[Face]:
        """Eye centres for the final boxes, looked for in the full-resolution image (each face's crop only)."""
        cv2 = _cv2()
        h_img, w_img = rgb.shape[:2]
        for face in faces:
            x0, y0, x1, y1 = face.box
            x, y = max(0, int(round(x0))), max(0, int(round(y0)))
            w, h = min(w_img, int(round(x1))) - x, min(h_img, int(round(y1))) - y
            eyes = None
            if self.find_eyes and w >= 8 and h >= 8:
                crop = cv2.cvtColor(np.ascontiguousarray(rgb[y:y + int(h * 0.6), x:x + w]), cv2.COLOR_RGB2GRAY)
                eyes = self._find_eyes(crop, x, y, w, h)
            if eyes is None:
                bw, bh = x1 - x0, y1 - y0
                eyes = np.array([[x0 + fx * bw, y0 + fy * bh] for fx, fy in FALLBACK_EYES], dtype=np.float64)
                face.eyes_estimated = True
            face.eyes = eyes
        return faces

    def _find_eyes(self, crop: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray | None:
        """Eye centres in ``crop`` (the upper part of the face box at x, y, w, h; gray), or None when no
        plausible pair is found."""
        cv2 = _cv2()
        if crop.size == 0:
            return None
        s = 200.0 / w  # eyes of small faces are below the eye cascade's 20 px window: upscale the crop
        crop = cv2.equalizeHist(cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC))
        found = self._eyes.detectMultiScale(crop, 1.1, 3, minSize=(25, 25), maxSize=(90, 90))
        centres = [((ex + ew / 2) / s / w, (ey + eh / 2) / s / h) for ex, ey, ew, eh in np.asarray(found).reshape(-1, 4)]
        (lx, ly), (rx, ry) = FALLBACK_EYES

        def nearest(cands, tx, ty):
            return min(cands, key=lambda c: (c[0] - tx) ** 2 + (c[1] - ty) ** 2) if cands else None

        left = nearest([c for c in centres if c[0] < 0.5 and 0.2 < c[1] < 0.55], lx, ly)
        right = nearest([c for c in centres if c[0] >= 0.5 and 0.2 < c[1] < 0.55], rx, ry)
        if left is None or right is None:
            return None
        dist = right[0] - left[0]
        if not 0.2 <= dist <= 0.6 or abs(right[1] - left[1]) > 0.15:
            return None
        return np.array([[x + left[0] * w, y + left[1] * h], [x + right[0] * w, y + right[1] * h]])


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merge_faces(faces: list[Face], iou: float = 0.3) -> list[Face]:
    """Non-maximum suppression: the best-scoring (then largest) face of each overlapping group.
    A box lying mostly inside a kept one (a face cut by a tile edge) is dropped too."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: (f.score, f.width), reverse=True):
        inside = False
        for k in kept:
            ix = max(0.0, min(f.box[2], k.box[2]) - max(f.box[0], k.box[0]))
            iy = max(0.0, min(f.box[3], k.box[3]) - max(f.box[1], k.box[1]))
            area = (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])
            if box_iou(f.box, k.box) > iou or (area > 0 and ix * iy / area > 0.6):
                inside = True
                break
        if not inside:
            kept.append(f)
    return sorted(kept, key=lambda f: (f.box[1], f.box[0]))


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` shared."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def detect_faces(detector: FaceDetector, rgb: np.ndarray, options: DetectOptions) -> list[Face]:
    """Run ``detector`` on a big image without holding more than one resized copy or one tile at once,
    then let it refine the merged faces at full resolution (the Haar detector finds the eyes there)."""
    faces = _find_faces(detector, rgb, options)
    refine = getattr(detector, "refine", None)
    return refine(rgb, faces) if refine is not None else faces


def _find_faces(detector: FaceDetector, rgb: np.ndarray, options: DetectOptions) -> list[Face]:
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    if options.tile and max(h, w) > options.tile:
        tile = max(64, int(options.tile))
        overlap = tile // 4
        prepare = getattr(detector, "prepare", None)
        source, run = (prepare(rgb), detector.detect_prepared) if prepare is not None else (rgb, detector.detect)
        faces: list[Face] = []
        for y0 in tile_origins(h, tile, overlap):
            for x0 in tile_origins(w, tile, overlap):
                part = np.ascontiguousarray(source[y0:y0 + tile, x0:x0 + tile])
                faces += [f.scaled(1.0, x0, y0) for f in run(part)]
        return merge_faces(faces)
    if not options.max_side or max(h, w) <= options.max_side:
        return merge_faces(detector.detect(rgb))
    scale = options.max_side / max(h, w)
    faces = _detect_scaled(detector, rgb, scale)
    small_face = 2 * getattr(detector, "min_face", 20)
    if not faces or min(f.width for f in faces) * scale < small_face:
        # faces near the detector's smallest window are missed or confused at this size: look again at
        # twice the size (at most full size), still bounded by 2 x max_side
        faces = _detect_scaled(detector, rgb, min(1.0, 2 * scale))
    return faces


def _detect_scaled(detector: FaceDetector, rgb: np.ndarray, scale: float) -> list[Face]:
    if scale >= 1.0:
        return merge_faces(detector.detect(rgb))
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    sx, sy = w / small.shape[1], h / small.shape[0]
    return merge_faces([f.scaled((sx + sy) / 2) for f in detector.detect(small)])


class MtcnnFaces:
    """:class:`modules.faces.detect.MtcnnDetector` behind this module's interface (five landmarks per face)."""

    name = "mtcnn"

    def __init__(self, detector):
        self._detector = detector
        self.min_face = detector.min_face

    @classmethod
    def from_models_dir(cls, models_dir, device: str = "cpu") -> MtcnnFaces:
        from modules.faces.detect import MtcnnDetector
        from modules.faces.weights import mtcnn_folder
        return cls(MtcnnDetector.from_folder(mtcnn_folder(models_dir or "models"), device=device))

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return [Face(f.box, f.score, landmarks=np.array(f.landmarks, dtype=np.float64))
                for f in self._detector.detect(rgb)]


def resolve_detector(name: str, models_dir=None) -> str:
    """``"auto"`` -> ``"mtcnn"`` when its weights are in ``models_dir``, else ``"haar"``; other names as given."""
    if name != "auto":
        return name
    from modules.faces.weights import have_weights, mtcnn_folder
    return "mtcnn" if have_weights(mtcnn_folder(models_dir or "models")) else "haar"


def make_detector(name: str = "haar", *, models_dir=None, min_neighbors: int = DEFAULT_MIN_NEIGHBORS,
                  device: str = "cpu") -> FaceDetector:
    name = resolve_detector(name, models_dir)
    if name == "haar":
        return HaarDetector(min_neighbors=min_neighbors)
    if name == "mtcnn":
        return MtcnnFaces.from_models_dir(models_dir, device=device)
    if name == "retinaface":
        from .retinaface import RetinaFaceDetector
        return RetinaFaceDetector.from_models_dir(models_dir, device=device)
    from modules.errors import InvalidRequest
    raise InvalidRequest("detector", msg("gpen.rule.unknown_detector", name=name))
