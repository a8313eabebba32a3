"""The selection rules of the evolutionary search: pure functions of score vectors and matrices.

A score is an accuracy change on removal (perturb-val): the MORE NEGATIVE, the more important.
Ties are broken deterministically by the lower index (op index in ``PRIMITIVES`` order, or edge index),
so every rank, and every rerun, takes the same decision.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

from space.ops import NONE_OP, PRIMITIVES, SEARCH_OPS
from space.search_network import NUM_EDGES, EdgeCandidates, node_edges


def importance_order(scores: Sequence[float]) -> list[int]:
    """Indices of ``scores`` from most to least important: ascending score, then ascending index.

    NaN (never scored) sorts last.
    """
    return sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), scores[i], i))


def most_important(scores: Sequence[float]) -> int:
    """The index with the most negative score (lowest index on ties)."""
    if not scores:
        raise ValueError("no scores to choose from")
    return importance_order(scores)[0]


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """The ``k`` most important indices, most important first."""
    if not 0 < k <= len(scores):
        raise ValueError(f"k must be in 1..{len(scores)}, got {k}")
    return importance_order(scores)[:k]


def random_cell(seed: int, member: int, ops: Sequence[str] = PRIMITIVES) -> EdgeCandidates:
    """Member ``member``'s initial discrete cell: one op per edge drawn uniformly from ``ops``.

    Drawn from its own generator seeded by (seed, member), so it does not depend on the number of
    ranks or on which rank processes the member.
    """
    generator = random.Random(f"pertnas-cell/{seed}/{member}")
    return tuple((generator.choice(list(ops)),) for _ in range(NUM_EDGES))


def node_visit_order(node_order: Sequence[int], seed: int, shuffle: bool) -> list[int]:
    """Stage D's order of the nodes: ``node_order`` as given, or (``shuffle``) a permutation of it drawn
    from the seed alone, the same on every rank and after a restart (the reference draws it at random)."""
    order = list(node_order)
    if shuffle:
        random.Random(f"pertnas-nodes/{seed}").shuffle(order)
    return order


def expand_edge(cell: EdgeCandidates, edge: int, ops: Sequence[str] = SEARCH_OPS) -> EdgeCandidates:
    """``cell`` with edge ``edge`` holding every op of ``ops`` (stage A)."""
    return tuple(tuple(ops) if e == edge else cell[e] for e in range(NUM_EDGES))


def coarse_select(matrix: Sequence[Sequence[float]], k: int = 2, ops: Sequence[str] = PRIMITIVES,
                  keep_none: bool = True) -> EdgeCandidates:
    """Stage B: per edge, the ``k`` most important ops of ``matrix`` (14 x len(ops)), plus ``none``.

    The kept ops are listed in ``ops`` order (the order of the network's modules), then ``none``.
    """
    if len(matrix) != NUM_EDGES:
        raise ValueError(f"expected a score matrix of {NUM_EDGES} rows, got {len(matrix)}")
    cells = []
    for row in matrix:
        if len(row) != len(ops):
            raise ValueError(f"expected {len(ops)} scores per edge, got {len(row)}")
        kept = sorted(top_k(row, k))
        cells.append(tuple(ops[i] for i in kept) + ((NONE_OP,) if keep_none else ()))
    return tuple(cells)


def real_ops(ops: Sequence[str]) -> tuple[str, ...]:
    """``ops`` without ``none``."""
    return tuple(op for op in ops if op != NONE_OP)


def keep_op(cell: EdgeCandidates, edge: int, op: str) -> EdgeCandidates:
    """Stage C: edge ``edge`` keeps only ``op`` (and ``none`` if it had it)."""
    kept = (op,) + ((NONE_OP,) if NONE_OP in cell[edge] else ())
    return tuple(kept if e == edge else cell[e] for e in range(NUM_EDGES))


def keep_edges(cell: EdgeCandidates, node: int, kept: Sequence[int]) -> EdgeCandidates:
    """Stage D: among the edges into ``node``, only ``kept`` stay; the others become empty."""
    incoming = set(node_edges(node))
    if not set(kept) <= incoming:
        raise ValueError(f"edges {sorted(set(kept) - incoming)} do not feed node {node}")
    return tuple(() if e in incoming and e not in kept else cell[e] for e in range(NUM_EDGES))


def select_node_edges(edge_scores: Sequence[float], edges: Sequence[int], keep: int = 2) -> list[int]:
    """Stage D: the ``keep`` most important of ``edges`` (scores aligned with ``edges``), sorted by edge id."""
    return sorted(edges[i] for i in top_k(edge_scores, keep))


def supernet_cell(ops: Sequence[str], op_cap: int | None, seed: int) -> EdgeCandidates:
    """The candidates of the PertNAS supernet (stage A on a supernet): every op of ``ops`` on every edge, or
    ``op_cap`` of them drawn per edge by a generator seeded with (seed, edge), listed in ``ops`` order."""
    cell = []
    for edge in range(NUM_EDGES):
        if op_cap is None or op_cap >= len(ops):
            cell.append(tuple(ops))
            continue
        chosen = set(random.Random(f"pertnas-supernet/{seed}/{edge}").sample(list(ops), op_cap))
        cell.append(tuple(op for op in ops if op in chosen))
    return tuple(cell)
