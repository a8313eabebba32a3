"""The optimizer and schedule of every training phase of the search.

The loops themselves are ``launch.train.train_epoch`` / ``evaluate``; the search calls them with
``sync=False`` wherever ranks do different work at the same time (stage-A members, perturb-val candidates),
so that no collective runs there, and under DDP the only collectives are DDP's gradient all-reduces.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from launch.distributed import unwrap_model
from launch.schedules import build_scheduler
from perturb.config import OptimConfig


def make_optimizer(network: nn.Module, lr: float, optim: OptimConfig) -> torch.optim.SGD:
    """SGD(lr, momentum, weight decay) over every parameter of ``network`` (masked ops' included: they
    simply get no gradient while masked, so SGD leaves them alone)."""
    return torch.optim.SGD(unwrap_model(network).parameters(), lr=lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, optim: OptimConfig, steps_per_epoch: int):
    """Cosine from the optimizer's lr to ``optim.learning_rate_min`` over ``total_steps``:
    lr(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2, with t and T in steps, or in epochs when
    optim.schedule_per is 'epoch' (constant within an epoch; min_lr after the last epoch)."""
    return build_scheduler(optimizer, "cosine", total_steps=total_steps, min_lr=optim.learning_rate_min,
                           steps_per_epoch=max(steps_per_epoch, 1), per_epoch=optim.schedule_per == "epoch")
