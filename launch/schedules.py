"""Learning-rate schedules: cosine, sharpDARTS cosine power annealing, linear warmup, constant.

Cosine (SGDR without restarts), step t of T:
    lr(t) = min_lr + (max_lr - min_lr) * (1 + cos(pi * t / T)) / 2

Cosine power annealing (sharpDARTS), epoch e = 1..E with power base k > 1:
    c(e) = (1 + cos(pi * e / E)) / 2
    p(e) = k ** (c(e) + 1)
    p_norm(e) = (p(e) - p(E)) / (p(1) - p(E))        # p normalised to [0, 1] over the schedule
    lr(e) = min_lr + (max_lr - min_lr) * p_norm(e)
so the first epoch runs at max_lr and the last at min_lr; k = 1 is the plain cosine shape (the limit of
p_norm as k -> 1 is c(e) normalised the same way). A larger k drops the rate faster at the start.

Linear warmup over W steps (or epochs) runs lr = max_lr * (i + 1) / (W + 1) for i = 0..W-1, so it rises
to just below max_lr and the main schedule then starts at max_lr over the remaining T - W steps.

Exponential decay (DARTS's ImageNet StepLR(1, gamma=0.97)): lr(e) = max_lr * gamma ** e after e epochs.

:func:`build_scheduler` turns these into a per-step ``LambdaLR`` (call ``scheduler.step()`` after every
``optimizer.step()``); the optimizer's learning rate of each parameter group is that group's max_lr. With
``per_epoch`` the rate changes once per epoch, t above counting epochs (DARTS, pt.darts, darts-pt and
sharpDARTS step their schedulers once per epoch); otherwise at every step, t counting steps.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch

from common.errors import ConfigError

ScheduleKind = Literal["cosine", "cosine_power", "constant", "exponential"]


def cosine_lr(step: int, total: int, max_lr: float, min_lr: float) -> float:
    """Cosine from ``max_lr`` at step 0 to ``min_lr`` at step ``total`` (held there afterwards)."""
    if total <= 0:
        return max_lr
    progress = min(max(step, 0), total) / total
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_warmup(step: int, warmup_steps: int, max_lr: float) -> float:
    """Warmup value for ``step`` in 0..warmup_steps-1: ``max_lr * (step + 1) / (warmup_steps + 1)``."""
    return max_lr * (step + 1) / (warmup_steps + 1)


def _cosine_power_fraction(epoch: int, epochs: int, k: float) -> float:
    """p_norm(e) in [0, 1] for e = 1..E (1 at e = 1, 0 at e = E); see the module docstring."""
    if epochs <= 1:
        return 1.0
    epoch = min(max(epoch, 1), epochs)

    def c(e: int) -> float:
        return (1.0 + math.cos(math.pi * e / epochs)) / 2.0

    if math.isclose(k, 1.0):
        return (c(epoch) - c(epochs)) / (c(1) - c(epochs))
    top, bottom = k ** (c(1) + 1.0), k ** (c(epochs) + 1.0)
    return (k ** (c(epoch) + 1.0) - bottom) / (top - bottom)


def _check_power_k(k: float) -> None:
    if not k >= 1.0:
        raise ConfigError(f"cosine power annealing needs a power base k >= 1 (got {k})")


def cosine_power_annealing(epochs: int, max_lr: float, min_lr: float, k: float,
                           warmup_epochs: int = 0) -> list[float]:
    """One learning rate per epoch (length ``epochs``): linear warmup, then cosine power annealing.

    Example (REFERENCE section 4): ``cosine_power_annealing(10, 0.025, 1e-8, 2)`` gives
    [.025, .02256, .01898, .01485, .01072, .0070, .00397, .00177, .00044, 1e-8].
    """
    _check_power_k(k)
    if epochs < 0 or warmup_epochs < 0:
        raise ConfigError(f"epochs ({epochs}) and warmup epochs ({warmup_epochs}) must not be negative")
    warmup_epochs = min(warmup_epochs, epochs)
    annealed = epochs - warmup_epochs
    rates = [linear_warmup(index, warmup_epochs, max_lr) for index in range(warmup_epochs)]
    rates += [min_lr + (max_lr - min_lr) * _cosine_power_fraction(epoch, annealed, k)
              for epoch in range(1, annealed + 1)]
    return rates


def _lr_at_step(kind: ScheduleKind, step: int, total_steps: int, max_lr: float, min_lr: float,
                warmup_steps: int, power_k: float, gamma: float = 0.97, steps_per_epoch: float = 1.0) -> float:
    if step < warmup_steps:
        return linear_warmup(step, warmup_steps, max_lr)
    main_step, main_total = step - warmup_steps, max(total_steps - warmup_steps, 0)
    if kind == "constant":
        return max_lr
    if kind == "exponential":
        return max_lr * gamma ** (main_step / steps_per_epoch)
    if kind == "cosine":
        return cosine_lr(main_step, main_total, max_lr, min_lr)
    # cosine_power: step i of the main phase is "epoch" i + 1 of main_total, as in the per-epoch list
    return min_lr + (max_lr - min_lr) * _cosine_power_fraction(main_step + 1, main_total, power_k)


def build_scheduler(optimizer: torch.optim.Optimizer, kind: ScheduleKind, total_steps: int, min_lr: float,
                    warmup_steps: int = 0, power_k: float = 2.0, *, steps_per_epoch: int = 1,
                    per_epoch: bool = False, gamma: float = 0.97) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: learning rate of each group = schedule(step) with max_lr = that group's lr.

    ``kind``: "cosine" (to ``min_lr`` at ``total_steps``), "cosine_power" (k = ``power_k``), "constant" or
    "exponential" (x ``gamma`` per epoch of ``steps_per_epoch`` steps); all after ``warmup_steps`` of linear
    warmup. ``per_epoch``: the rate is the schedule's value at the epoch's first step, evaluated in epochs
    (step // steps_per_epoch of total_steps // steps_per_epoch; warmup_steps should then be whole epochs).
    Its ``state_dict`` goes into checkpoints.
    """
    if kind not in ("cosine", "cosine_power", "constant", "exponential"):
        raise ConfigError(f"learning-rate schedule {kind!r} is unknown (use cosine, cosine_power, constant or "
                          "exponential)")
    if kind == "cosine_power":
        _check_power_k(power_k)
    if total_steps < 0 or warmup_steps < 0 or steps_per_epoch < 1:
        raise ConfigError(f"total steps ({total_steps}) and warmup steps ({warmup_steps}) must not be negative, "
                          f"steps per epoch ({steps_per_epoch}) at least 1")
    if not 0 < gamma <= 1:
        raise ConfigError(f"the exponential decay gamma must be in (0, 1] (got {gamma})")
    unit = steps_per_epoch if per_epoch else 1  # steps per unit of the schedule's time

    def factor_for(max_lr: float) -> Callable[[int], float]:
        def factor(step: int) -> float:
            if max_lr == 0:
                return 0.0
            lr = _lr_at_step(kind, step // unit, total_steps // unit, max_lr, min_lr, warmup_steps // unit,
                             power_k, gamma, steps_per_epoch / unit)
            return lr / max_lr
        return factor

    factors = [factor_for(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factors)
