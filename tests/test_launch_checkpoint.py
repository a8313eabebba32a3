"""Atomic checkpoints: round trip, RNG restore, interrupted writes, corrupt files, pruning, real copies."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from launch import checkpoint as checkpoint_module
from launch.checkpoint import CheckpointCorrupt, CheckpointManager, decode_checkpoint, model_state
from launch.distributed import DistEnv, wrap_ddp
from launch.schedules import build_scheduler
from launch.seeding import seed_everything

WORLD_OF_ONE = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)


def tiny_training_state(steps: int = 3):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = build_scheduler(optimizer, "cosine", total_steps=10, min_lr=0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def full_state(model, optimizer, scheduler, step):
    return {"model": model_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "search": {"edge": 3, "scores": [0.5, -1.0], "name": "A"}, "epoch": 2}


def test_round_trip_restores_model_optimizer_scheduler_and_rng(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE)
    seed_everything(11)
    manager.save(3, full_state(model, optimizer, scheduler, 3))
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))

    seed_everything(99)  # a fresh process would start from some other RNG state
    fresh_model, fresh_optimizer, fresh_scheduler = tiny_training_state(steps=0)
    state = manager.load_latest()
    assert (random.random(), np.random.rand()) == expected_draws[:2]
    assert torch.equal(torch.rand(3), expected_draws[2])

    fresh_model.load_state_dict(state["model"])
    fresh_optimizer.load_state_dict(state["optimizer"])
    fresh_scheduler.load_state_dict(state["scheduler"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], tensor)  # BN running stats included
    momentum = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    restored = [fresh_optimizer.state[p]["momentum_buffer"] for p in fresh_model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, restored))
    assert fresh_scheduler.last_epoch == 3 and fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert state["search"] == {"edge": 3, "scores": [0.5, -1.0], "name": "A"} and state["epoch"] == 2
    assert manager.loaded_step == 3


def test_saved_weights_are_a_copy_taken_at_save_time(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    ddp_like = wrap_ddp(model, WORLD_OF_ONE)  # world of one: unchanged
    snapshot = model_state(ddp_like)
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE)
    manager.save(1, {"model": model.state_dict()})  # even the live (aliasing) state_dict is copied on save
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    saved = manager.load_latest(restore_rng=False)["model"]
    for name, tensor in snapshot.items():
        assert torch.equal(saved[name], tensor)
    for name, parameter in model.named_parameters():
        assert not torch.equal(parameter, saved[name])  # training went on; the checkpoint did not follow


def test_interrupted_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE)
    manager.save(2, {"value": torch.tensor([2.0])})

    def crash_before_rename(source, destination):
        raise KeyboardInterrupt("killed between the temp write and the rename")

    monkeypatch.setattr(checkpoint_module.os, "replace", crash_before_rename)
    with pytest.raises(KeyboardInterrupt):
        manager.save(4, {"value": torch.tensor([4.0])})
    monkeypatch.undo()
    assert [step for step, _ in manager.list_checkpoints()] == [2]
    assert torch.equal(manager.load_latest()["value"], torch.tensor([2.0]))

    # A temp file left by a process killed mid-write (no cleanup ran) is ignored, then removed on restart.
    leftover = manager.directory / ".ckpt_000000006.pt.999.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert torch.equal(manager.load_latest()["value"], torch.tensor([2.0]))
    CheckpointManager(tmp_path, WORLD_OF_ONE)
    assert not leftover.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty", "garbage"])
def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(tmp_path, damage):
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE, keep=3)
    manager.save(1, {"value": torch.tensor([1.0])})
    newest = manager.save(2, {"value": torch.tensor([2.0])})
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        middle = len(data) // 2
        newest.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    elif damage == "empty":
        newest.write_bytes(b"")
    else:
        newest.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointCorrupt):
        decode_checkpoint(newest.read_bytes())
    with pytest.warns(UserWarning, match="skipping checkpoint of step 2"):
        state = manager.load_latest()
    assert torch.equal(state["value"], torch.tensor([1.0]))
    assert newest.exists()  # left for inspection, never deleted by loading


def test_keep_prunes_old_checkpoints_and_empty_dir_gives_none(tmp_path):
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE, keep=2)
    assert manager.load_latest() is None
    for step in (1, 2, 3, 10):
        manager.save(step, {"step": step})
    assert [step for step, _ in manager.list_checkpoints()] == [10, 3]
    assert manager.load_latest()["step"] == 10  # numeric order, not string order


def test_pruning_never_keeps_a_corrupt_newer_file_instead_of_a_good_one(tmp_path):
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE, keep=1)
    manager.save(6, {"step": 6})
    manager.path_for(6).write_bytes(b"truncated")
    with pytest.warns(UserWarning):
        assert manager.load_latest() is None  # nothing good: the run starts over ...
    manager.save(2, {"step": 2})  # ... and its new checkpoint survives pruning despite the newer corrupt file
    with pytest.warns(UserWarning, match="step 6"):
        assert manager.load_latest()["step"] == 2


def test_checkpoint_is_plain_weights_only_data(tmp_path):
    """The payload inside the checksummed frame loads with weights_only=True (no arbitrary pickles)."""
    model, optimizer, scheduler = tiny_training_state()
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE)
    path = manager.save(5, full_state(model, optimizer, scheduler, 5))
    payload = decode_checkpoint(path.read_bytes())
    assert payload["step"] == 5 and payload["world_size"] == 1 and len(payload["rng"]) == 1
    assert set(payload["rng"][0]) == {"python", "numpy", "torch", "cuda"}


class Counter:
    """A component of a run's state that is not a torch object (a search's or a training's progress)."""

    def __init__(self, value: int = 0):
        self.value = value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        if type(state.get("value")) is not int:
            raise ValueError("the counter is malformed")
        self.value = state["value"]


def test_components_are_saved_under_their_names_and_resumed_in_place(tmp_path):
    from launch.checkpoint import ModelWeights

    model, optimizer, scheduler = tiny_training_state()
    components = {"model": ModelWeights(model), "optimizer": optimizer, "scheduler": scheduler,
                  "progress": Counter(7)}
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE)
    seed_everything(5)
    manager.save_components(3, components)
    expected = torch.rand(2)

    seed_everything(123)
    fresh_model, fresh_optimizer, fresh_scheduler = tiny_training_state(steps=0)
    fresh = {"model": ModelWeights(fresh_model), "optimizer": fresh_optimizer, "scheduler": fresh_scheduler,
             "progress": Counter()}
    assert CheckpointManager(tmp_path, WORLD_OF_ONE).resume(fresh)
    assert fresh["progress"].value == 7
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fresh_model.state_dict()[name]), name
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    assert torch.equal(torch.rand(2), expected)  # the RNG is where it was at the save


def test_resume_refuses_a_state_that_does_not_fit_in_one_line_and_start_anew_deletes_every_checkpoint(tmp_path):
    from launch.checkpoint import CheckpointInvalid, ModelWeights

    manager = CheckpointManager(tmp_path, WORLD_OF_ONE)
    manager.save(1, {"model": model_state(torch.nn.Linear(2, 2)), "progress": {"value": "x"}})
    manager.save(2, {"model": model_state(torch.nn.Linear(2, 2)), "progress": {"value": "x"}})
    with pytest.raises(CheckpointInvalid, match=r"ckpt_000000002.pt does not fit this run .*counter is malformed"):
        manager.resume({"progress": Counter()})
    with pytest.raises(CheckpointInvalid, match=r"ckpt_000000002.pt holds the weights of another architecture"):
        manager.resume({"model": ModelWeights(torch.nn.Linear(3, 2))})
    with pytest.raises(CheckpointInvalid, match="no 'optimizer' entry"):
        manager.resume({"optimizer": torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)})
    progress = Counter(4)
    assert manager.resume({"progress": progress}, allow=False) is False
    assert progress.value == 4 and manager.list_checkpoints() == []
    assert manager.resume({"progress": progress}) is False  # nothing left to resume from
