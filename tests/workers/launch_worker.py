"""Test-only job for tests/test_launch_processes.py: trains a tiny MLP with the launch/ runtime.

It runs the way the real CLIs do (config + overrides, process group from torchrun's environment or a
world of one, seed + rank, run directory, checkpoint every few steps, automatic resume), and at the end
exercises the collectives and writes ``result.pt`` (rank 0) with the final weights and what every rank saw.

    python tests/workers/launch_worker.py --set run_dir=/tmp/run --set train.steps=10
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/workers/launch_worker.py --set ...

Faults for the tests: ``fault.stop_after=S`` exits cleanly after the checkpoint of step S;
``fault.kill_at_step=S`` with ``fault.marker=FILE`` makes rank ``fault.kill_rank`` SIGKILL itself before
step S+1 the first time (when FILE does not exist yet; it creates FILE first).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from launch.checkpoint import CheckpointManager, load_model_state, model_state
from launch.config import ConfigError, add_override_argument, load_config
from launch.distributed import (all_gather_cat, all_gather_tensor, all_reduce_mean, broadcast_tensor,
                                broadcast_tensors, init_distributed, shutdown_distributed, wrap_ddp)
from common.errors import cli_entry
from launch.rundir import MetricsLogger, get_logger, prepare_run_dir
from launch.schedules import build_scheduler
from launch.seeding import seed_everything
from launch.train import evaluate, train_step

DATASET_SIZE = 64
FEATURES = 6
CLASSES = 3


@dataclass
class TrainSection:
    steps: int = 10
    batch_size: int = 8
    lr: float = 0.1
    momentum: float = 0.9
    schedule: Literal["cosine", "cosine_power", "constant"] = "cosine"
    checkpoint_every: int = 2

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"must be at least 1 (got {self.steps})", key="steps")
        if self.lr <= 0:
            raise ConfigError(f"must be positive (got {self.lr})", key="lr")
        if self.checkpoint_every < 1:
            raise ConfigError(f"must be at least 1 (got {self.checkpoint_every})", key="checkpoint_every")


@dataclass
class FaultSection:
    stop_after: int | None = None
    kill_at_step: int | None = None
    kill_rank: int = 0
    marker: str | None = None


@dataclass
class WorkerConfig:
    run_dir: str = "runs/launch_worker"
    seed: int = 0
    device: str | None = None
    train: TrainSection = field(default_factory=TrainSection)
    fault: FaultSection = field(default_factory=FaultSection)


def build_model() -> torch.nn.Module:
    """Linear-ReLU-Dropout-Linear: dropout makes the RNG state part of what must be resumed."""
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, CLASSES)
    )


def fixed_dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """The same 64 samples in every process (own generator, so the global RNG is untouched)."""
    generator = torch.Generator().manual_seed(1234)
    features = torch.randn(DATASET_SIZE, FEATURES, generator=generator)
    labels = (features[:, 0] > 0).long() + (features[:, 1] > 0.5).long()
    return features, labels


def maybe_kill_self(config: WorkerConfig, rank: int, step: int) -> None:
    fault = config.fault
    if fault.kill_at_step != step or fault.kill_rank != rank or fault.marker is None:
        return
    marker = Path(fault.marker)
    if marker.exists():
        return
    with open(marker, "w") as stream:
        stream.write(f"killed rank {rank} at step {step}\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def collective_report(env, network: torch.nn.Module, features, labels) -> dict:
    """What the collectives return on this job; every rank calls it, rank 0 keeps the result."""
    identity = torch.tensor([[env.rank, env.world_size, env.local_rank,
                              int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))]], dtype=torch.int64)
    flat_weights = torch.nn.utils.parameters_to_vector(network.parameters()).detach()
    mean_of_ranks = all_reduce_mean(torch.tensor([float(env.rank)]))
    broadcast = broadcast_tensor(torch.tensor([float(env.rank) + 5.0]), src=0)
    several = [torch.full((2, 3), float(env.rank)), torch.tensor([env.rank + 7]), torch.tensor(env.rank + 0.5)]
    broadcast_tensors(several, src=1)
    shard = slice(env.rank, None, env.world_size)
    evaluation = evaluate(network, [(features[shard], labels[shard])], env=env)
    local_evaluation = evaluate(network, [(features[shard], labels[shard])], env=env, sync=False)
    return {
        "identity": all_gather_cat(identity).tolist(),
        "ragged": [piece.tolist() for piece in all_gather_tensor(torch.arange(env.rank + 1))],
        "weights_equal_on_all_ranks": all(torch.equal(flat_weights, other)
                                          for other in all_gather_tensor(flat_weights)),
        "mean_of_ranks": mean_of_ranks.item(),
        "broadcast_from_0": all_gather_cat(broadcast).tolist(),
        "several_from_1": [piece.tolist() for piece in
                           all_gather_tensor(torch.cat([t.reshape(-1).double() for t in several]))],
        "several_dtypes": [str(t.dtype) for t in several],
        "eval_count": evaluation["count"],
        "local_eval_counts": all_gather_cat(torch.tensor([local_evaluation["count"]])).tolist(),
        "eval_top1": evaluation["top1"],
    }


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_override_argument(parser)
    args = parser.parse_args(argv)
    config = load_config(WorkerConfig, args.config, args.set)

    env = init_distributed(device=config.device)
    seed_everything(config.seed, env.rank)
    run_dir = prepare_run_dir(config.run_dir, env, config)
    logger = get_logger("launch_worker", env, run_dir)

    features, labels = fixed_dataset()
    features, labels = features.to(env.device), labels.to(env.device)
    model = build_model().to(env.device)
    network = wrap_ddp(model, env)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=config.train.momentum,
                                weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, config.train.schedule, config.train.steps, min_lr=1e-3)
    checkpoints = CheckpointManager(run_dir, env, keep=2)

    start = 0
    resumed = checkpoints.load_latest()
    if resumed is not None:
        load_model_state(model, resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        start = resumed["step"]
        logger.info("resumed from step %d", start)

    with MetricsLogger(run_dir, env, tensorboard=False) as metrics:
        network.train()
        for step in range(start, config.train.steps):
            maybe_kill_self(config, env.rank, step)
            batch = torch.randint(0, DATASET_SIZE, (config.train.batch_size,)).to(env.device)
            result = train_step(network, features[batch], labels[batch], optimizer, scheduler=scheduler)
            done = step + 1
            metrics.log(done, **{"train/loss": result["loss"], "train/top1": result["top1"]})
            if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                checkpoints.save(done, {"model": model_state(model), "optimizer": optimizer.state_dict(),
                                        "scheduler": scheduler.state_dict(), "step": done})
            if config.fault.stop_after == done:
                logger.info("stopping after step %d as asked", done)
                shutdown_distributed()
                return 0

    report = collective_report(env, network, features, labels)
    if env.is_main:
        torch.save({"model": model_state(model), "report": report, "resumed_from": start},
                   run_dir / "result.pt")
        logger.info("finished %d steps; report %s", config.train.steps, report)
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
