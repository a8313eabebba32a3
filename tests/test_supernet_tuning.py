"""The bilevel search in process: DARTS's fresh search-val batch per architecture step, and DARTS-PT's
tuning between decisions as darts-pt runs it (optimizer reset, lr/10, 5 x 16 + 1 epochs, alphas moving)."""
from __future__ import annotations

import logging

import pytest
import torch

from data.loaders import build_loaders
from launch.config import load_config
from launch.distributed import DistEnv
from launch.rundir import prepare_run_dir
from supernet.config import SupernetConfig
from supernet.search import BilevelSearch

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "method": "darts_pt", "seed": 0, "epochs": 1, "eval_batches": 1, "pictures": False,
    "data.dataset": "digits", "data.backend": "memory", "data.batch_size": 16, "data.eval_batch_size": 32,
    "data.train_subset": 96, "data.translate": 1,
    "network.channels": 2, "network.layers": 3, "network.ops": ["max_pool_3x3", "skip_connect", "none"],
    "weights.learning_rate": 0.05, "arch.learning_rate": 0.01,
    "projection.val_batches": 1, "projection.tune_epoch_steps": 1,
}


def make_search(tmp_path, **overrides) -> BilevelSearch:
    cfg = load_config(SupernetConfig, overrides={**TINY, "save": str(tmp_path), "note": "run", **overrides})
    run_dir = prepare_run_dir(tmp_path / "run", ENV, cfg)
    loaders = build_loaders(cfg.data, seed=cfg.seed, device=ENV.device)
    return BilevelSearch(cfg, ENV, loaders, run_dir, logging.getLogger("test_supernet_tuning"), None)


def record_architect(search: BilevelSearch) -> list:
    """Replace the architect's step by a recorder of (val labels, weight-optimizer lr) per call."""
    calls = []
    real_step = search.architect.step

    def step(train_batch, val_batch):
        calls.append((val_batch[1].clone(), search.weight_optimizer.param_groups[0]["lr"]))
        real_step(train_batch, val_batch)

    search.architect.step = step
    return calls


def test_architecture_steps_draw_fresh_augmented_search_val_batches(tmp_path):
    search = make_search(tmp_path, method="darts", epochs=2)
    calls = record_architect(search)
    search.train()
    steps = search.steps_per_epoch  # 48 search-train images, batch 16 -> 3 steps per epoch
    assert len(calls) == 2 * steps
    drawn = [labels for labels, _ in calls]
    assert not torch.equal(drawn[0], drawn[steps])  # epoch 2 does not repeat epoch 1's batches
    # the batches come from arch_val (augmented, drawn afresh), not from the fixed, un-augmented search_val
    loaders = search.loaders
    assert search.val_stream.loader is loaders.arch_val and loaders.arch_val.augmentation.active
    assert not loaders.search_val.augmentation.active
    fixed = search.fixed_val_batches(1)[0][1]
    assert not torch.equal(drawn[0][: len(fixed)], fixed[: len(drawn[0])])
    # each draw is batch_size distinct search-val samples (DARTS: the first batch of a fresh shuffle)
    order = loaders.arch_val.epoch_indices(0)
    first = order[:16]
    assert len(set(first.tolist())) == 16 and set(first.tolist()) <= set(loaders.search_val_indices.tolist())


def test_darts_pt_tunes_81_epochs_at_constant_lr_over_10_with_a_reset_optimizer(tmp_path):
    search = make_search(tmp_path)
    search.train()
    buffers = [search.weight_optimizer.state[p].get("momentum_buffer") for p in search.network.weight_parameters()]
    assert any(b is not None for b in buffers)  # the search's optimizer has momentum
    calls = record_architect(search)
    alphas_before = [a.detach().clone() for a in search.network.arch_parameters()]
    search.project()
    projection = search.state["projection"]
    assert len(projection["plan"]) == 2 * (14 + 3)
    # darts-pt: 14 op groups + 3 node groups, 5 epochs after each group but the last, 1 after the last
    assert search.tuning_plan(projection["plan"]) == (1, 5 * 16 + 1)
    assert projection["tuned_steps"] == 81 and len(calls) == 81  # an architecture step with every tuning step
    assert {lr for _, lr in calls} == {0.05 / 10}  # constant lr/10
    assert not all(torch.equal(a, b) for a, b in zip(search.network.arch_parameters(), alphas_before))
    # the optimizer of the tuning is a fresh one (darts-pt's reset_optimizer), not the search's
    assert search.architect.weight_optimizer is search.weight_optimizer
    assert search.weight_optimizer.param_groups[0]["momentum"] == 0.9
    genotype = search.genotype()
    assert len(genotype.normal) == 8 and len(genotype.reduce) == 8


def test_tuning_options_beyond_darts_pt(tmp_path):
    search = make_search(tmp_path, **{"projection.arch_steps": False, "projection.tune_schedule": "cosine",
                                      "projection.tune_epochs": 1, "projection.final_tune_epochs": 0})
    search.train()
    alphas_before = [a.detach().clone() for a in search.network.arch_parameters()]
    lrs = []
    real_step = search._bilevel_step

    def step(images, labels, **kwargs):
        lrs.append(search.weight_optimizer.param_groups[0]["lr"])
        return real_step(images, labels, **kwargs)

    search._bilevel_step = step
    search.project()
    assert all(torch.equal(a, b) for a, b in zip(search.network.arch_parameters(), alphas_before))  # frozen
    total = 16  # 1 epoch after each of the first 16 groups, none after the last
    expected = [0.001 + (0.005 - 0.001) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * t / total)).item())
                for t in range(total)]
    assert lrs == pytest.approx(expected)


def test_optimizer_is_reset_when_the_projection_starts(tmp_path):
    search = make_search(tmp_path, **{"projection.tune_epochs": 0, "projection.final_tune_epochs": 0})
    search.train()
    trained_optimizer = search.weight_optimizer
    search.project()
    assert search.weight_optimizer is not trained_optimizer
    assert not search.weight_optimizer.state  # no momentum buffers: nothing was tuned since the reset
    assert search.weight_optimizer.param_groups[0]["lr"] == pytest.approx(0.005)
