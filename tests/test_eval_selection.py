"""train_eval picks "best" on the held-out part of the TRAINING set, never on the test split."""
from __future__ import annotations

import pytest
import torch

import evaluation.run as run
from evaluation.recipe import EvalConfig
from launch.config import load_config
from launch.distributed import DistEnv
from space.genotype import builtin_genotype

ENV = DistEnv(0, 1, 0, torch.device("cpu"), None)
TINY = {"epochs": 3, "holdout_validation": True, "device": "cpu", "threads": 1, "max_steps_per_epoch": 2,
        "data.dataset": "digits", "data.backend": "memory", "data.batch_size": 16, "data.eval_batch_size": 64,
        "data.search_portion": 0.8, "data.cutout": 0, "network.channels": 4, "network.layers": 3,
        "network.auxiliary_weight": 0.0}

VALIDATION = [50.0, 90.0, 60.0]  # the held-out split says epoch 2 is best
TEST_DURING_TRAINING = [99.0, 1.0, 1.0]  # a selection on the test split would pick epoch 1


def test_best_epoch_is_chosen_on_held_out_training_data_and_test_is_only_read_at_the_end(tmp_path, monkeypatch):
    built = {}
    real_build, real_evaluate = run.build_loaders, run.evaluate

    def build_loaders(*args, **kwargs):
        built["loaders"] = real_build(*args, **kwargs)
        return built["loaders"]

    calls = []  # (which split, fingerprint of the evaluated weights)

    def evaluate(model, batches, **kwargs):
        result = dict(real_evaluate(model, batches, **kwargs))
        loaders = built["loaders"]
        split = "validation" if batches is loaders.search_val else "test" if batches is loaders.test else "other"
        fingerprint = sum(p.detach().double().sum().item() for p in model.parameters())
        calls.append((split, fingerprint))
        validated = sum(1 for c in calls if c[0] == "validation")
        if split == "validation":
            result["top1"] = VALIDATION[validated - 1]
        elif split == "test" and validated < 3:  # the test split read during training
            result["top1"] = TEST_DURING_TRAINING[sum(1 for c in calls if c[0] == "test") - 1]
        return result

    monkeypatch.setattr(run, "build_loaders", build_loaders)
    monkeypatch.setattr(run, "evaluate", evaluate)
    config = load_config(EvalConfig, overrides=TINY)
    report = run.train_one_seed(config, builtin_genotype("DARTS_V2"), tmp_path / "run", ENV)
    loaders = built["loaders"]
    assert [split for split, _ in calls] == ["validation"] * 3 + ["test", "test"]
    assert report["validation"]["best_epoch"] == 2 and report["validation"]["best_top1"] == 90.0
    # the "best" model tested at the end is the epoch-2 model, the final one the epoch-3 model
    (_, epoch2), (_, epoch3), (_, final_tested), (_, best_tested) = calls[1], calls[2], calls[3], calls[4]
    assert final_tested == pytest.approx(epoch3) and best_tested == pytest.approx(epoch2)
    assert best_tested != pytest.approx(epoch3)
    # the held-out split is part of the training set, disjoint from what was trained on
    assert set(loaders.search_val.plan.indices.tolist()).isdisjoint(loaders.search_train.plan.indices.tolist())
    assert report["validation"]["count"] == len(loaders.search_val_indices)
