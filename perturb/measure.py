"""How perturb-val measures a network: per-sample outcomes on fixed search-val batches, one BN treatment.

Every accuracy in a comparison (the reference a_ref and each candidate a_i) must see BatchNorm the same
way, and that way must not depend on how far the running statistics have converged. Three treatments
(``MEASUREMENTS``):

- ``recalibrate`` (the default): before measuring, every BN layer's running statistics are reset and
  re-estimated as a cumulative average (``momentum=None``) over a fixed set of R search-train batches
  forwarded in train mode; then the network is evaluated in eval mode (SPOS, Guo et al. 2020;
  Once-for-All, Cai et al. 2020). Each sub-network is measured with statistics that belong to it.
- ``batch``: every search-val batch is normalised with its own statistics (darts-pt's
  "disable running stats for projection"); nothing is estimated, so nothing can be stale.
- ``running``: eval mode with the running statistics as they are (PertNAS and DARTS-PT as published,
  kept for reproduction).

Why ``running`` fails at small budgets (measured, see bench/perturb_noise.py and the README): PyTorch's
running variance is an exponential average with momentum m = 0.1 that starts at 1. After T training steps
it still holds (1 - m)^T of that 1: 0.9^30 = 0.042 after the 30 steps of a 2-epoch phase on 1,000 images.
The outputs of the search cells' depthwise + pointwise convolutions have a variance of about 0.035 there,
so their running variance is about 0.042 + 0.958 * 0.035 = 0.075, twice too large; every such BN layer
shrinks its output by about sqrt(2) in eval mode, the shrinkage compounds through the cells, and top-1
drops from 80-84% (batch statistics or recalibrated) to 11-22%. A candidate then gets K fine-tuning steps
that move the statistics further (0.9^(T+K) of the initial value is left), so removing an op "improves"
accuracy and the parameter-free ops, whose statistics matter least, rank as the most important. At the
paper's budget (about 490 steps per phase) 0.9^490 is negligible; the remaining gap is the drift of the
weights over the last ~10 steps.

The measured outcome is per sample (:class:`Outcomes`: correct 0/1 and cross-entropy), so that scores
s_i = a_i - a_ref are paired differences on the same samples and carry a standard error
(:mod:`perturb.scoring`). Measuring leaves the network's weights, BN buffers and modes as it found them.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from launch.distributed import DistEnv, unwrap_model
from launch.train import autocast_context, evaluate
from perturb.config import MEASUREMENTS

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Outcomes:
    """Per-sample results of one network on search-val samples, in a fixed order.

    correct: (n,) float64, 1.0 where the top-1 class is the label; loss: (n,) float64 cross-entropy.
    """

    correct: torch.Tensor
    loss: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.correct.numel())

    @property
    def top1(self) -> float:
        return top1_percent(self.correct)


def top1_percent(correct: torch.Tensor) -> float:
    """100 * hits / n, evaluate()'s formula, from per-sample 0/1 correctness (n,) (NaN without samples)."""
    return 100.0 * float(correct.sum()) / correct.numel() if correct.numel() else float("nan")


def _batchnorms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def bn_treatment(network: nn.Module, measurement: str, calibration: Sequence[Batch] = ()) -> Iterator[None]:
    """Inside the block, eval-mode forwards of ``network`` normalise as ``measurement`` says (module docstring).

    ``recalibrate`` forwards ``calibration`` (a fixed list of (images, labels) search-train batches) once
    on entry. On exit every BN layer's buffers, momentum and mode are as before.
    """
    if measurement not in MEASUREMENTS:
        raise ValueError(f"measurement must be one of {MEASUREMENTS}, got {measurement!r}")
    module = unwrap_model(network)
    layers = _batchnorms(module) if measurement != "running" else []
    saved = [(bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.momentum, bn.training) for bn in layers]
    try:
        if measurement == "batch":
            # BatchNorm uses the batch's statistics, and updates nothing, when it has no running buffers
            for bn in layers:
                bn.running_mean = bn.running_var = None
        elif measurement == "recalibrate":
            if not calibration:
                raise ValueError("measurement 'recalibrate' needs calibration batches")
            for bn in layers:
                bn.running_mean = torch.zeros_like(bn.running_mean)
                bn.running_var = torch.ones_like(bn.running_var)
                bn.num_batches_tracked = torch.zeros_like(bn.num_batches_tracked)
                bn.momentum = None  # cumulative average over the calibration batches
                bn.train()
            device = next(itertools.chain(module.parameters(), module.buffers())).device
            with torch.no_grad(), autocast_context(device):
                for images, _ in calibration:
                    module(images.to(device, non_blocking=True))
            for bn in layers:
                bn.eval()
        yield
    finally:
        for bn, (mean, var, tracked, momentum, training) in zip(layers, saved):
            bn.running_mean, bn.running_var, bn.num_batches_tracked = mean, var, tracked
            bn.momentum = momentum
            bn.train(training)


class SearchValMeasure:
    """Per-sample outcomes of a network on fixed search-val batches under one BN treatment.

    ``measure(network, batch_ids)`` -> :class:`Outcomes` of batches ``batch_ids`` (indices into
    ``batches``), concatenated in that order. Every rank that holds the same ``batches`` and
    ``calibration`` gets bit-identical outcomes for the same weights (no collective runs).
    """

    def __init__(self, batches: Sequence[Batch], *, measurement: str, calibration: Sequence[Batch] = (),
                 env: DistEnv):
        if measurement == "recalibrate" and not calibration:
            raise ValueError("measurement 'recalibrate' needs calibration batches")
        self.batches = list(batches)
        self.measurement = measurement
        self.calibration = list(calibration)
        self.env = env
        self.batch_sizes = [int(labels.shape[0]) for _, labels in self.batches]

    @property
    def num_batches(self) -> int:
        return len(self.batches)

    def offsets(self, batch_ids: Sequence[int]) -> list[int]:
        """Where each batch of ``batch_ids`` starts in their concatenated outcomes (plus the total at the end)."""
        return [0, *itertools.accumulate(self.batch_sizes[b] for b in batch_ids)]

    def __call__(self, network: nn.Module, batch_ids: Sequence[int]) -> Outcomes:
        with bn_treatment(network, self.measurement, self.calibration):
            result = evaluate(network, [self.batches[b] for b in batch_ids], env=self.env, desc="search-val",
                              sync=False, per_sample=True)
        return Outcomes(result["per_sample_correct"], result["per_sample_loss"])
