"""The MTCNN cascade: image pyramid -> P-Net proposals -> NMS -> R-Net refinement -> O-Net boxes with five
landmarks. Every stage keeps the boxes that pass its probability threshold, moves their edges by the net's
regression (box calibration) and squares them for the next net's crop.

``MtcnnDetector.from_folder(folder).detect(rgb)`` -> ``list[DetectedFace]`` (box, score, landmarks in pixel
coordinates of the image given, top to bottom). Default settings are the paper's reference ones: smallest
face 20 px, pyramid factor 0.709, thresholds 0.6 / 0.7 / 0.7.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import boxes as B
from .mtcnn import load_net
from .weights import weight_paths

CELL, STRIDE = 12, 2  # P-Net's window and step, in pixels of the pyramid level
CHUNK = 256  # crops per R-Net / O-Net batch


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float  # O-Net's face probability
    #: (x, y) of: left eye, right eye, nose, left mouth corner, right mouth corner ("left" = image left)
    landmarks: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict:
        return {"box": [round(v, 1) for v in self.box], "score": round(self.score, 4),
                "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks]}


@dataclass(frozen=True)
class MtcnnSettings:
    min_face: int = 20
    factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    nms_scale: float = 0.5  # P-Net boxes within one pyramid level
    nms_stage: tuple[float, float, float] = (0.7, 0.7, 0.7)  # after P-Net (all levels), R-Net, O-Net ("min")


def pyramid_scales(height: int, width: int, min_face: int = 20, factor: float = 0.709) -> list[float]:
    """Scales at which P-Net's 12 px window covers faces from ``min_face`` px up to the whole image."""
    scale = CELL / min_face
    side = min(height, width) * scale
    scales = []
    while side >= CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) / 128.0


def crop_boxes(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, size, size) crops of ``image`` (3, H, W, raw 0..255) at ``boxes``; outside the image is black."""
    _, h, w = image.shape
    out = torch.zeros(len(boxes), 3, size, size, dtype=image.dtype, device=image.device)
    for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        if x1 <= x0 or y1 <= y0:
            continue
        patch = torch.zeros(3, y1 - y0, x1 - x0, dtype=image.dtype, device=image.device)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
        out[i] = F.interpolate(patch[None], size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[0]
    return _normalise(out)


def landmarks_from_offsets(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """O-Net's 10 outputs (5 x fractions, then 5 y fractions of the box) -> (N, 5, 2) pixel points."""
    wh = boxes[:, 2:] - boxes[:, :2]
    xs = boxes[:, 0:1] + points[:, :5] * wh[:, 0:1]
    ys = boxes[:, 1:2] + points[:, 5:] * wh[:, 1:2]
    return torch.stack([xs, ys], dim=2)


class MtcnnDetector:
    name = "mtcnn"

    def __init__(self, pnet, rnet, onet, settings: MtcnnSettings | None = None, device: str = "cpu"):
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = (n.to(self.device) for n in (pnet, rnet, onet))
        self.settings = settings or MtcnnSettings()
        self.min_face = self.settings.min_face

    @classmethod
    def from_folder(cls, folder: Path, settings: MtcnnSettings | None = None,
                    device: str = "cpu") -> MtcnnDetector:
        """The three nets from ``folder`` (pnet.pt, rnet.pt, onet.pt); MissingComponent when absent."""
        paths = weight_paths(Path(folder))
        return cls(*(load_net(name, paths[name]) for name in ("pnet", "rnet", "onet")), settings, device)

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces in an (H, W, 3) uint8 RGB image (a gray (H, W) image is repeated to 3 channels)."""
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        image = torch.from_numpy(np.array(rgb[:, :, :3], dtype=np.uint8)).to(self.device).permute(2, 0, 1).float()
        boxes = self._propose(image)
        if len(boxes):
            boxes = self._refine(image, boxes)
        if not len(boxes):
            return []
        return self._output(image, boxes)

    def _propose(self, image: torch.Tensor) -> torch.Tensor:
        """Stage 1: P-Net over the pyramid; (N, 4) squared, calibrated candidate boxes."""
        s = self.settings
        _, h, w = image.shape
        found_boxes, found_scores = [], []
        for scale in pyramid_scales(h, w, s.min_face, s.factor):
            size = (math.ceil(h * scale), math.ceil(w * scale))
            level = _normalise(F.interpolate(image[None], size=size, mode="area"))
            prob, offsets = self.pnet(level)
            ys, xs = torch.nonzero(prob[0] > s.thresholds[0], as_tuple=True)
            if not len(ys):
                continue
            corner = torch.stack([xs, ys], dim=1).float() * STRIDE
            cand = torch.cat([corner, corner + CELL], dim=1) / scale
            scores = prob[0, ys, xs]
            cand = torch.cat([cand, offsets[0, :, ys, xs].T], dim=1)
            keep = B.nms(cand[:, :4], scores, s.nms_scale)
            found_boxes.append(cand[keep])
            found_scores.append(scores[keep])
        if not found_boxes:
            return torch.zeros(0, 4, device=self.device)
        cand, scores = torch.cat(found_boxes), torch.cat(found_scores)
        cand = cand[B.nms(cand[:, :4], scores, s.nms_stage[0])]
        return B.square(B.calibrate(cand[:, :4], cand[:, 4:]))

    def _refine(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Stage 2: R-Net on 24 px crops."""
        s = self.settings
        prob, offsets = self._run(self.rnet, crop_boxes(image, boxes, 24))
        keep = prob > s.thresholds[1]
        boxes, prob, offsets = boxes[keep], prob[keep], offsets[keep]
        keep = B.nms(boxes, prob, s.nms_stage[1])
        return B.square(B.calibrate(boxes[keep], offsets[keep]))

    def _output(self, image: torch.Tensor, boxes: torch.Tensor) -> list[DetectedFace]:
        """Stage 3: O-Net on 48 px crops: final boxes, scores and landmarks."""
        s = self.settings
        prob, offsets, points = self._run(self.onet, crop_boxes(image, boxes, 48))
        keep = prob > s.thresholds[2]
        boxes, prob, offsets, points = boxes[keep], prob[keep], offsets[keep], points[keep]
        marks = landmarks_from_offsets(boxes, points)
        boxes = B.calibrate(boxes, offsets)
        keep = B.nms(boxes, prob, s.nms_stage[2], mode="min")
        faces = [DetectedFace(tuple(float(v) for v in boxes[i].tolist()), float(prob[i]),
                              tuple((float(x), float(y)) for x, y in marks[i].tolist())) for i in keep.tolist()]
        return sorted(faces, key=lambda f: (f.box[1], f.box[0]))

    def _run(self, net, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [net(crops[i:i + CHUNK]) for i in range(0, len(crops), CHUNK)]
        return tuple(torch.cat(parts) for parts in zip(*outs))
