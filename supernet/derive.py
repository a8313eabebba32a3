"""From a search network to a discrete Genotype: by alpha magnitude (DARTS) or from the masks left by a
projection (DARTS-PT, PertNAS stages).

DARTS derivation, per cell type, with p_e = softmax(alpha_e) over the edge's K candidates (the ranking is
the same under Max-W, which is monotone in p):
    strength(e) = max_{op != none} p_{e,op},   op(e) = argmax_{op != none} p_{e,op}
    node k keeps the 2 incoming edges with the largest strength(e).
Ops masked out (removed by a projection) are never chosen; ties go to the lower op index and the lower edge
index, as DARTS's. Genes are listed per node by input id (DARTS lists the stronger edge first: the same cell).
"""
from __future__ import annotations

from typing import Sequence

import torch

from space.genotype import DEFAULT_CONCAT, INPUT_NODES, STEPS, Genotype
from space.ops import NONE_OP
from space.search_network import EDGE_ENDPOINTS, NUM_EDGES, SearchNetwork, genotype_from_edges, node_edges

Genes = tuple[tuple[str, int], ...]


def derive_cell(weights: torch.Tensor, candidates: Sequence[Sequence[str]],
                active: Sequence[Sequence[str]] | None = None) -> Genes:
    """The 8 genes of one cell from edge weights (14, K) (alphas or their softmax: only the order matters
    within an edge; across edges softmax values are compared, so pass softmax(alpha)).

    ``candidates[e]``: the K op names of edge e; ``active[e]``: the ops still allowed (None: all).
    """
    if weights.shape[0] != NUM_EDGES:
        raise ValueError(f"expected weights for {NUM_EDGES} edges, got shape {tuple(weights.shape)}")
    best: list[tuple[float, str] | None] = []
    for edge in range(NUM_EDGES):
        allowed = candidates[edge] if active is None else active[edge]
        choices = [(float(weights[edge, i]), name) for i, name in enumerate(candidates[edge])
                   if name != NONE_OP and name in allowed]
        best.append(max(choices, key=lambda choice: choice[0]) if choices else None)  # ties: lowest index
    genes: list[tuple[str, int]] = []
    for node in range(INPUT_NODES, INPUT_NODES + STEPS):
        edges = [e for e in node_edges(node) if best[e] is not None]
        if len(edges) < 2:
            raise ValueError(f"node {node} has fewer than 2 edges with a non-none op left")
        kept = sorted(sorted(edges, key=lambda e: best[e][0], reverse=True)[:2])
        genes.extend((best[e][1], EDGE_ENDPOINTS[e][0]) for e in kept)
    return tuple(genes)


def genotype_from_alphas(network: SearchNetwork, respect_masks: bool = True) -> Genotype:
    """DARTS derivation on every cell type of ``network`` (one shared cell -> Genotype.single)."""
    cells = {}
    for cell_type in network.arch_cell_types():
        with torch.no_grad():
            probs = torch.softmax(network.alphas[cell_type].detach().float().cpu(), dim=-1)
        active = network.active_ops(cell_type) if respect_masks else None
        cells[cell_type] = derive_cell(probs, network.candidates[cell_type], active)
    return _genotype(cells)


def genotype_from_masks(network: SearchNetwork, fallback: dict[tuple[str, int], str] | None = None) -> Genotype:
    """The genotype a finished projection left in ``network``'s masks; ``fallback[(cell type, edge)]`` is
    the op of an edge left with ``none`` alone (see :func:`perturb.projection.fallback_ops`)."""
    return genotype_from_edges(network.active_ops("normal"), None if network.shared else network.active_ops("reduce"),
                               fallback)


def _genotype(cells: dict[str, Genes]) -> Genotype:
    if "reduce" not in cells:
        return Genotype.single(cells["normal"])
    return Genotype(normal=cells["normal"], normal_concat=DEFAULT_CONCAT, reduce=cells["reduce"],
                    reduce_concat=DEFAULT_CONCAT)
