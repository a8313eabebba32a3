"""The training and measuring loops of the search, built on ``launch.train.train_step``.

These loops run NO collective of their own (``launch.train.train_epoch`` / ``evaluate`` all-reduce their
sums), because in stage A each rank trains its own members and in perturb-val each rank fine-tunes its own
candidates: ranks do different work at the same time. Under DDP the only collectives are DDP's gradient
all-reduces inside ``backward``.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn

from launch.distributed import unwrap_model
from launch.schedules import build_scheduler
from launch.train import autocast_context, count_correct, split_outputs, train_step
from perturb.config import OptimConfig

Batch = tuple[torch.Tensor, torch.Tensor]


def make_optimizer(network: nn.Module, lr: float, optim: OptimConfig) -> torch.optim.SGD:
    """SGD(lr, momentum, weight decay) over every parameter of ``network`` (masked ops' included: they
    simply get no gradient while masked, so SGD leaves them alone)."""
    return torch.optim.SGD(unwrap_model(network).parameters(), lr=lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, optim: OptimConfig):
    """Per-step cosine from the optimizer's lr to ``optim.learning_rate_min`` over ``total_steps``."""
    return build_scheduler(optimizer, "cosine", total_steps=total_steps, min_lr=optim.learning_rate_min)


def train_batches(model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer, *,
                  grad_clip: float | None, scheduler=None, max_steps: int | None = None) -> dict:
    """Train over ``batches`` (at most ``max_steps``); returns ``{"loss", "top1", "steps"}`` (this rank's means)."""
    model.train()
    loss_sum = correct_sum = count = 0.0
    steps = 0
    for images, labels in batches:
        if max_steps is not None and steps >= max_steps:
            break
        result = train_step(model, images, labels, optimizer, grad_clip=grad_clip, scheduler=scheduler)
        n = labels.shape[0]
        loss_sum += result["loss"] * n
        correct_sum += result["top1"] * n / 100.0
        count += n
        steps += 1
    return {"loss": loss_sum / count if count else math.nan,
            "top1": 100.0 * correct_sum / count if count else math.nan, "steps": steps}


@torch.no_grad()
def top1_accuracy(network: nn.Module, batches: Iterable[Batch]) -> float:
    """Top-1 accuracy (percent) of ``network`` in eval mode over ``batches``, on this rank only."""
    module = unwrap_model(network)
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    correct = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for images, labels in batches:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast_context(device):
                logits, _ = split_outputs(module(images))
            correct += count_correct(logits.float(), labels, topk=(1,))[0].to(device)
            count += labels.shape[0]
    finally:
        module.train(was_training)
    return 100.0 * correct.item() / count if count else math.nan
