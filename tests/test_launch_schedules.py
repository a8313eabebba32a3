"""LR schedules: the sharpDARTS cosine power annealing example, warmup, and the per-step LambdaLR."""
from __future__ import annotations

import math

import pytest
import torch

from common.errors import UserInputError
from launch.schedules import build_scheduler, cosine_lr, cosine_power_annealing

# REFERENCE section 4: E=10, max 0.025, min 1e-8, k=2.
REFERENCE_EXAMPLE = [0.025, 0.02256, 0.01898, 0.01485, 0.01072, 0.0070, 0.00397, 0.00177, 0.00044, 0.0]


def test_cosine_power_annealing_reproduces_the_reference_example():
    rates = cosine_power_annealing(10, max_lr=0.025, min_lr=1e-8, k=2)
    assert len(rates) == 10
    for got, expected in zip(rates, REFERENCE_EXAMPLE):
        assert abs(got - expected) <= 1e-5
    assert rates[0] == pytest.approx(0.025) and rates[-1] == pytest.approx(1e-8)


def test_cosine_power_annealing_shape_and_warmup():
    plain = cosine_power_annealing(10, 1.0, 0.0, k=1)
    steep = cosine_power_annealing(10, 1.0, 0.0, k=10)
    assert all(a >= b for a, b in zip(plain, plain[1:]))  # monotone decay
    assert all(s <= p + 1e-12 for s, p in zip(steep, plain))  # larger k drops faster
    warm = cosine_power_annealing(12, 0.025, 1e-8, k=2, warmup_epochs=2)
    assert warm[:2] == pytest.approx([0.025 / 3, 0.025 * 2 / 3])  # rising linearly toward max_lr
    assert warm[2:] == pytest.approx(cosine_power_annealing(10, 0.025, 1e-8, k=2))
    with pytest.raises(UserInputError, match="k >= 1"):
        cosine_power_annealing(10, 0.1, 0.0, k=0.5)


def test_cosine_lr_end_points():
    assert cosine_lr(0, 100, 0.1, 0.001) == pytest.approx(0.1)
    assert cosine_lr(50, 100, 0.1, 0.001) == pytest.approx(0.001 + 0.099 / 2)
    assert cosine_lr(100, 100, 0.1, 0.001) == pytest.approx(0.001)
    assert cosine_lr(150, 100, 0.1, 0.001) == pytest.approx(0.001)


def lrs_seen(kind: str, total: int, warmup: int = 0, groups=(0.025,)) -> list[list[float]]:
    parameters = [torch.nn.Parameter(torch.zeros(1)) for _ in groups]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(parameters, groups)])
    scheduler = build_scheduler(optimizer, kind, total_steps=total, min_lr=1e-8, warmup_steps=warmup)
    seen = []
    for _ in range(total):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_build_scheduler_per_step():
    assert [lrs[0] for lrs in lrs_seen("cosine_power", 10)] == pytest.approx(
        cosine_power_annealing(10, 0.025, 1e-8, k=2))
    cosine = [lrs[0] for lrs in lrs_seen("cosine", 8, warmup=2)]
    assert cosine[:2] == pytest.approx([0.025 / 3, 0.025 * 2 / 3])
    assert cosine[2:] == pytest.approx([cosine_lr(step, 6, 0.025, 1e-8) for step in range(6)])
    assert [lrs[0] for lrs in lrs_seen("constant", 4)] == pytest.approx([0.025] * 4)
    two_groups = lrs_seen("cosine", 4, groups=(0.1, 0.01))
    assert two_groups[2] == pytest.approx([cosine_lr(2, 4, 0.1, 1e-8), cosine_lr(2, 4, 0.01, 1e-8)])
    assert not any(math.isnan(lr) for lrs in two_groups for lr in lrs)


def lrs_per_step(kind: str, epochs: int, steps_per_epoch: int, **kwargs) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.025)
    scheduler = build_scheduler(optimizer, kind, total_steps=epochs * steps_per_epoch, min_lr=0.001,
                                steps_per_epoch=steps_per_epoch, **kwargs)
    seen = []
    for _ in range(epochs * steps_per_epoch):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_per_epoch_cosine_is_dartss_stepped_cosine_annealing():
    """DARTS: CosineAnnealingLR(T_max=E, eta_min) stepped at every epoch's start: epoch e (0-based) runs at
    eta_min + (lr - eta_min) (1 + cos(pi e / E)) / 2, constant within the epoch (never reaching eta_min)."""
    seen = lrs_per_step("cosine", 5, 3, per_epoch=True)
    expected = [0.001 + 0.024 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert seen == pytest.approx([lr for lr in expected for _ in range(3)])
    smooth = lrs_per_step("cosine", 5, 3)
    assert smooth == pytest.approx([cosine_lr(step, 15, 0.025, 0.001) for step in range(15)])
    assert lrs_per_step("cosine_power", 10, 2, per_epoch=True, power_k=2)[::2] == pytest.approx(
        cosine_power_annealing(10, 0.025, 0.001, k=2))  # sharpDARTS's per-epoch list


def test_exponential_decay_is_dartss_imagenet_steplr():
    """DARTS ImageNet: StepLR(step_size=1, gamma=0.97), lr(e) = 0.1 * 0.97^e."""
    per_epoch = lrs_per_step("exponential", 4, 2, per_epoch=True, gamma=0.97)
    assert per_epoch == pytest.approx([0.025 * 0.97 ** e for e in range(4) for _ in range(2)])
    per_step = lrs_per_step("exponential", 2, 2, gamma=0.97)
    assert per_step == pytest.approx([0.025 * 0.97 ** (s / 2) for s in range(4)])
