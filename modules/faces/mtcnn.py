"""MTCNN's three nets (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", 2016), with the parameter names of the weights shipped in the facenet-pytorch wheel
(``conv1``, ``prelu1``, ... ``dense6_3``), so the state dicts load strictly.

* P-Net: fully convolutional, 12x12 receptive field, stride 2: face probability + box offsets per cell;
* R-Net: 24x24 crops: probability + box offsets;
* O-Net: 48x48 crops: probability + box offsets + 5 landmarks (10 numbers: the 5 x then the 5 y, as
  fractions of the box).

The weights come from the original Caffe models, which were trained on transposed images (MATLAB's
column-major layout): the dense layers expect features flattened in (width, height, channel) order, so
:func:`_flatten` permutes before flattening. Input: RGB scaled as ``(x - 127.5) / 128``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from modules.errors import ModelLoadError


def _conv(cin: int, cout: int, k: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, k), nn.PReLU(cout)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 2, 1).flatten(1)


class PNet(nn.Module):
    """Proposal net: (N, 3, H, W) -> face probability (N, H', W') and offsets (N, 4, H', W')."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 10, 3)
        self.conv2, self.prelu2 = _conv(10, 16, 3)
        self.conv3, self.prelu3 = _conv(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net: (N, 3, 24, 24) -> probability (N,) and offsets (N, 4)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 28, 3)
        self.conv2, self.prelu2 = _conv(28, 48, 3)
        self.conv3, self.prelu3 = _conv(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten(self.prelu3(self.conv3(x)))))
        return F.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net: (N, 3, 48, 48) -> probability (N,), offsets (N, 4), landmarks (N, 10)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 32, 3)
        self.conv2, self.prelu2 = _conv(32, 64, 3)
        self.conv3, self.prelu3 = _conv(64, 64, 3)
        self.conv4, self.prelu4 = _conv(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten(self.prelu4(self.conv4(x)))))
        return F.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def load_net(name: str, path: Path) -> nn.Module:
    """One net with its weights (a plain state dict, loaded weights-only and strictly), in eval mode."""
    net = NETS[name]()
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, ValueError, AttributeError, TypeError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(f"{path}: not MTCNN {name} weights ({type(exc).__name__}: {exc})") from exc
    return net.eval().requires_grad_(False)
