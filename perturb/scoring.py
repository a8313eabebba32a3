"""Perturb-val: how much held-out accuracy a network loses when one candidate is removed.

For a trained network N with snapshot S (weights, BN statistics, optimizer, RNG), a list of candidates
c_1..c_n (an op on an edge, or a whole edge) and a fine-tuning budget of K steps:

    a_ref = acc(N)                                  (baseline=False)
    a_ref = acc(finetune_K(N))                      (baseline=True: fine-tuned equally, nothing removed)
    a_i   = acc(finetune_K(N without c_i))          each from S, on the SAME K batches and RNG state
    s_i   = a_i - a_ref                             (percentage points)

``acc`` is top-1 on fixed search-val batches (held-out TRAINING data, never the test split), measured
per sample by a :class:`perturb.measure.SearchValMeasure` (one BatchNorm treatment for every task). A more
negative s_i means the network needs c_i more: c_i is more important.

Uncertainty. With per-sample qualities q_ref,j and q_i,j on the same n samples (q = 100 * correctness,
0 or 100; or, with ``score='loss'``, q = -cross-entropy), s_i is the mean of the paired differences
d_ij = q_i,j - q_ref,j, and its standard error is

    SE(s_i) = sd_j(d_ij) / sqrt(n)          (sd with the n - 1 denominator)

A decision keeps the ``keep`` most important candidates (1 op of an edge; 2 edges of a node). It is
*separated* when the first dropped candidate b and the last kept one a differ beyond noise:
s_b - s_a > z * SE(s_b - s_a), the SE again of the paired per-sample differences q_b,j - q_a,j.
Adaptive measurement (``Rounds.max_rounds > 1``): each task's fine-tuned weights are kept, and while the
decision is not separated the next ``Rounds.batches`` search-val batches are measured for every task,
up to ``max_rounds`` rounds; scores are always over all samples measured so far.

Every task (the reference and each candidate) starts with ``snapshot.restore()``, which also resets the
RNG, and the network is restored once more at the end, so perturb-val leaves it exactly as it found it.

Sharding (``shard=True`` in a distributed job of W ranks): candidate i (1-based) runs on rank
``(i - 1) % W``. The reference, when it is a plain measurement (no baseline fine-tuning), is split by
search-val batches over the ranks that run fewer candidates (all ranks when W divides n): a_ref costs
only an evaluation, never more than a candidate's fine-tuning plus the same evaluation, so this never
lengthens the slowest rank's work (for n = 3 on 2 ranks: rank 0 runs c_1, c_3; rank 1 runs c_2 and the
whole reference). Each rank runs its candidates first and its part of the reference last, so no rank
waits for another before the one gather per round; the reference's per-sample outcomes are assembled
from the parts, so a_ref is exactly the one-rank value. With baseline fine-tuning the reference is task 0
of a round robin over tasks 0..n. Outcomes are all-gathered as tensors, so every rank returns the same
scores and takes the same decision.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
import torch.nn as nn

from launch.distributed import DistEnv, all_gather_tensor, unwrap_model
from perturb.config import SCORES
from perturb.measure import Outcomes, top1_percent
from perturb.selection import importance_order
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




def sample_quality(correct: torch.Tensor, loss: torch.Tensor, score: str) -> torch.Tensor:
    """Per-sample quality q (higher is better) whose mean change on removal is the score:
    'top1': q = 100 * correct (the score is in percentage points); 'loss': q = -cross-entropy (in nats)."""
    if score == "top1":
        return 100.0 * correct
    if score == "loss":
        return -loss
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def paired_difference(candidate: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of d_j = candidate_j - reference_j over paired samples.

    candidate, reference: (n,) per-sample qualities (:func:`sample_quality`). mean = sum(d) / n;
    SE = sd(d) / sqrt(n) with the n - 1 denominator (NaN for n < 2).
    """
    d = candidate.to(torch.float64) - reference.to(torch.float64)
    n = d.numel()
    if n == 0:
        return math.nan, math.nan
    mean = float(d.sum()) / n  # for top1: 100 * (hits_i - hits_ref) / n, as evaluate's 100 * correct / count
    se = float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
    return mean, se


@dataclass
class Separation:
    """Whether a decision is beyond noise (module docstring).

    kept: the kept candidates' indices, most important first; last_kept / first_dropped: the two compared;
    margin = s_first_dropped - s_last_kept (>= 0, in the score's unit); standard_error of that paired difference;
    separated: margin > z * standard_error.
    """

    kept: list[int]
    last_kept: int
    first_dropped: int
    margin: float
    standard_error: float
    z: float
    separated: bool

    def describe(self, labels: Sequence[str]) -> str:
        verdict = "separated" if self.separated else "INSIDE NOISE"
        return (f"{verdict}: {labels[self.last_kept]} vs {labels[self.first_dropped]} margin "
                f"{self.margin:.3g} +- {self.standard_error:.2g} (z {self.z:g})")

    def to_dict(self) -> dict:
        return dict(vars(self))


def separation(quality: torch.Tensor, keep: int, z: float) -> Separation | None:
    """The :class:`Separation` of keeping the ``keep`` most important of the candidates whose per-sample
    qualities are ``quality[1:]`` ((n_candidates, n); row 0 is the reference). None when there are no more
    than ``keep`` candidates (nothing is dropped)."""
    reference = quality[0]
    scores = [paired_difference(row, reference)[0] for row in quality[1:]]
    if len(scores) <= keep:
        return None
    order = importance_order(scores)
    last, first_out = order[keep - 1], order[keep]
    margin = scores[first_out] - scores[last]
    _, se = paired_difference(quality[1 + first_out], quality[1 + last])
    separated = bool(margin > z * se) if not math.isnan(se) else False
    return Separation(kept=order[:keep], last_kept=last, first_dropped=first_out, margin=margin,
                      standard_error=se, z=z, separated=separated)


@dataclass(frozen=True)
class Rounds:
    """How much search-val data one perturb-val measures: ``batches`` per round, and (adaptive measurement)
    up to ``max_rounds`` rounds while the decision keeping ``keep`` candidates is not separated at ``z``."""

    batches: int
    max_rounds: int = 1
    keep: int = 1
    z: float = 1.96


@dataclass
class PerturbResult:
    """Scores of one perturb-val call (percent and percentage points).

    reference: a_ref; accuracies: a_i per candidate; scores: s_i = a_i - a_ref (or, with score 'loss',
    L_ref - L_i in nats); standard_errors: SE(s_i);
    loss_changes: mean paired change of the per-sample cross-entropy on removal (L_i - L_ref; positive =
    removal hurts); samples: search-val samples measured; rounds: measurement rounds run;
    separation: the decision's :class:`Separation` (None when nothing is dropped);
    start_digests: SHA-256 of the network's weights at the start of each task, reference first
    (only with ``record_digests``; every task's entry must equal the snapshot's digest).
    """

    reference: float
    accuracies: list[float]
    scores: list[float]
    standard_errors: list[float] = field(default_factory=list)
    loss_changes: list[float] = field(default_factory=list)
    samples: int = 0
    rounds: int = 1
    separation: Separation | None = None
    start_digests: list[str] = field(default_factory=list)

    def to_record(self) -> dict:
        """The JSON record of this result (scores.json)."""
        return {"reference": self.reference, "accuracies": self.accuracies, "scores": self.scores,
                "standard_errors": self.standard_errors, "loss_changes": self.loss_changes,
                "samples": self.samples, "rounds": self.rounds,
                "separation": self.separation.to_dict() if self.separation is not None else None,
                "start_digests": self.start_digests}


FineTune = Callable[[nn.Module, int], None]


class Measure(Protocol):
    """Per-sample outcomes of a network on fixed search-val batches (:class:`perturb.measure.SearchValMeasure`)."""

    num_batches: int

    def offsets(self, batch_ids: Sequence[int]) -> list[int]: ...

    def __call__(self, network: nn.Module, batch_ids: Sequence[int]) -> Outcomes: ...


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
                baseline: bool = False, rounds: Rounds | None = None, score: str = "top1",
                record_digests: bool = False, on_task: Callable[[int, str], None] | None = None) -> PerturbResult:
    """Score ``candidates`` on ``network`` (module docstring). Collective when ``shard`` and distributed.

    Args:
        network: the SearchNetwork (or a DDP wrapper: the plain module is used; no collective runs
            inside fine-tuning, so ranks may run different numbers of tasks).
        snapshot: :class:`Snapshot` of ``network`` (and the optimizer ``finetune`` steps) to start each task from.
        finetune: ``finetune(network, steps)`` trains the network ``steps`` steps on fixed search-train batches.
        measure: per-sample outcomes on fixed search-val batches (:class:`Measure`).
        steps: K, fine-tune steps per candidate (0: measure right after removal).
        shard: spread the tasks over ranks (stages B-D); False: run every task here (stage A members).
        baseline: fine-tune the reference K steps too, so removal is the only difference.
        rounds: search-val batches per round and the adaptive measurement's cap (default: one round of all).
        score: 'top1' (s_i in accuracy points, the method) or 'loss' (s_i = L_ref - L_i, the mean paired
            change of the per-sample cross-entropy in nats: continuous, so less noisy on few samples).
        record_digests: hash the weights at every task's start (tests; costs a pass over the weights).
        on_task: ``on_task(task index, label)`` before each local task's fine-tuning (progress bars).
    """
    module = unwrap_model(network)
    rounds = rounds or Rounds(batches=measure.num_batches)
    if rounds.batches < 1 or rounds.max_rounds < 1:
        raise ValueError(f"need at least one batch and one round, got {rounds}")
    tasks: list[Candidate | None] = [None, *candidates]  # None: the reference, nothing removed
    digests = torch.zeros((len(tasks), 32), dtype=torch.uint8)
    was_training = module.training
    plan = None
    if shard and env.is_distributed:
        plan = TaskPlan.make(len(candidates), env.world_size, split_reference=not (baseline and steps > 0))
    local = plan.order(env.rank) if plan is not None else list(range(len(tasks)))
    adaptive = rounds.max_rounds > 1
    tuned: dict[int, Snapshot] = {}  # each fine-tuned local task's state (weights and masks), for later rounds
    correct = torch.zeros(len(tasks), 0, dtype=torch.float64)
    loss = torch.zeros(len(tasks), 0, dtype=torch.float64)
    decided: Separation | None = None
    rounds_run = 0
    try:
        for round_index in range(rounds.max_rounds):
            batch_ids = list(range(round_index * rounds.batches,
                                   min((round_index + 1) * rounds.batches, measure.num_batches)))
            if not batch_ids:
                break
            offsets = measure.offsets(batch_ids)
            round_outcomes = torch.zeros(len(tasks), 2, offsets[-1], dtype=torch.float64)  # (task, correct | loss, n)
            for index in local:
                task = tasks[index]
                if round_index > 0:  # the state this task was measured in before (a fine-tuned one: with masks)
                    if index in tuned:
                        tuned[index].restore(rng=False)
                    else:
                        snapshot.restore(rng=False)
                    if task is None or index in tuned:
                        _measure_task(module, measure, batch_ids, offsets, index, plan, env, round_outcomes)
                        continue
                else:
                    snapshot.restore()
                    if record_digests:
                        digests[index] = torch.tensor(list(bytes.fromhex(state_digest(module))), dtype=torch.uint8)
                    if on_task is not None:
                        on_task(index, "reference" if task is None else task.label)
                with task.removal(module) if task is not None else contextlib.nullcontext():
                    if round_index == 0 and steps > 0 and (task is not None or baseline):
                        finetune(module, steps)
                        if adaptive:
                            tuned[index] = Snapshot.capture(module)
                    _measure_task(module, measure, batch_ids, offsets, index, plan, env, round_outcomes)
            if plan is not None:
                round_outcomes = _merge_rows(round_outcomes, plan, env)
            correct = torch.cat([correct, round_outcomes[:, 0]], dim=1)
            loss = torch.cat([loss, round_outcomes[:, 1]], dim=1)
            rounds_run = round_index + 1
            decided = separation(sample_quality(correct, loss, score), rounds.keep, rounds.z)
            if decided is None or decided.separated:
                break
    finally:
        snapshot.restore()
        module.train(was_training)
    if plan is not None and record_digests:
        digests = _merge_rows(digests, TaskPlan(plan.owners, ()), env)
    accuracies = [top1_percent(row) for row in correct]
    quality = sample_quality(correct, loss, score)
    stats = [paired_difference(row, quality[0]) for row in quality[1:]]
    return PerturbResult(
        reference=accuracies[0], accuracies=accuracies[1:],
        scores=[mean for mean, _ in stats],
        standard_errors=[se for _, se in stats],
        loss_changes=[float((row - loss[0]).mean()) if loss.shape[1] else math.nan for row in loss[1:]],
        samples=int(correct.shape[1]), rounds=rounds_run, separation=decided,
        start_digests=[bytes(row.tolist()).hex() for row in digests] if record_digests else [])


def _measure_task(module: nn.Module, measure: Measure, batch_ids: list[int], offsets: list[int], index: int,
                  plan: TaskPlan | None, env: DistEnv, outcomes: torch.Tensor) -> None:
    """Fill ``outcomes[index]`` ((2, n): correct, loss) with this rank's outcomes on ``batch_ids`` (for a
    split reference: on this rank's share of the batches, at their positions; the others stay 0)."""
    if index == 0 and plan is not None and plan.reference_ranks:
        part, parts = plan.reference_ranks.index(env.rank), len(plan.reference_ranks)
        mine = list(range(part, len(batch_ids), parts))
        measured = measure(module, [batch_ids[j] for j in mine])
        position = 0
        for j in mine:
            size = offsets[j + 1] - offsets[j]
            outcomes[0, 0, offsets[j]:offsets[j + 1]] = measured.correct[position:position + size]
            outcomes[0, 1, offsets[j]:offsets[j + 1]] = measured.loss[position:position + size]
            position += size
        return
    measured = measure(module, batch_ids)
    outcomes[index, 0] = measured.correct
    outcomes[index, 1] = measured.loss


def _merge_rows(local: torch.Tensor, plan: TaskPlan, env: DistEnv) -> torch.Tensor:
    """Row t of the result is row t of rank ``plan.owners[t]``'s ``local`` (each rank filled its own rows);
    a split reference's row 0 is the sum of the reference ranks' rows (each filled its own positions)."""
    pieces = [piece.to(local.device) for piece in all_gather_tensor(local.to(env.device))]
    merged = local.clone()
    for task, owner in enumerate(plan.owners):
        merged[task] = pieces[owner][task]
    if plan.reference_ranks:
        merged[0] = sum(pieces[rank][0] for rank in plan.reference_ranks)
    return merged
