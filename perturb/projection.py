"""DARTS-PT's perturbation-based projection (Wang et al., ICLR 2021), one decision at a time.

On a trained supernet (alphas or fixed weights), the projection makes two kinds of decisions:

- op decision on edge e of a cell type: for each op o on e (``none`` excluded), remove o (it is not
  computed; the other ops keep their weights) and measure search-val accuracy a_o, with NO fine-tuning.
  The score is s_o = a_o - a_ref; the edge keeps the op whose removal hurts most, argmin_o s_o, and every
  other op of e (``none`` included) is masked from then on (the edge becomes that plain op);
- edge decision at node k (3, 4, 5; node 2 has exactly 2 edges): remove each incoming edge in turn, score it
  the same way, keep the 2 edges whose removal hurts most and mask the others.

Decisions are visited in a random order (edges first, then nodes, each list shuffled with a seeded
generator); the caller fine-tunes the weights between decisions. Scoring reuses perturb/'s
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
from perturb.selection import most_important, select_node_edges
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
    """Every decision of a full projection, in DARTS-PT's order: all op decisions ``{"kind": "op",
    "cell_type", "edge"}`` shuffled, then the edge decisions ``{"kind": "edge", "cell_type", "node"}`` of
    nodes 3..5 shuffled. ``cell_type`` is None for one shared cell. The same seed gives the same plan."""
    generator = random.Random(f"darts-pt/{seed}")
    cell_types = [None] if network.shared else ["normal", "reduce"]
    ops = [{"kind": "op", "cell_type": t, "edge": e} for t in cell_types for e in range(NUM_EDGES)]
    nodes = [{"kind": "edge", "cell_type": t, "node": n} for t in cell_types
             for n in range(INPUT_NODES + 1, INPUT_NODES + STEPS)]
    generator.shuffle(ops)
    generator.shuffle(nodes)
    return ops + nodes


def _active(network: SearchNetwork, cell_type: str | None):
    return network.active_ops(cell_type or "normal")


def decide(network: nn.Module, decision: dict, *, measure: Measure, env: DistEnv) -> dict:
    """Score and apply one decision of :func:`projection_plan` to ``network``'s masks (collective).

    Returns a record: the decision, the candidates, reference accuracy, accuracies, scores and ``kept``
    (the op name, or the list of kept edges).
    """
    module = unwrap_model(network)
    cell_type = decision["cell_type"]
    active = _active(module, cell_type)
    if decision["kind"] == "op":
        edge = decision["edge"]
        ops = [op for op in active[edge] if op != NONE_OP]
        candidates = [CellCandidate(edge, op, cell_type) for op in ops]
    else:
        edges = [e for e in node_edges(decision["node"]) if [op for op in active[e] if op != NONE_OP]]
        candidates = [CellCandidate(e, None, cell_type) for e in edges]
    record = dict(decision, candidates=[c.label for c in candidates])
    if len(candidates) <= (1 if decision["kind"] == "op" else 2):  # nothing to choose
        result = None
        choice = list(range(len(candidates)))
    else:
        snapshot = Snapshot.capture(module)
        keep = 1 if decision["kind"] == "op" else 2
        result = perturb_val(module, candidates, snapshot=snapshot, finetune=lambda _module, _steps: None,
                             measure=measure, steps=0, env=env, shard=True,
                             rounds=Rounds(batches=measure.num_batches, keep=keep))
        record.update({key: value for key, value in result.to_record().items() if key != "start_digests"})
        choice = [most_important(result.scores)] if decision["kind"] == "op" else None
    if decision["kind"] == "op":
        if not ops:
            raise ValueError(f"edge {edge} has no op other than none left to keep")
        kept = ops[choice[0]]
        for op in active[edge]:
            if op != kept:
                module.set_active(edge, op, False, cell_type)
        record["kept"] = kept
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
