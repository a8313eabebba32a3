"""Perturb-val: how much held-out accuracy a network loses when one candidate is removed.

For a trained network N with snapshot S (weights, BN statistics, optimizer, RNG), a list of candidates
c_1..c_n (an op on an edge, or a whole edge) and a fine-tuning budget of K steps:

    a_ref = acc(N)                                  (baseline=False)
    a_ref = acc(finetune_K(N))                      (baseline=True: fine-tuned equally, nothing removed)
    a_i   = acc(finetune_K(N without c_i))          each from S, on the SAME K batches and RNG state
    s_i   = a_i - a_ref                             (percentage points)

``acc`` is top-1 on a fixed set of search-val batches (held-out TRAINING data, never the test split).
A more negative s_i means the network needs c_i more: c_i is more important.

Every task (the reference and each candidate) starts with ``snapshot.restore()``, which also resets the
RNG, and the network is restored once more at the end, so perturb-val leaves it exactly as it found it.

Sharding (``shard=True`` in a distributed job of W ranks): candidate i (1-based) runs on rank
``(i - 1) % W``. The reference, when it is a plain measurement (no baseline fine-tuning) and a
``measure_part`` is given, is split by search-val batches over the ranks that run fewer candidates (all
ranks when W divides n): a_ref costs only an evaluation, never more than a candidate's fine-tuning plus
the same evaluation, so this never lengthens the slowest rank's work (for n = 3 on 2 ranks: rank 0 runs
c_1, c_3; rank 1 runs c_2 and the whole reference). Each rank runs its candidates first and its part of
the reference last, so no rank waits for another before the one gather at the end; the correct counts
are summed, so a_ref is exactly the one-rank value. Otherwise (baseline fine-tuning, or no
``measure_part``) the reference is task 0 of a round robin over tasks 0..n. Accuracies are all-gathered
as tensors, so every rank returns the same scores and takes the same decision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn

from launch.distributed import DistEnv, all_gather_tensor, all_reduce_sum, unwrap_model
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
# measure_part(network, part, parts) -> (correct, count): top-1 hits and samples on batches j with
# j % parts == part of the same search-val batches as ``measure``, which must equal 100 * correct / count
MeasurePart = Callable[[nn.Module, int, int], tuple[int, int]]


@dataclass(frozen=True)
class TaskPlan:
    """Which rank runs what in one sharded perturb-val of n candidates on W ranks (module docstring).

    owners[t]: the rank that runs task t (0: the reference, i: candidate i); for a split reference, the
    first of ``reference_ranks`` (it reports the reference's start digest). reference_ranks: the ranks that
    each measure a part of the reference (empty: the reference is an ordinary task).
    """

    owners: tuple[int, ...]
    reference_ranks: tuple[int, ...]

    @classmethod
    def make(cls, n_candidates: int, world_size: int, split_reference: bool) -> "TaskPlan":
        if not split_reference:
            return cls(tuple(t % world_size for t in range(n_candidates + 1)), ())
        extra = n_candidates % world_size  # ranks 0..extra-1 run one candidate more than the others
        light = tuple(range(extra, world_size)) if extra else tuple(range(world_size))
        return cls((light[0],) + tuple((i - 1) % world_size for i in range(1, n_candidates + 1)), light)

    def order(self, rank: int) -> list[int]:
        """The tasks ``rank`` runs, in order: its candidates, then the reference (first when it is a task)."""
        mine = [t for t, owner in enumerate(self.owners) if owner == rank]
        if self.reference_ranks:
            mine = [t for t in mine if t != 0] + ([0] if rank in self.reference_ranks else [])
        return mine


def perturb_val(network: nn.Module, candidates: Sequence[Candidate], *, snapshot: Snapshot,
                finetune: FineTune, measure: Measure, steps: int, env: DistEnv, shard: bool = True,
                baseline: bool = False, record_digests: bool = False,
                measure_part: MeasurePart | None = None,
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
        measure_part: ``measure`` in parts (see :data:`MeasurePart`); lets ranks split the reference.
        on_task: ``on_task(task index, label)`` before each local task (progress bars).
    """
    module = unwrap_model(network)
    tasks: list[Candidate | None] = [None, *candidates]  # None: the reference, nothing removed
    accuracies = torch.full((len(tasks),), math.nan, dtype=torch.float64)
    digests = torch.zeros((len(tasks), 32), dtype=torch.uint8)
    reference_counts = torch.zeros(2, dtype=torch.float64)  # correct, count of a split reference
    was_training = module.training
    sharded = shard and env.is_distributed
    plan = None
    if sharded:
        split = measure_part is not None and not (baseline and steps > 0)
        plan = TaskPlan.make(len(candidates), env.world_size, split)
    try:
        for index in plan.order(env.rank) if plan is not None else range(len(tasks)):
            task = tasks[index]
            snapshot.restore()
            if record_digests:
                digests[index] = torch.tensor(list(bytes.fromhex(state_digest(module))), dtype=torch.uint8)
            if on_task is not None:
                on_task(index, "reference" if task is None else task.label)
            if task is None and plan is not None and plan.reference_ranks:
                ranks = plan.reference_ranks
                reference_counts += torch.tensor(measure_part(module, ranks.index(env.rank), len(ranks)),
                                                 dtype=torch.float64)
            elif task is None:
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
    if plan is not None:
        accuracies = _gather_owned(accuracies, plan.owners, env)
        digests = _gather_owned(digests, plan.owners, env)
        if plan.reference_ranks:
            correct, count = all_reduce_sum(reference_counts.to(env.device)).tolist()
            accuracies[0] = 100.0 * correct / count if count else math.nan  # evaluate()'s formula
    reference = float(accuracies[0])
    scores = [float(a) - reference for a in accuracies[1:].tolist()]
    return PerturbResult(reference=reference, accuracies=[float(a) for a in accuracies[1:].tolist()],
                         scores=scores,
                         start_digests=[bytes(row.tolist()).hex() for row in digests] if record_digests else [])


def _gather_owned(local: torch.Tensor, owners: Sequence[int], env: DistEnv) -> torch.Tensor:
    """Row t of the result is row t of rank ``owners[t]``'s ``local`` (each rank filled its own rows)."""
    pieces = all_gather_tensor(local.to(env.device))
    merged = local.clone()
    for task, owner in enumerate(owners):
        merged[task] = pieces[owner][task].to(merged.device)
    return merged
