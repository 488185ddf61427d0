"""RetinaFace-R50 face detector for user-supplied weights (``models/GPEN/RetinaFace-R50.pth``, the file
upstream GPEN uses), in plain PyTorch without torchvision. It gives five landmarks per face, so faces are
aligned by least squares onto the FFHQ template.

Layout (biubug6/Pytorch_Retinaface with ``cfg_re50``, as GPEN loads it): ``body.*`` = torchvision's
ResNet-50 up to ``layer4`` (bottlenecks, stride on the 3x3 conv), ``fpn.output{1,2,3}`` 1x1 conv+BN+ReLU
from 512/1024/2048 channels to 256 and ``fpn.merge{1,2}``, three ``ssh{1,2,3}`` context modules, and per
level ``ClassHead``/``BboxHead``/``LandmarkHead`` 1x1 convs for 2 anchors. Input: BGR minus (104, 117, 123).
Anchors: strides 8/16/32 with sizes (16, 32) / (64, 128) / (256, 512); box and landmark offsets are
decoded with variances (0.1, 0.2).

No real RetinaFace weights are available offline here, so this detector is tested for its layout and
decoding with random weights; the default detector is OpenCV's Haar cascade.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from modules.errors import MissingComponent, ModelLoadError

from .detect import Face
from .strings import msg
from .variants import MODELS_SUBDIR

WEIGHTS_FILE = "RetinaFace-R50.pth"
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


def _conv_bn(cin, cout, k=3, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride=1):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet50Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * 4
            setattr(self, f"layer{i}", nn.Sequential(*layer))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer1(x)
        c2 = self.layer2(x)
        c3 = self.layer3(c2)
        return c2, c3, self.layer4(c3)


class FPN(nn.Module):
    def __init__(self, cins=(512, 1024, 2048), cout=256):
        super().__init__()
        self.output1 = _conv_bn(cins[0], cout, 1)
        self.output2 = _conv_bn(cins[1], cout, 1)
        self.output3 = _conv_bn(cins[2], cout, 1)
        self.merge1 = _conv_bn(cout, cout)
        self.merge2 = _conv_bn(cout, cout)

    def forward(self, feats):
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return o1, o2, o3


class SSH(nn.Module):
    def __init__(self, c=256):
        super().__init__()
        self.conv3X3 = _conv_bn(c, c // 2, relu=False)
        self.conv5X5_1 = _conv_bn(c, c // 4)
        self.conv5X5_2 = _conv_bn(c // 4, c // 4, relu=False)
        self.conv7X7_2 = _conv_bn(c // 4, c // 4)
        self.conv7x7_3 = _conv_bn(c // 4, c // 4, relu=False)

    def forward(self, x):
        a = self.conv3X3(x)
        b1 = self.conv5X5_1(x)
        b = self.conv5X5_2(b1)
        c = self.conv7x7_3(self.conv7X7_2(b1))
        return F.relu(torch.cat([a, b, c], dim=1))


class _Head(nn.Module):
    def __init__(self, c, outputs):
        super().__init__()
        self.conv1x1 = nn.Conv2d(c, outputs, 1)
        self.per_anchor = outputs // 2

    def forward(self, x):
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.per_anchor)


class RetinaFaceR50(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.ClassHead = nn.ModuleList([_Head(256, 2 * 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(256, 2 * 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(256, 2 * 10) for _ in range(3)])

    def forward(self, x):
        f1, f2, f3 = self.fpn(self.body(x))
        feats = (self.ssh1(f1), self.ssh2(f2), self.ssh3(f3))
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landms


def priors(height: int, width: int) -> np.ndarray:
    """Anchors (cx, cy, w, h), relative to the image size, in the order the heads emit them."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        for i, j in itertools.product(range(math.ceil(height / step)), range(math.ceil(width / step))):
            for s in sizes:
                out.append(((j + 0.5) * step / width, (i + 0.5) * step / height, s / width, s / height))
    return np.asarray(out, dtype=np.float32).reshape(-1, 4)


def decode(loc: np.ndarray, landms: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets -> (x0, y0, x1, y1) boxes and (5, 2) landmarks, relative to the image size."""
    centre = anchors[:, :2] + loc[:, :2] * VARIANCES[0] * anchors[:, 2:]
    size = anchors[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    pts = anchors[:, None, :2] + landms.reshape(-1, 5, 2) * VARIANCES[0] * anchors[:, None, 2:]
    return boxes, pts


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = scores.argsort()[::-1]
    keep = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx0 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy0 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx1 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy1 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        ratio = inter / (area[i] + area[order[1:]] - inter + 1e-9)
        order = order[1:][ratio <= iou]
    return keep


class RetinaFaceDetector:
    name = "retinaface"

    def __init__(self, model: RetinaFaceR50, device="cpu", threshold: float = 0.9, nms_iou: float = 0.4,
                 max_faces: int = 750):
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.max_faces = max_faces

    @classmethod
    def from_models_dir(cls, models_dir, device="cpu") -> "RetinaFaceDetector":
        path = Path(models_dir or "models") / MODELS_SUBDIR / WEIGHTS_FILE
        if not path.is_file():
            raise MissingComponent(msg("gpen.retinaface_missing", subdir=MODELS_SUBDIR, file=WEIGHTS_FILE,
                                       path=str(path)))
        return cls(load_retinaface(path), device=device)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        bgr = rgb[..., ::-1].astype(np.float32) - np.array(BGR_MEAN, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None].to(self.device)
        with torch.inference_mode():
            loc, conf, landms = (t[0].float().cpu().numpy() for t in self.model(x))
        scores = conf[:, 1]
        keep = scores > self.threshold
        boxes, pts = decode(loc[keep], landms[keep], priors(h, w)[keep])
        scale = np.array([w, h], np.float32)
        boxes = boxes * np.tile(scale, 2)
        pts = pts * scale
        order = nms(boxes, scores[keep], self.nms_iou)[: self.max_faces]
        return [Face(tuple(float(v) for v in boxes[i]), float(scores[keep][i]), landmarks=pts[i].astype(np.float64))
                for i in order]


def load_retinaface(path: Path) -> RetinaFaceR50:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one typed error
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} does not hold a state dict")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    model = RetinaFaceR50()
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelLoadError(f"{path.name} is not a RetinaFace-R50 checkpoint: {str(exc).splitlines()[-1][:300]}") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ModelLoadError(f"{path.name} is not a RetinaFace-R50 checkpoint: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
    return model
