"""The GPEN face-restoration generator (``FullGenerator`` of GPEN-BFR-256/512/1024) in plain PyTorch.

GPEN = a convolutional encoder whose feature maps are fed, as "noise", into a StyleGAN2 decoder whose
style vector also comes from the encoder. Upstream builds it on StyleGAN2's fused CUDA ops; here every
op (bias + leaky ReLU, the FIR blur / upsample) is written with ordinary torch functions, so the same
module runs on CPU and GPU, in fp32 or fp16.

The module and parameter names are fixed by the released ``.pth`` files (they load with ``strict=True``):

* ``generator.*``: the StyleGAN2 decoder: ``style.{1..8}`` mapping MLP, ``input.input`` constant,
  ``conv1`` + ``to_rgb1`` at 4x4, then per resolution 8..size two ``convs`` and one ``to_rgbs`` entry.
  Its noise inputs are concatenated (not added), so every layer after a styled conv sees twice the
  channels.
* ``ecd0`` (1x1 conv from RGB) and ``ecd1..ecd{log2(size)-2}`` (stride-2 3x3 convs down to 4x4):
  the encoder; ``final_linear`` maps the 4x4 features to the 512-wide style vector.

This module is imported only inside jobs (never at extension import or register time).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .variants import N_MLP, STYLE_DIM, Variant

#: the FIR filter StyleGAN2 uses for anti-aliased resampling
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def channel_widths(size: int, channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Feature channels per resolution (StyleGAN2's table scaled by ``narrow``)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: int(c * narrow) for res, c in base.items() if res <= size}


def fir_kernel(scale: float = 1.0) -> torch.Tensor:
    taps = torch.tensor(BLUR_TAPS)
    k = torch.outer(taps, taps)
    return k / k.sum() * scale


def upfirdn(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Zero-insertion upsampling by ``up``, zero padding ``pad`` (before, after) on both axes, then a
    depthwise FIR filter with ``kernel`` (true convolution: the kernel is flipped)."""
    n, c, h, w = x.shape
    x = x.reshape(n * c, 1, h, w)
    if up > 1:
        x = x.reshape(n * c, 1, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n * c, 1, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    k = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)[None, None]
    x = F.conv2d(x, k)
    return x.reshape(n, c, x.shape[-2], x.shape[-1])


def bias_lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's fused bias + leaky ReLU (slope 0.2) + gain sqrt(2), unfused."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.to(x.dtype).view(shape), LRELU_SLOPE) * LRELU_GAIN


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return bias_lrelu(x, self.bias)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], up: int = 1, gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(gain))
        self.pad = pad
        self.up = up

    def forward(self, x):
        return upfirdn(x, self.kernel, self.up, self.pad)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x):
        w = self.weight * self.scale
        b = self.bias * self.lr_mul
        if self.activate:
            return bias_lrelu(F.linear(x, w), b)
        return F.linear(x, w, b)


class EqualConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, k: int, *, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, k, k))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * k * k)
        self.stride = stride
        self.padding = padding

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class ConvLayer(nn.Sequential):
    """Encoder conv: [blur] + equalised conv (no bias) + bias/leaky ReLU. Stride 2 when ``down``."""

    def __init__(self, in_ch: int, out_ch: int, k: int, *, down: bool = False):
        layers: list[nn.Module] = []
        if down:
            p = (len(BLUR_TAPS) - 2) + (k - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
            layers.append(EqualConv2d(in_ch, out_ch, k, stride=2, padding=0, bias=False))
        else:
            layers.append(EqualConv2d(in_ch, out_ch, k, stride=1, padding=k // 2, bias=False))
        layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 conv: weights scaled per input channel by the style, optionally demodulated;
    ``up`` = transposed stride-2 conv followed by the FIR blur."""

    def __init__(self, in_ch: int, out_ch: int, k: int, *, demodulate: bool = True, up: bool = False):
        super().__init__()
        self.in_ch, self.out_ch, self.k = in_ch, out_ch, k
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, k, k))
        self.modulation = EqualLinear(STYLE_DIM, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * k * k)
        self.demodulate = demodulate
        self.up = up
        if up:
            p = (len(BLUR_TAPS) - 2) - (k - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(self, x, style):
        n, _c, h, w = x.shape
        s = self.modulation(style).view(n, 1, self.in_ch, 1, 1)
        weight = self.weight * self.scale * s  # (n, out, in, k, k)
        if self.demodulate:
            d = torch.rsqrt(weight.float().pow(2).sum(dim=(2, 3, 4)) + 1e-8).to(weight.dtype)
            weight = weight * d.view(n, self.out_ch, 1, 1, 1)
        x = x.reshape(1, n * self.in_ch, h, w)
        if self.up:
            weight = weight.transpose(1, 2).reshape(n * self.in_ch, self.out_ch, self.k, self.k)
            out = F.conv_transpose2d(x, weight, stride=2, padding=0, groups=n)
            out = out.reshape(n, self.out_ch, out.shape[-2], out.shape[-1])
            return self.blur(out)
        weight = weight.reshape(n * self.out_ch, self.in_ch, self.k, self.k)
        out = F.conv2d(x, weight, padding=self.k // 2, groups=n)
        return out.reshape(n, self.out_ch, out.shape[-2], out.shape[-1])


class NoiseInjection(nn.Module):
    """GPEN's variant: the "noise" (an encoder feature map) is scaled and concatenated."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise):
        return torch.cat((x, self.weight.to(x.dtype) * noise), dim=1)


class ConstantInput(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int):
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, *, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, up=up)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch * 2)

    def forward(self, x, style, noise):
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, *, up: bool = True):
        super().__init__()
        if up:
            self.upsample = Blur((2, 1), up=2, gain=4.0)
        self.conv = ModulatedConv2d(in_ch, 3, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class StyleDecoder(nn.Module):
    """The StyleGAN2 decoder (upstream's ``Generator`` with ``isconcat=True``)."""

    def __init__(self, size: int, channels: dict[int, int]):
        super().__init__()
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(STYLE_DIM, STYLE_DIM, lr_mul=0.01, activate=True) for _ in range(N_MLP)])
        c4 = channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4)
        self.to_rgb1 = ToRGB(c4 * 2, up=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = c4
        for level in range(3, int(math.log2(size)) + 1):
            out_ch = channels[2 ** level]
            self.convs.append(StyledConv(in_ch * 2, out_ch, up=True))
            self.convs.append(StyledConv(out_ch * 2, out_ch))
            self.to_rgbs.append(ToRGB(out_ch * 2))
            in_ch = out_ch

    def forward(self, code: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """``code``: (n, 512) encoder output; ``feats``: encoder maps from 4x4 up to full size."""
        w = self.style(code)
        x = self.conv1(self.input(w.shape[0]), w, feats[0])
        skip = self.to_rgb1(x, w)
        for j, rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * j](x, w, feats[j + 1])
            x = self.convs[2 * j + 1](x, w, feats[j + 1])
            skip = rgb(x, w, skip)
        return skip


class GPEN(nn.Module):
    """GPEN-BFR ``FullGenerator``: RGB in [-1, 1], (n, 3, size, size) -> same shape."""

    def __init__(self, size: int = 512, channel_multiplier: int = 2, narrow: float = 1.0):
        super().__init__()
        if size < 8 or size & (size - 1) or size > 1024:
            raise ValueError(f"GPEN size must be a power of two in 8..1024, not {size}")
        self.size = size
        channels = channel_widths(size, channel_multiplier, narrow)
        self.generator = StyleDecoder(size, channels)
        log_size = int(math.log2(size))
        self.n_encoders = log_size - 1
        self.ecd0 = nn.Sequential(ConvLayer(3, channels[size], 1))
        in_ch = channels[size]
        for i in range(1, self.n_encoders):
            out_ch = channels[size >> i]
            setattr(self, f"ecd{i}", nn.Sequential(ConvLayer(in_ch, out_ch, 3, down=True)))
            in_ch = out_ch
        self.final_linear = nn.Sequential(EqualLinear(channels[4] * 16, STYLE_DIM, activate=True))

    @classmethod
    def for_variant(cls, variant: Variant) -> "GPEN":
        return cls(variant.size, variant.channel_multiplier, variant.narrow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for i in range(self.n_encoders):
            x = getattr(self, f"ecd{i}")(x)
            feats.append(x)
        code = self.final_linear(x.reshape(x.shape[0], -1))
        return self.generator(code, feats[::-1])
