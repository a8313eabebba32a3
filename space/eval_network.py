"""Evaluation networks: a discrete Genotype stacked into a network trained from scratch (DARTS).

- :class:`EvalNetwork` with ``stem='cifar'``: 3x3 conv stem to ``3C`` channels; for CIFAR (C=36, 20 cells),
  MNIST (1 input channel) and any small image.
- ``stem='imagenet'``: two stride-2 stems (the DARTS mobile setting: C=48, 14 cells, 224x224 input).

Reduction cells sit at ``layers // 3`` and ``2 * layers // 3``. The auxiliary head reads the output of
cell ``2 * layers // 3``. Drop path zeroes a whole op output per sample with probability ``p`` and scales
the rest by ``1 / (1 - p)``; the trainer sets ``network.drop_path_prob`` each epoch.

forward(x: (N, C_in, H, W)) -> (logits (N, classes), aux_logits (N, classes) or None); aux_logits is
computed only in training mode with an auxiliary head.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from space.genotype import INPUT_NODES, Genotype
from space.ops import FactorizedReduce, ReLUConvBN, make_op


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Per-sample drop of a whole branch: x * Bernoulli(1 - p) / (1 - p), mask (N, 1, 1, 1) on x's device."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class EvalCell(nn.Module):
    """A discrete cell. forward(s0, s1, drop_prob) -> (N, len(concat) * C, H', W')."""

    def __init__(self, genotype: Genotype, c_pp: int, c_p: int, channels: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        cell_type = "reduce" if reduction else "normal"
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_pp, channels) if reduction_prev
                            else ReLUConvBN(c_pp, channels, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_p, channels, 1, 1, 0)
        genes = genotype.cell(cell_type)
        self.sources = [source for _, source in genes]
        self.ops = nn.ModuleList(
            make_op(op, channels, 2 if reduction and source < INPUT_NODES else 1, affine=True)
            for op, source in genes)
        self.concat = genotype.concat(cell_type)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for step in range(len(self.ops) // 2):
            node_sum = 0
            for index in (2 * step, 2 * step + 1):
                op = self.ops[index]
                h = op(states[self.sources[index]])
                if self.training and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                node_sum = node_sum + h
            states.append(node_sum)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier (DARTS's AuxiliaryHeadCIFAR / AuxiliaryHeadImageNet): ReLU, 5x5 average pool
    (count_include_pad=False) with stride 3 (CIFAR: 8x8 -> 2x2) or 2 (ImageNet: 7x7 -> 2x2), 1x1 conv 128,
    BN, ReLU, 2x2 conv 768, [BN: CIFAR only; DARTS left it out of the ImageNet head, "for consistency with
    the experiments in the paper"], ReLU, linear. (N, C, H, W) -> (N, num_classes).

    Beyond DARTS, for inputs where that pool does not give 2x2 (other image sizes), the input is average-
    pooled adaptively to 2x2 instead.
    """

    def __init__(self, channels: int, num_classes: int, imagenet: bool = False):
        super().__init__()
        self.pool_stride = 2 if imagenet else 3
        layers = [nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                  nn.Conv2d(128, 768, 2, bias=False)]
        if not imagenet:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, 2, 2): AvgPool2d(5, stride) where that gives 2x2, else adaptive."""
        if all((size - 5) // self.pool_stride + 1 == 2 for size in x.shape[-2:]) and min(x.shape[-2:]) >= 5:
            return F.avg_pool2d(x, 5, stride=self.pool_stride, count_include_pad=False)
        return F.adaptive_avg_pool2d(x, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(x))
        return self.classifier(torch.flatten(self.features(x), 1))


class EvalNetwork(nn.Module):
    """The evaluation network of a genotype (see module docstring).

    Args: genotype; num_classes; channels (C); layers (cells); auxiliary (add the head); in_channels;
    stem ('cifar' or 'imagenet'); drop_path_prob (p, usually ramped by the trainer).
    """

    def __init__(self, genotype: Genotype, num_classes: int, channels: int = 36, layers: int = 20,
                 auxiliary: bool = False, in_channels: int = 3, stem: str = "cifar",
                 drop_path_prob: float = 0.0, stem_multiplier: int = 3):
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        if layers < 1 or channels < 2 or channels % 2:
            raise ValueError(f"need layers >= 1 and an even channel count >= 2, got layers={layers}, C={channels}")
        self.drop_path_prob = drop_path_prob
        self.reduction_layers = sorted({layers // 3, 2 * layers // 3}) if layers >= 3 else []
        self.aux_layer = 2 * layers // 3 if auxiliary else None

        if stem == "cifar":
            c_stem = stem_multiplier * channels
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(c_stem))
            self.stem1 = None
            c_pp, c_p, reduction_prev = c_stem, c_stem, False
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels // 2), nn.ReLU(inplace=True),
                nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=True),
                                       nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(channels))
            c_pp, c_p, reduction_prev = channels, channels, True

        c_curr = channels
        self.cells = nn.ModuleList()
        self.auxiliary_head = None
        for index in range(layers):
            reduction = index in self.reduction_layers
            if reduction:
                c_curr *= 2
            cell = EvalCell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if index == self.aux_layer:
                self.auxiliary_head = AuxiliaryHead(c_p, num_classes, imagenet=stem == "imagenet")
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.stem1 is None:
            s0 = s1 = self.stem(x)
        else:
            s0 = self.stem(x)
            s1 = self.stem1(s0)
        aux_logits = None
        for index, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if index == self.aux_layer and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        return logits, aux_logits


def count_parameters(module: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Number of parameters; the auxiliary head is excluded by default (as DARTS reports)."""
    skip = set()
    if exclude_auxiliary and getattr(module, "auxiliary_head", None) is not None:
        skip = {id(p) for p in module.auxiliary_head.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)
