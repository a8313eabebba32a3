"""World-of-one behaviour of the runtime: environment, seeding, run directory, train step and evaluate."""
from __future__ import annotations

import contextlib
import io
import json
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from tqdm import tqdm

from launch.distributed import (DistEnv, all_gather_cat, all_gather_tensor, all_reduce_mean, barrier,
                                broadcast_tensor, init_distributed, shutdown_distributed)
from common.errors import LaunchError
from launch.rundir import MetricsLogger, get_logger, prepare_run_dir, progress
from launch.seeding import capture_rng_state, restore_rng_state, seed_everything
from launch.train import accuracy, autocast_context, evaluate, to_channels_last, train_epoch, train_step

CPU = torch.device("cpu")
MAIN = DistEnv(rank=0, world_size=1, local_rank=0, device=CPU, backend=None)
OTHER_RANK = DistEnv(rank=1, world_size=2, local_rank=1, device=CPU, backend="gloo")


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_plain_python_is_a_world_of_one(no_torchrun):
    env = init_distributed(device="cpu")
    assert env == MAIN and env.is_main and not env.is_distributed
    assert not torch.distributed.is_initialized()
    tensor = torch.tensor([1.0, 3.0])
    assert all_reduce_mean(tensor) is tensor and tensor.tolist() == [1.0, 3.0]
    assert broadcast_tensor(tensor).tolist() == [1.0, 3.0]
    assert [piece.tolist() for piece in all_gather_tensor(tensor)] == [[1.0, 3.0]]
    assert all_gather_cat(tensor).tolist() == [1.0, 3.0]
    barrier()
    shutdown_distributed()


def test_impossible_device_or_backend_is_a_user_error(no_torchrun):
    env = init_distributed(device=None)  # picked at run time: what this machine has
    assert env.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    shutdown_distributed()
    if not torch.cuda.is_available():  # a user's explicit request for a device this machine lacks
        with pytest.raises(LaunchError, match="CUDA is not available"):
            init_distributed(device="cuda")
    with pytest.raises(LaunchError, match="backend 'tcp' is unknown"):
        init_distributed(backend="tcp")
    with pytest.raises(LaunchError, match="not a device name"):
        init_distributed(device="gpu0")


def test_seed_plus_rank_and_rng_state_round_trip(tmp_path):
    def draws():
        return random.random(), float(np.random.rand()), torch.rand(1).item()

    assert seed_everything(5, rank=2) == 7
    rank_two = draws()
    seed_everything(7)
    assert draws() == rank_two  # seed + rank, Python's random included
    seed_everything(5, rank=0)
    assert draws() != rank_two

    state = capture_rng_state()
    np.random.randn()  # leave a cached Gaussian in numpy's state
    random.gauss(0, 1)
    path = tmp_path / "rng.pt"
    torch.save(capture_rng_state(), path)
    expected = draws() + (np.random.randn(), random.gauss(0, 1))
    restore_rng_state(torch.load(path, weights_only=True))
    assert draws() + (np.random.randn(), random.gauss(0, 1)) == expected
    restore_rng_state(state)


def test_deterministic_flag_toggles_torch():
    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


class WithAuxHead(torch.nn.Module):
    """Returns (logits, aux_logits) in training, like the DARTS evaluation network."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 3)
        self.aux = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.body(x), (self.aux(x) if self.training else None)


def test_train_step_adds_weighted_auxiliary_loss_and_clips():
    torch.manual_seed(0)
    model = WithAuxHead()
    images, labels = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with torch.no_grad():
        main_loss = torch.nn.functional.cross_entropy(model.body(images), labels)
        aux_loss = torch.nn.functional.cross_entropy(model.aux(images), labels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    result = train_step(model, images, labels, optimizer, aux_weight=0.4, grad_clip=1e-3)
    assert result["loss"] == pytest.approx((main_loss + 0.4 * aux_loss).item(), rel=1e-6)
    total_norm = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert total_norm.item() == pytest.approx(1e-3, rel=1e-3)  # clipped to grad_clip
    assert 0.0 <= result["top1"] <= 100.0
    plain = train_step(model, images, labels, optimizer, aux_weight=0.0, grad_clip=None)
    assert plain["loss"] == pytest.approx(main_loss.item(), rel=1e-6)


def test_train_epoch_learns_and_evaluate_restores_mode():
    torch.manual_seed(0)
    features = torch.randn(64, 4)
    labels = (features[:, 0] > 0).long()
    batches = [(features[i:i + 16], labels[i:i + 16]) for i in range(0, 64, 16)]
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    before = evaluate(model, batches, env=MAIN)
    for _ in range(15):
        summary = train_epoch(model, batches, optimizer, env=MAIN)
    assert summary["steps"] == 4 and summary["count"] == 64
    assert train_epoch(model, batches, optimizer, env=MAIN, max_steps=2)["steps"] == 2
    model.train()
    after = evaluate(model, batches, env=MAIN)
    assert model.training  # mode restored
    assert after["count"] == 64 and after["top5"] == 100.0  # only 2 classes: top-5 holds every label
    assert after["loss"] < before["loss"] and after["top1"] > 90.0
    model.eval()
    assert evaluate(model, batches, env=MAIN, max_batches=1)["count"] == 16 and not model.training



def _linear_problem(seed: int = 0):
    torch.manual_seed(seed)
    features = torch.randn(80, 4)
    labels = (features[:, 0] > 0).long()
    batches = [(features[i:i + 16], labels[i:i + 16]) for i in range(0, 80, 16)]
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return batches, model


def test_train_epoch_calls_before_step_once_per_batch_in_order_before_its_step():
    batches, model = _linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def record(index, images, labels):
        calls.append((index, images, labels, [p.detach().clone() for p in model.parameters()]))

    summary = train_epoch(model, batches, optimizer, env=MAIN, max_steps=3, before_step=record)
    assert summary["steps"] == 3 and [call[0] for call in calls] == [0, 1, 2]  # not for undrawn batch 3
    assert all(images is batches[i][0] and labels is batches[i][1] for i, images, labels, _ in calls)
    # Each call sees the weights after the previous step and before its own: one train_step apart.
    _, replay = _linear_problem()
    replay_optimizer = torch.optim.SGD(replay.parameters(), lr=0.1)
    for index, images, labels, weights in calls:
        assert all(torch.equal(a, b) for a, b in zip(weights, replay.parameters()))
        train_step(replay, images, labels, replay_optimizer)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), replay.parameters()))
    assert train_epoch(model, batches, optimizer, env=MAIN, max_steps=0, before_step=record)["steps"] == 0
    assert len(calls) == 3


def test_what_before_step_changes_the_step_uses():
    batches, model = _linear_problem()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def only_first_batch_learns(index, images, labels):  # the hook runs before the step it governs
        for group in optimizer.param_groups:
            group["lr"] = 0.1 if index == 0 else 0.0

    train_epoch(model, batches, optimizer, env=MAIN, before_step=only_first_batch_learns)
    _, one_step = _linear_problem()
    train_step(one_step, *batches[0], torch.optim.SGD(one_step.parameters(), lr=0.1))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), one_step.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), start))

    def shift_weights(index, images, labels):  # a parameter update in the hook (as the alpha step is)
        with torch.no_grad():
            model[0].bias.add_(1.0)

    batches, model = _linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    bias = model[0].bias.detach().clone()
    train_epoch(model, batches, optimizer, env=MAIN, before_step=shift_weights)
    for _ in batches:  # lr 0: the hook alone moved the bias, once per batch
        bias += 1.0
    assert torch.equal(model[0].bias, bias)

def test_accuracy_and_cpu_device_helpers():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    assert accuracy(logits, torch.tensor([1, 2]), topk=(1, 2, 3)) == pytest.approx([50.0, 50.0, 100.0])
    assert isinstance(autocast_context(CPU), contextlib.nullcontext)
    model = torch.nn.Conv2d(3, 4, 3)
    assert to_channels_last(model, CPU) is model and model.weight.is_contiguous()


@dataclass
class RunConfig:
    lr: float = 0.1


def test_run_directory_config_logs_metrics_and_progress(tmp_path, capsys):
    run_dir = prepare_run_dir(tmp_path / "run", MAIN, RunConfig())
    assert (run_dir / "config.yaml").read_text() == "lr: 0.1\n" and (run_dir / "checkpoints").is_dir()
    prepare_run_dir(run_dir, MAIN, RunConfig(lr=0.2))  # a resumed run with a changed flag
    assert (run_dir / "config.1.yaml").read_text() == "lr: 0.1\n"
    assert (run_dir / "config.yaml").read_text() == "lr: 0.2\n"

    main_log = get_logger("launch-test", MAIN, run_dir)
    main_log.info("hello from rank 0")
    other_log = get_logger("launch-test-other", OTHER_RANK, run_dir)
    other_log.info("hello from rank 1")
    for logger in (main_log, other_log):
        for handler in logger.handlers:
            handler.flush()
    console = capsys.readouterr().err
    assert "hello from rank 0" in console and "hello from rank 1" not in console
    assert "hello from rank 0" in (run_dir / "log.txt").read_text()
    assert "hello from rank 1" in (run_dir / "log.rank1.txt").read_text()
    for logger in (main_log, other_log):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()

    with MetricsLogger(run_dir, MAIN) as metrics:
        metrics.log(1, **{"train/loss": torch.tensor(0.5), "train/top1": 50})
        metrics.log(2, **{"train/loss": np.float32(0.25)})
    with MetricsLogger(run_dir, OTHER_RANK) as silent:
        silent.log(3, loss=1.0)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train/loss"]) for r in records] == [(1, 0.5), (2, 0.25)] and records[0]["train/top1"] == 50
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    quiet = progress(range(3), OTHER_RANK, desc="x", disable=False)
    assert quiet.disable and list(quiet) == [0, 1, 2]  # other ranks: a disabled bar, whatever was asked
    bar = progress(range(3), MAIN, desc="x", file=io.StringIO(), disable=False)
    assert isinstance(quiet, tqdm) and isinstance(bar, tqdm) and list(bar) == [0, 1, 2]


def test_synced_batchnorm_swaps_in_sync_modules_sharing_the_tensors_and_swaps_back():
    from launch.distributed import synced_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Sequential(torch.nn.BatchNorm2d(4, affine=False)))
    originals = [model[1], model[2][0]]
    model.eval()
    with synced_batchnorm(model) as inside:
        synced = [inside[1], inside[2][0]]
        assert all(isinstance(m, torch.nn.SyncBatchNorm) for m in synced) and not synced[0].training
        assert synced[0].weight is originals[0].weight and synced[0].running_var is originals[0].running_var
        assert synced[1].weight is None and synced[1].running_mean is originals[1].running_mean
        synced[0].running_mean.add_(1.0)  # what training writes lands in the original module's buffer
        inside.train()
    assert [model[1], model[2][0]] == originals and originals[0].training  # the mode set inside is kept
    assert torch.equal(originals[0].running_mean, torch.ones(4))
    with synced_batchnorm(model, enabled=False) as unchanged:
        assert unchanged[1] is originals[0]
