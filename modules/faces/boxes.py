"""Box arithmetic for the MTCNN cascade, torch only (no torchvision). Boxes are (N, 4) float tensors
``x0, y0, x1, y1`` in pixels."""
from __future__ import annotations

import torch


def area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def overlaps(box: torch.Tensor, boxes: torch.Tensor, mode: str = "union") -> torch.Tensor:
    """Intersection of ``box`` (4,) with each of ``boxes`` over their union (IoU) or, with ``mode="min"``,
    over the smaller area (a box nested inside another counts as overlapping)."""
    lo = torch.maximum(box[:2], boxes[:, :2])
    hi = torch.minimum(box[2:], boxes[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    a, b = area(box[None])[0], area(boxes)
    denom = torch.minimum(a, b) if mode == "min" else a + b - inter
    return inter / denom.clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first. A box is dropped when
    its overlap with a kept, better-scoring box exceeds ``threshold``."""
    order = torch.argsort(scores, descending=True)
    keep = []
    while order.numel():
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        order = rest[overlaps(boxes[best], boxes[rest], mode) <= threshold]
    return torch.tensor(keep, dtype=torch.long)


def calibrate(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply a net's box regression: each edge moves by its offset times the box's width or height."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * wh


def square(boxes: torch.Tensor) -> torch.Tensor:
    """The square of side max(width, height) with the same centre (what the next net's crop covers)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], dim=1)
