"""Perturb-val: how much held-out accuracy a network loses when one candidate is removed.

For a trained network N with snapshot S (weights, BN statistics, optimizer, RNG), a list of candidates
c_1..c_n (an op on an edge, or a whole edge) and a fine-tuning budget of K steps:

    a_ref = acc(N)                                  (baseline=False)
    a_ref = acc(finetune_K(N))                      (baseline=True: fine-tuned equally, nothing removed)
    a_i   = acc(finetune_K(N without c_i))          each from S, on the SAME K batches and RNG state
    s_i   = a_i - a_ref                             (percentage points)

``acc`` is top-1 on a fixed set of search-val batches (held-out TRAINING data, never the test split).
A more negative s_i means the network needs c_i more: c_i is more important.

Every task (the reference, then each candidate) starts with ``snapshot.restore()``, which also resets the
RNG, and the network is restored once more at the end, so perturb-val leaves it exactly as it found it.
With ``shard=True`` task t runs on rank ``t % world_size``; the accuracies are all-gathered as tensors, so
every rank returns the same scores and takes the same decision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn

from launch.distributed import DistEnv, all_gather_tensor, unwrap_model
from perturb.snapshot import Snapshot, state_digest


@dataclass(frozen=True)
class Candidate:
    """What perturb-val removes: op ``op`` on edge ``edge``, or (``op=None``) the whole edge."""

    edge: int
    op: str | None = None

    @property
    def label(self) -> str:
        return f"edge {self.edge}" if self.op is None else f"edge {self.edge}: {self.op}"

    def removal(self, network: nn.Module):
        """A context manager under which ``network`` (a SearchNetwork) lacks this candidate."""
        if self.op is None:
            return network.removed(edges=[self.edge])
        return network.removed(ops=[(self.edge, self.op)])


@dataclass
class PerturbResult:
    """Scores of one perturb-val call.

    reference: a_ref (top-1 %); accuracies: a_i per candidate; scores: a_i - a_ref per candidate;
    start_digests: SHA-256 of the network's weights at the start of each task, reference first
    (only with ``record_digests``; every task's entry must equal the snapshot's digest).
    """

    reference: float
    accuracies: list[float]
    scores: list[float]
    start_digests: list[str] = field(default_factory=list)


FineTune = Callable[[nn.Module, int], None]
Measure = Callable[[nn.Module], float]


def shard_of(task: int, env: DistEnv, shard: bool) -> bool:
    """Does this rank run task ``task``? (task t on rank t % world_size when sharding, else every task)."""
    return not shard or task % env.world_size == env.rank


def perturb_val(network: nn.Module, candidates: Sequence[Candidate], *, snapshot: Snapshot,
                finetune: FineTune, measure: Measure, steps: int, env: DistEnv, shard: bool = True,
                baseline: bool = False, record_digests: bool = False,
                on_task: Callable[[int, str], None] | None = None) -> PerturbResult:
    """Score ``candidates`` on ``network`` (module docstring). Collective when ``shard`` and distributed.

    Args:
        network: the SearchNetwork (or a DDP wrapper: the plain module is used; no collective runs
            inside fine-tuning, so ranks may run different numbers of tasks).
        snapshot: :class:`Snapshot` of ``network`` (and the optimizer ``finetune`` steps) to start each task from.
        finetune: ``finetune(network, steps)`` trains the network ``steps`` steps on fixed search-train batches.
        measure: ``measure(network) -> top-1 %`` on fixed search-val batches.
        steps: K, fine-tune steps per candidate (0: measure right after removal).
        shard: spread the tasks over ranks (stages B-D); False: run every task here (stage A members).
        baseline: fine-tune the reference K steps too, so removal is the only difference.
        record_digests: hash the weights at every task's start (tests; costs a pass over the weights).
        on_task: ``on_task(task index, label)`` before each local task (progress bars).
    """
    module = unwrap_model(network)
    tasks: list[Candidate | None] = [None, *candidates]  # None: the reference, nothing removed
    accuracies = torch.full((len(tasks),), math.nan, dtype=torch.float64)
    digests = torch.zeros((len(tasks), 32), dtype=torch.uint8)
    was_training = module.training
    try:
        for index, task in enumerate(tasks):
            if not shard_of(index, env, shard):
                continue
            snapshot.restore()
            if record_digests:
                digests[index] = torch.tensor(list(bytes.fromhex(state_digest(module))), dtype=torch.uint8)
            if on_task is not None:
                on_task(index, "reference" if task is None else task.label)
            if task is None:
                if baseline and steps > 0:
                    finetune(module, steps)
                accuracies[index] = float(measure(module))
            else:
                with task.removal(module):
                    if steps > 0:
                        finetune(module, steps)
                    accuracies[index] = float(measure(module))
    finally:
        snapshot.restore()
        module.train(was_training)
    if shard and env.is_distributed:
        accuracies = _gather_owned(accuracies, env)
        digests = _gather_owned(digests, env)
    reference = float(accuracies[0])
    scores = [float(a) - reference for a in accuracies[1:].tolist()]
    return PerturbResult(reference=reference, accuracies=[float(a) for a in accuracies[1:].tolist()],
                         scores=scores,
                         start_digests=[bytes(row.tolist()).hex() for row in digests] if record_digests else [])


def _gather_owned(local: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Row t of the result is row t of rank (t % world)'s ``local`` (each rank filled its own rows)."""
    pieces = all_gather_tensor(local.to(env.device))
    merged = local.clone()
    for task in range(local.shape[0]):
        merged[task] = pieces[task % env.world_size][task].to(merged.device)
    return merged
