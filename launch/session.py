"""One session context for the three drivers (evolutionary search, supernet search, evaluation).

::

    with run_session(run_dir, device=cfg.device, threads=cfg.threads, seed=cfg.seed) as session:
        session.env          # DistEnv: rank, world size, device (launch.distributed.init_distributed)
        session.run_dir      # created on rank 0 (launch.rundir.make_run_dir); nothing inside changed yet
        log = session.logger("search_evolutionary")    # console (rank 0) + log.txt / log.rank<r>.txt
        metrics = session.metrics()                     # metrics.jsonl + TensorBoard, closed at the end

On entry: join the process group (torchrun's environment; a world of one otherwise), on the CPU keep freed
memory in the process (launch/cpu_allocator.py: no page faults per step), cap the CPU threads,
seed every RNG with ``seed + rank`` (when a seed is given: the evaluator passes None, since each of its
``--seeds`` runs seeds itself; the searches pass theirs and also reseed every unit of work), create the run
directory. The logger and the metrics writer are made on demand, because a
driver first checks that a resume fits (fingerprint, checkpoint) before it writes anything into the run
directory. On exit, also after an error: the metrics writer is closed and the process group torn down.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from launch.cpu_allocator import tune_cpu_allocator
from launch.distributed import DistEnv, init_distributed, shutdown_distributed
from launch.rundir import MetricsLogger, get_logger, make_run_dir
from launch.seeding import seed_everything


@dataclass
class Session:
    """A driver's process group, run directory, logger and metrics writer (see the module docstring)."""

    env: DistEnv
    run_dir: Path
    _metrics: MetricsLogger | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.env.device

    def logger(self, name: str) -> logging.Logger:
        """The logger ``name``: console on rank 0, every rank's lines in its log file in the run directory."""
        return get_logger(name, self.env, self.run_dir)

    def metrics(self) -> MetricsLogger:
        """The run's metrics writer (metrics.jsonl on rank 0, TensorBoard), made once, closed on exit."""
        if self._metrics is None:
            self._metrics = MetricsLogger(self.run_dir, self.env)
        return self._metrics

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


@contextlib.contextmanager
def run_session(run_dir: str | os.PathLike, *, device: str | None = None, threads: int | None = None,
                seed: int | None = None, dist_timeout_s: float | None = None,
                create_run_dir: bool = True) -> Iterator[Session]:
    """Set up a driver's session (module docstring) and tear it down on exit. ``create_run_dir=False``: the
    driver calls :func:`launch.rundir.make_run_dir` itself once its inputs are checked (the searches build
    their loaders first, so a missing data file leaves no empty run directory behind)."""
    env = init_distributed(device=device, timeout_s=dist_timeout_s)
    session, finished = None, False
    try:
        tune_cpu_allocator(env.device)
        if threads is not None:
            torch.set_num_threads(threads)
        if seed is not None:
            seed_everything(seed, env.rank)
        session = Session(env, make_run_dir(run_dir, env) if create_run_dir else Path(run_dir))
        yield session
        finished = True
    finally:
        if session is not None:
            session.close()
        shutdown_distributed(wait_for_others=finished)
