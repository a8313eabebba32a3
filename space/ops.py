"""The operations of the DARTS cell space.

``PRIMITIVES`` are the 7 operations of a final cell, in NASBench-301 order. ``none`` (the zero op) is an
extra candidate used only while searching: ``SEARCH_OPS = PRIMITIVES + ('none',)``.

Every op maps ``(N, C, H, W) -> (N, C, ceil(H / stride), ceil(W / stride))``. ``affine=False`` is the search
setting (BN without learnable scale/shift, as in DARTS); pools then get a BN after them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from space.primitives import NONE_OP, PRIMITIVES, SEARCH_OPS  # noqa: E402,F401 (re-exported)


class ReLUConvBN(nn.Sequential):
    """ReLU -> k x k conv -> BN; the 1x1 version preprocesses cell inputs. (N, C_in, H, W) -> (N, C_out, H', W')."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise k x k conv (dilation d) -> 1x1 conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv blocks with dilation 1; only the first one has the stride (DARTS sep_conv)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, dilation=1, affine=affine),
            DilConv(c_in, c_out, kernel_size, 1, padding, dilation=1, affine=affine),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the op's output shape (N, C, ceil(H/s), ceil(W/s))."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve H and W without losing pixels: ReLU, two stride-2 1x1 convs on x and on x shifted by one pixel,
    concatenated on channels, BN. (N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2)); C_out must be even.

    The shifted branch pads one row/column at the bottom/right first, so odd sizes (7x7 on MNIST) work;
    for even sizes the pad is never sampled and the result equals DARTS's.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1))


def make_op(name: str, channels: int, stride: int, affine: bool, pool_bn: bool | None = None) -> nn.Module:
    """Build op ``name`` for ``channels`` channels and ``stride`` 1 or 2.

    ``pool_bn`` (default: ``not affine``, i.e. while searching) appends BN(affine=False) to the pools.
    """
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if pool_bn is None:
        pool_bn = not affine
    if name == "none":
        return Zero(stride)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = (nn.MaxPool2d(3, stride=stride, padding=1) if name == "max_pool_3x3"
                else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
        return nn.Sequential(pool, nn.BatchNorm2d(channels, affine=False)) if pool_bn else pool
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine=affine)
    if name == "sep_conv_3x3":
        return SepConv(channels, channels, 3, stride, 1, affine=affine)
    if name == "sep_conv_5x5":
        return SepConv(channels, channels, 5, stride, 2, affine=affine)
    if name == "dil_conv_3x3":
        return DilConv(channels, channels, 3, stride, 2, dilation=2, affine=affine)
    if name == "dil_conv_5x5":
        return DilConv(channels, channels, 5, stride, 4, dilation=2, affine=affine)
    raise ValueError(f"unknown op {name!r}; choose from {', '.join(SEARCH_OPS)}")
