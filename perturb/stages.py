"""The four stages of the evolutionary search (PertNAS), resumable after every decision.

A. Population: member m starts from a random discrete cell (one op per edge, seeded by (seed, m)). For
   each edge e = 0..13: expand e to every candidate op plus ``none``, train a fresh network, perturb-val
   every op of e: row e of the member's score matrix S_m (14 x n_ops). Rank r runs members r, r+W, ...
   on its own; each unit's row is saved at once in the rank's own stage_a/member_<m>.json (its resume
   record). Population output: S = (1/npop) * sum_m S_m, the members' rows all-gathered over the process
   group once every rank is done (perturb/stage_a_records.py).
B. Keep the top_k most important ops per edge of S (plus ``none``); train one network with DDP on all ranks.
C. For each edge in ``edge_order``: perturb-val its ops (candidates sharded over ranks), keep the most
   important, retrain (fresh network, or the current one with weight inheritance).
D. For each node in ``node_order`` (or a seeded permutation of it): perturb-val the removal of each
   incoming edge, keep the 2 most important edges; retrain between nodes.

Every decision of B-D (and the end of A) increments ``state.step`` and calls ``on_decision``
(checkpoint, scores.json, picture).
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from launch.distributed import abort_waits_on_error, wait_for_all
from perturb.runtime import RunCounters, SearchRuntime
from perturb.scoring import Candidate, PerturbResult
from perturb.stage_a_records import exchange
from perturb.config import StageConfig
from perturb.selection import (coarse_select, expand_edge, importance_order, keep_edges, keep_op, most_important,
                               node_visit_order, random_cell, real_ops, select_node_edges, supernet_cell)
from space.genotype import Genotype
from space.ops import NONE_OP
from space.search_network import NUM_EDGES, EdgeCandidates, SearchNetwork, genotype_from_edges, node_edges

@dataclass
class SearchState:
    """Where the search stands; plain Python values only, so it is checkpointed as is.

    member_scores[m][e]: member m's scores for the ops of edge e (NaN until scored); average: S after A;
    cell: the current cell during B-D (14 lists of op names); c_done / d_done: decisions made in C / D;
    decisions: one record per decision; units: stage-A details per "m,e" (reference accuracy,
    accuracies, weight digests); elapsed_s: wall time of the run before this process took over
    (:meth:`wall_time` adds this process's; a checkpoint holds the sum); stage_seconds: wall time per stage
    (a stage interrupted by a restart counts from its resumption); progress: per stage, units (stage A:
    rank 0's member-edge units; C, D: decisions) done of total, seconds per unit and the ETA
    (:class:`StageClock`); counters: what the runtime counts (perturb/runtime.py RunCounters: rank 0's
    seconds per stage in training and perturb-val, the epochs logged).
    """

    stage: str = "A"
    step: int = 0
    member_scores: list = field(default_factory=list)
    average: list | None = None
    cell: list | None = None
    c_done: int = 0
    d_done: int = 0
    decisions: list = field(default_factory=list)
    units: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)
    counters: RunCounters = field(default_factory=RunCounters)

    def __post_init__(self) -> None:
        self._resumed_at = time.time()  # when this process took over: elapsed_s counts the time before

    @classmethod
    def fresh(cls, npop: int, n_ops: int) -> "SearchState":
        return cls(member_scores=[[[math.nan] * n_ops for _ in range(NUM_EDGES)] for _ in range(npop)])

    def wall_time(self) -> float:
        """Seconds of the search so far, across restarts."""
        return self.elapsed_s + time.time() - self._resumed_at

    def state_dict(self) -> dict:
        """A copy of the state as plain Python values, ``elapsed_s`` up to now (a checkpoint's "search")."""
        return {**asdict(self), "elapsed_s": self.wall_time()}

    def load_state_dict(self, data: dict) -> None:
        """Take the state of :meth:`state_dict` (a checkpoint's), in place; a malformed one raises
        TypeError or ValueError (CheckpointManager.restoring turns it into one line)."""
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(self)}:
            raise ValueError("the search state has other fields than this version's")
        loaded = SearchState(**{**data, "counters": RunCounters(**data["counters"])})
        for name in data:
            setattr(self, name, getattr(loaded, name))
        self._resumed_at = time.time()

    def current_cell(self) -> EdgeCandidates:
        return tuple(tuple(ops) for ops in self.cell)


# on_decision(state, network or None, optimizer or None, picture caption or None)
OnDecision = Callable[[SearchState, SearchNetwork | None, torch.optim.Optimizer | None, str | None], None]


def run_search(runtime: SearchRuntime, state: SearchState, on_decision: OnDecision,
               trained: tuple[SearchNetwork, torch.optim.Optimizer] | None = None,
               on_progress: Callable[[SearchState], None] = lambda state: None,
               supernet: "SupernetStageA | None" = None) -> Genotype:
    """Run (or continue) the stages from ``state``; ``trained``: the network/optimizer of a resumed state;
    ``on_progress(state)`` after every stage-A unit of this rank (no collective). ``supernet``: stage A is
    computed on one supernet (:func:`stage_a_on_supernet`) instead of a population."""
    runtime.counters = state.counters  # the runtime counts into the state, which the checkpoints hold
    for stage, run in (("A", stage_a), ("B", stage_b), ("C", stage_c), ("D", stage_d)):
        if state.stage != stage:
            continue
        started = time.time()
        if stage == "A" and supernet is not None:
            trained = stage_a_on_supernet(runtime, state, on_decision, trained, supernet)
        elif stage == "A":
            trained = stage_a(runtime, state, on_decision, on_progress)
        else:
            trained = run(runtime, state, on_decision, *(trained if stage in ("C", "D") else ()))
        state.stage_seconds[stage] = state.stage_seconds.get(stage, 0.0) + time.time() - started
    return genotype_from_edges(state.current_cell())


class StageClock:
    """Progress of one stage with an ETA: units done of ``total``, seconds per unit (over the units timed in
    this process: those finished before a restart count as done but not in the rate), logged after every
    unit and kept in ``state.progress[stage]`` (summary.json)."""

    def __init__(self, stage: str, total: int, log: logging.Logger, state: SearchState, done: int = 0):
        self.stage, self.total, self.log, self.state = stage, total, log, state
        self.done, self._timed, self._started = done, 0, time.time()
        self._record(None)

    def skip(self, count: int) -> None:
        """``count`` units were done before this process started."""
        self.done += count
        self._record(None)

    def tick(self, what: str) -> None:
        self.done += 1
        self._timed += 1
        rate = (time.time() - self._started) / self._timed
        eta = rate * (self.total - self.done)
        self.log.info("stage %s: %d/%d units done (%s), %.1f s/unit, ETA %s", self.stage, self.done, self.total,
                      what, rate, datetime.timedelta(seconds=round(eta)))
        self._record(rate)

    def _record(self, rate: float | None) -> None:
        self.state.progress[self.stage] = {
            "done": self.done, "total": self.total,
            "seconds_per_unit": None if rate is None else round(rate, 3),
            "eta_s": None if rate is None else round(rate * (self.total - self.done), 1)}


# ---- stage A ------------------------------------------------------------------------------------
def stage_a(runtime: SearchRuntime, state: SearchState, on_decision: OnDecision,
            on_progress: Callable[[SearchState], None] = lambda state: None) -> None:
    """Each rank runs its members (r, r+W, ...) edge by edge with no synchronisation between units
    (members differ in cost; a per-unit collective would make every unit cost the slowest member's).
    Each finished unit is written to this rank's ``stage_a/member_<m>.json`` (perturb/stage_a_records.py),
    which a restarted run resumes from, and reported to ``on_progress`` (rank 0: summary.json). A rank that is done waits for the others OUTSIDE any collective
    (launch.distributed.wait_for_all: no timeout can fire however long the slowest member takes), then
    all results are exchanged over the process group and averaged."""
    env, search = runtime.env, runtime.cfg.search
    files = runtime.stage_a_records
    own: dict[int, dict] = {}
    members = list(range(env.rank, search.npop, env.world_size))
    clock = StageClock("A", len(members) * NUM_EDGES, runtime.log, state)
    with abort_waits_on_error("stage_a"):
        for member in members:
            records = own[member] = files.read(member)
            if records:
                runtime.log.info("stage A: member %d resumes with %d of %d edges scored", member, len(records),
                                 NUM_EDGES)
            clock.skip(len(records))
            for edge in range(NUM_EDGES):
                if str(edge) in records:
                    continue
                result = _stage_a_unit(runtime, member, edge, clock.done)
                records[str(edge)] = result.to_record()
                files.write(member, records)
                _maybe_slow(runtime)
                clock.tick(f"member {member} edge {edge}")
                on_progress(state)
    wait_for_all("stage_a", on_wait=lambda waited: runtime.log.info(
        "stage A: this rank's members are done; waiting for the other ranks (%.0f min)", waited / 60))
    for member, records in exchange(own, search.npop, len(search.ops), env).items():
        for edge, record in records.items():
            state.member_scores[member][int(edge)] = record["scores"]
            state.units[f"{member},{edge}"] = {key: value for key, value in record.items() if key != "scores"}
    state.average = population_average(state.member_scores)
    state.stage = "B"
    state.step += 1
    on_decision(state, None, None, None)


def _stage_a_unit(runtime: SearchRuntime, member: int, edge: int, units_done: int) -> PerturbResult:
    """Member ``member``, edge ``edge``: expand, train a fresh network alone, perturb-val every op."""
    search = runtime.cfg.search
    key, tag = f"A/m{member}/e{edge}", f"A member {member} edge {edge}"
    cell = expand_edge(random_cell(runtime.cfg.seed, member, search.ops), edge, tuple(search.ops) + (NONE_OP,))
    network = runtime.new_network(cell, key)
    optimizer = runtime.train(network, search.stage_a, key=key, distributed=False, tag=tag)
    _maybe_crash(runtime, units_done)
    candidates = [Candidate(edge, op) for op in search.ops]
    return runtime.score(network, optimizer, candidates, search.stage_a, key=key, shard=False, tag=tag,
                         keep=search.top_k)


def population_average(member_scores: list) -> list:
    """S = (1/npop) * sum_m S_m, as nested lists (14 x n_ops)."""
    matrix = torch.tensor(member_scores, dtype=torch.float64)  # (npop, 14, n_ops)
    return matrix.mean(dim=0).tolist()


def _maybe_slow(runtime: SearchRuntime) -> None:
    """Test hook (config ``debug``): the slow rank sleeps after each of its stage-A units."""
    debug = runtime.cfg.debug
    if runtime.env.rank == debug.slow_rank and debug.slow_unit_s > 0:
        time.sleep(debug.slow_unit_s)


def _maybe_crash(runtime: SearchRuntime, units_done: int) -> None:
    """Test hook (config ``debug``): SIGKILL this rank once, mid-unit, after it finished enough units."""
    if 0 < runtime.cfg.debug.crash_after_units <= units_done:
        kill_for_test(runtime.cfg.debug, runtime.env.rank, f"killed after {units_done} units")


def kill_for_test(debug, rank: int, reason: str) -> None:
    """Test hook: SIGKILL this process once, if it is rank ``debug.crash_rank`` and ``debug.crash_marker``
    (a file it then creates with ``reason``) does not exist yet."""
    if debug.crash_marker is None or rank != debug.crash_rank:
        return
    marker = Path(debug.crash_marker)
    if marker.exists():
        return
    marker.write_text(reason + "\n")
    os.kill(os.getpid(), signal.SIGKILL)


# ---- stage A on a supernet (the PertNAS supernet variant) --------------------------------------
@dataclass(frozen=True)
class SupernetStageA:
    """Stage A computed on one supernet: ``op_cap`` ops per edge (None: all; :func:`supernet_cell`), trained
    with DDP for ``stage``'s budget, then every op of every edge scored by perturb-val."""

    op_cap: int | None
    stage: StageConfig


def stage_a_on_supernet(runtime: SearchRuntime, state: SearchState, on_decision: OnDecision,
                        trained: tuple[SearchNetwork, torch.optim.Optimizer] | None, supernet: SupernetStageA) -> None:
    """The PertNAS supernet variant's stage A, for a one-member state (npop 1): train the equal-weight
    supernet of :func:`supernet_cell` on all ranks (a decision: checkpointed with its network), then per edge
    e = 0..13 perturb-val the ops present on e (candidates sharded over ranks) into row e of S; ops absent
    from an edge score NaN, which ranks last in stage B. Each edge is a decision (its details in
    ``state.units["S,<e>"]``), so a restart resumes at the next unscored edge. ``trained``: the supernet and
    its optimizer restored from a checkpoint."""
    search = runtime.cfg.search
    ops = list(search.ops)
    if trained is None:
        cell = supernet_cell(ops, supernet.op_cap, runtime.cfg.seed)
        network = runtime.new_network(cell, "supernet")
        optimizer = runtime.train(network, supernet.stage, key="supernet", distributed=True, tag="supernet")
        state.decisions.append({"stage": "supernet", "cell": [list(c) for c in cell]})
        state.step += 1
        on_decision(state, network, optimizer, None)
    else:
        network, optimizer = trained
    for edge in range(NUM_EDGES):
        if f"S,{edge}" in state.units:
            continue  # scored before a restart
        present = list(network.candidates["normal"][edge])
        result = runtime.score(network, optimizer, [Candidate(edge, op) for op in present], supernet.stage,
                               key=f"supernet/e{edge}", shard=True, tag=f"supernet edge {edge}", keep=search.top_k)
        row = [math.nan] * len(ops)
        for op, score in zip(present, result.scores):
            row[ops.index(op)] = score
        state.member_scores[0][edge] = row
        state.units[f"S,{edge}"] = {"ops": present, **result.to_record()}
        state.step += 1
        on_decision(state, network, optimizer, None)
    state.average = [list(row) for row in state.member_scores[0]]
    state.stage = "B"
    state.step += 1
    on_decision(state, None, None, None)


# ---- stage B ------------------------------------------------------------------------------------
def stage_b(runtime: SearchRuntime, state: SearchState, on_decision: OnDecision):
    search = runtime.cfg.search
    cell = coarse_select(state.average, k=search.top_k, ops=search.ops, keep_none=True)
    state.cell = [list(ops) for ops in cell]
    confidence = coarse_confidence(state, search.top_k, search.confidence_z)
    runtime.log.info("B: top-%d ops per edge; %d of %d edges separated from the next op beyond noise", search.top_k,
                     sum(entry["separated"] for entry in confidence), len(confidence))
    network = runtime.new_network(cell, "B")
    optimizer = runtime.train(network, search.stage_b, key="B", distributed=True, tag="B")
    state.decisions.append({"stage": "B", "cell": state.cell, "confidence": confidence})
    state.stage = "C"
    state.step += 1
    on_decision(state, network, optimizer, f"B: top-{search.top_k} ops per edge")
    return network, optimizer


def coarse_confidence(state: SearchState, k: int, z: float) -> list[dict]:
    """Per edge, whether stage B's cut in the population average S is beyond noise.

    a, b: the k-th and (k+1)-th most important ops of S's row; margin = S_b - S_a. The standard error of
    an entry of S is SE(S) = sqrt(sum_m SE_m^2) / npop from the members' paired standard errors, and the
    margin's is sqrt(SE_a^2 + SE_b^2): this treats a and b as independent, which overstates the SE of a
    paired difference, and ignores the spread between members' random cells. separated: margin > z * SE.
    """
    entries = []
    npop = len(state.member_scores)
    for edge, row in enumerate(state.average):
        order = importance_order(row)
        if len(order) <= k:
            continue
        a, b = order[k - 1], order[k]
        errors = [state.units.get(f"{m},{edge}", {}).get("standard_errors") or [math.nan] * len(row)
                  for m in range(npop)]
        se_avg = [math.sqrt(sum(err[i] ** 2 for err in errors)) / npop for i in (a, b)]
        margin, se = row[b] - row[a], math.hypot(*se_avg)
        entries.append({"edge": edge, "last_kept": a, "first_dropped": b, "margin": margin, "standard_error": se,
                        "z": z, "separated": bool(margin > z * se) if not math.isnan(se) else False})
    return entries


def decision_confidence(state: SearchState) -> dict:
    """How confident the search's decisions were: per stage, decisions separated beyond noise of all made,
    and the list of those inside noise (for summary.json)."""
    counts: dict[str, list[int]] = {}
    inside = []
    for record in state.decisions:
        if record["stage"] == "B":
            for entry in record.get("confidence", []):
                counts.setdefault("B", [0, 0])[1] += 1
                counts["B"][0] += entry["separated"]
                if not entry["separated"]:
                    inside.append({"stage": "B", "edge": entry["edge"], "margin": entry["margin"],
                                   "standard_error": entry["standard_error"]})
        elif record.get("separation") is not None:
            separation = record["separation"]
            counts.setdefault(record["stage"], [0, 0])[1] += 1
            counts[record["stage"]][0] += separation["separated"]
            if not separation["separated"]:
                where = {"edge": record["edge"]} if record["stage"] == "C" else {"node": record["node"]}
                inside.append({"stage": record["stage"], **where, "margin": separation["margin"],
                               "standard_error": separation["standard_error"]})
    return {"separated_of_decided": {stage: f"{done}/{total}" for stage, (done, total) in sorted(counts.items())},
            "inside_noise": inside}


# ---- stage C ------------------------------------------------------------------------------------
def stage_c(runtime: SearchRuntime, state: SearchState, on_decision: OnDecision, network: SearchNetwork,
            optimizer: torch.optim.Optimizer):
    search = runtime.cfg.search
    clock = StageClock("C", NUM_EDGES, runtime.log, state, done=state.c_done)
    for position in range(state.c_done, NUM_EDGES):
        edge = search.edge_order[position]
        ops = real_ops(state.cell[edge])
        key, tag = f"C/e{edge}", f"C edge {edge} ({position + 1}/{NUM_EDGES})"
        record = {"stage": "C", "edge": edge, "ops": list(ops)}
        if len(ops) > 1:
            result = runtime.score(network, optimizer, [Candidate(edge, op) for op in ops], search.stage_c,
                                   key=key, shard=True, tag=tag, keep=1)
            best = ops[most_important(result.scores)]
            record.update(result.to_record())
        else:
            best = ops[0]
        record["kept"] = best
        state.cell = [list(o) for o in keep_op(state.current_cell(), edge, best)]
        if search.weight_inheritance:
            for op in ops:
                if op != best:
                    network.set_active(edge, op, False)
            optimizer = runtime.train(network, search.stage_c, key=key, distributed=True, tag=tag,
                                      epochs=search.stage_c.inherit_epochs)
        else:
            network = runtime.new_network(state.current_cell(), key)
            optimizer = runtime.train(network, search.stage_c, key=key, distributed=True, tag=tag)
        state.decisions.append(record)
        state.c_done = position + 1
        if state.c_done == NUM_EDGES:
            state.stage = "D"
        state.step += 1
        clock.tick(f"edge {edge} keeps {best}")
        on_decision(state, network, optimizer, f"C: edge {edge} keeps {best}")
    state.stage = "D"
    return network, optimizer


# ---- stage D ------------------------------------------------------------------------------------
def stage_d(runtime: SearchRuntime, state: SearchState, on_decision: OnDecision, network: SearchNetwork,
            optimizer: torch.optim.Optimizer) -> None:
    search = runtime.cfg.search
    order = node_visit_order(search.node_order, runtime.cfg.seed, search.shuffle_nodes)
    clock = StageClock("D", len(order), runtime.log, state, done=state.d_done)
    for position in range(state.d_done, len(order)):
        node = order[position]
        edges = [e for e in node_edges(node) if real_ops(state.cell[e])]
        key, tag = f"D/n{node}", f"D node {node}"
        result = runtime.score(network, optimizer, [Candidate(e) for e in edges], search.stage_d, key=key,
                               shard=True, tag=tag, keep=2)
        kept = select_node_edges(result.scores, edges, keep=2)
        state.cell = [list(o) for o in keep_edges(state.current_cell(), node, kept)]
        state.decisions.append({"stage": "D", "node": node, "edges": edges, "kept": kept, **result.to_record()})
        last = position == len(order) - 1
        if not last:
            if search.weight_inheritance:
                for e in edges:
                    if e not in kept:
                        network.set_edge_active(e, False)
                optimizer = runtime.train(network, search.stage_d, key=key, distributed=True, tag=tag,
                                          epochs=search.stage_d.inherit_epochs)
            else:
                network = runtime.new_network(state.current_cell(), key)
                optimizer = runtime.train(network, search.stage_d, key=key, distributed=True, tag=tag)
        state.d_done = position + 1
        if last:
            state.stage = "done"
        state.step += 1
        clock.tick(f"node {node} keeps edges {kept}")
        on_decision(state, None if last else network, None if last else optimizer,
                    f"D: node {node} keeps edges {kept}")
