"""DARTS-PT's perturbation-based projection (Wang et al., ICLR 2021), one decision at a time.

As ruocwang/darts-pt's ``sota/cnn/projection.py`` does it, on a trained supernet (alphas or fixed weights)
the projection makes two kinds of decisions:

- op decision on edge e of a cell type: for each op o on e, ``none`` included, remove o (it is not
  computed; the other ops keep their weights, unnormalised) and measure search-val accuracy a_o, with NO
  fine-tuning. The score is s_o = a_o - a_ref; the edge keeps the op whose removal hurts most,
  argmin_o s_o, and every other op of e is masked from then on (the edge becomes that plain op). Removing
  ``none`` changes nothing (s_none = 0), so ``none`` is kept only when removing every other op raises the
  accuracy; the edge then contributes nothing (darts-pt's one-hot weight on ``none``) and ``fallback``
  names the real op whose removal hurt most, which the genotype uses if the edge survives its node
  decision (darts-pt's genotype writes the first non-``none`` primitive there, max_pool_3x3, whatever the
  scores: a defect not copied);
- edge decision at node k (3, 4, 5; node 2 has exactly 2 edges): remove each incoming edge in turn (an
  edge left with ``none`` included), score it the same way, keep the 2 edges whose removal hurts most and
  mask the others. darts-pt drops the least important edge and re-measures the rest until 2 are left; with
  a deterministic measurement that keeps the same 2 edges.

Order (:func:`projection_plan`): groups of one normal-cell and one reduction-cell decision, first the 14 op
groups (each cell type's edges in a seeded random order), then the 3 node groups; the caller fine-tunes
after every group (darts-pt: 5 epochs, and 1 more after the last, 81 in all). Ties go to the lower index
(op order of the edge's candidates, ``none`` last; darts-pt lists ``none`` first). Scoring reuses perturb/'s
:func:`perturb.scoring.perturb_val` with K = 0 fine-tune steps, so the candidates of one decision are
sharded across ranks (candidate t on rank t % W) and the accuracies all-gathered: every rank takes the same
decision. ``measure`` (a :class:`perturb.measure.SearchValMeasure`) must therefore read the same batches on
every rank; its BatchNorm treatment is the config's ``projection.measurement`` (darts-pt: batch statistics).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch.nn as nn

from launch.distributed import DistEnv, unwrap_model
from perturb.scoring import Candidate, Measure, Rounds, perturb_val
from perturb.selection import importance_order, select_node_edges
from perturb.snapshot import Snapshot
from space.genotype import INPUT_NODES, STEPS
from space.ops import NONE_OP
from space.search_network import NUM_EDGES, SearchNetwork, node_edges


@dataclass(frozen=True)
class CellCandidate(Candidate):
    """A :class:`perturb.scoring.Candidate` of one cell type (None: every cell, the shared-cell case)."""

    cell_type: str | None = None

    @property
    def label(self) -> str:
        prefix = f"{self.cell_type} " if self.cell_type else ""
        return prefix + super().label

    def removal(self, network: nn.Module):
        if self.op is None:
            return network.removed(edges=[self.edge], cell_type=self.cell_type)
        return network.removed(ops=[(self.edge, self.op)], cell_type=self.cell_type)


def projection_plan(network: SearchNetwork, seed: int) -> list[dict]:
    """Every decision of a full projection, in DARTS-PT's order (module docstring), as a flat list.

    Op decisions ``{"kind": "op", "cell_type", "edge", "tune_after"}``, then edge decisions
    ``{"kind": "edge", "cell_type", "node", "tune_after"}``; with separate cells each group is a normal then
    a reduction decision, ``tune_after`` true on the group's last. ``cell_type`` is None for one shared cell
    (groups of one). Each cell type visits its edges (and nodes 3..5) in its own seeded random order, as
    darts-pt's ``np.random.choice`` among the remaining ones; the same seed gives the same plan.
    """
    generator = random.Random(f"darts-pt/{seed}")
    cell_types = [None] if network.shared else ["normal", "reduce"]
    plan = []
    for kind, key, values in (("op", "edge", list(range(NUM_EDGES))),
                              ("edge", "node", list(range(INPUT_NODES + 1, INPUT_NODES + STEPS)))):
        orders = []
        for _ in cell_types:
            order = list(values)
            generator.shuffle(order)
            orders.append(order)
        for position in range(len(values)):
            for index, cell_type in enumerate(cell_types):
                plan.append({"kind": kind, "cell_type": cell_type, key: orders[index][position],
                             "tune_after": index == len(cell_types) - 1})
    return plan


def fallback_ops(records: list[dict]) -> dict[tuple[str, int], str]:
    """``{(cell type, edge): op}`` for every op decision that kept ``none``: the real op the genotype uses
    on such an edge (shared cell: cell type 'normal')."""
    return {(record["cell_type"] or "normal", record["edge"]): record["fallback"]
            for record in records if record["kind"] == "op" and record.get("fallback")}


def _active(network: SearchNetwork, cell_type: str | None):
    return network.active_ops(cell_type or "normal")


def decide(network: nn.Module, decision: dict, *, measure: Measure, env: DistEnv) -> dict:
    """Score and apply one decision of :func:`projection_plan` to ``network``'s masks (collective).

    Returns a record: the decision, the candidates, reference accuracy, accuracies, scores, ``kept`` (the op
    name, or the list of kept edges) and, when an op decision keeps ``none``, ``fallback``.
    """
    module = unwrap_model(network)
    cell_type = decision["cell_type"]
    active = _active(module, cell_type)
    if decision["kind"] == "op":
        edge = decision["edge"]
        ops = list(active[edge])
        if not [op for op in ops if op != NONE_OP]:
            raise ValueError(f"edge {edge} has no op other than none left to keep")
        candidates = [CellCandidate(edge, op, cell_type) for op in ops]
    else:
        edges = [e for e in node_edges(decision["node"]) if active[e]]
        candidates = [CellCandidate(e, None, cell_type) for e in edges]
    record = {key: value for key, value in decision.items() if key != "tune_after"}
    record["candidates"] = [c.label for c in candidates]
    if len(candidates) <= (1 if decision["kind"] == "op" else 2):  # nothing to choose
        result = None
        order = list(range(len(candidates)))
    else:
        snapshot = Snapshot.capture(module)
        keep = 1 if decision["kind"] == "op" else 2
        result = perturb_val(module, candidates, snapshot=snapshot, finetune=lambda _module, _steps: None,
                             measure=measure, steps=0, env=env, shard=True,
                             rounds=Rounds(batches=measure.num_batches, keep=keep))
        record.update({key: value for key, value in result.to_record().items() if key != "start_digests"})
        order = importance_order(result.scores)
    if decision["kind"] == "op":
        kept = ops[order[0]]
        for op in active[edge]:
            if op != kept:
                module.set_active(edge, op, False, cell_type)
        record["kept"] = kept
        if kept == NONE_OP:
            record["fallback"] = next(ops[i] for i in order if ops[i] != NONE_OP)
    else:
        if result is None:
            kept_edges = sorted(c.edge for c in candidates)
        else:
            kept_edges = select_node_edges(result.scores, [c.edge for c in candidates], keep=2)
        for candidate in candidates:
            if candidate.edge not in kept_edges:
                module.set_edge_active(candidate.edge, False, cell_type)
        record["kept"] = kept_edges
    return record
