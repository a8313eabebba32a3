"""The search network shared by the evolutionary and the supernet searches.

Each of a cell's 14 edges holds modules for ITS OWN candidate ops only, and a per-op mask. Edge ``e``
computes

    o_e(x) = sum_{i active}  w_{e,i} * op_i(x)

where the weights ``w`` depend on ``weighting``:

- ``'sum'``: w = 1 (the PertNAS discrete/expanded edges; a removed op is simply left out);
- ``'softmax'``: w = softmax(alpha_e) (DARTS);
- ``'maxw'``: w_i = 1 - max_j s_j + s_i with s = softmax(alpha_e) (sharpDARTS Max-W).

A masked (removed) op is NOT computed, and ``none`` contributes nothing, so it is never computed either.
An edge with a single active op returns that op's output as is (no weighted sum). An edge with no active
op other than ``none`` returns ``None`` and its node skips it. Node ``k`` sums its active incoming edges;
the cell output concatenates nodes 2..5 on channels.

``checkpoint_cells`` (activation checkpointing) keeps only each cell's inputs during a forward pass that
builds a graph and recomputes the cell's activations in the backward pass (torch.utils.checkpoint,
non-reentrant). BatchNorm running statistics are restored after the recomputation, so they are updated
once per forward, as without checkpointing; the recomputed activations are the stored ones, so losses,
gradients and running statistics are those of the plain network (tests/test_search_network_checkpoint.py).

Edge order (REFERENCE section 1): node 2: edges 0-1 (inputs 0,1); node 3: edges 2-4 (inputs 0,1,2);
node 4: edges 5-8; node 5: edges 9-13. ``EDGE_ENDPOINTS[e] = (input_node, node)``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from space.genotype import DEFAULT_CONCAT, INPUT_NODES, NUM_EDGES, STEPS, Genotype
from space.ops import NONE_OP, SEARCH_OPS, FactorizedReduce, ReLUConvBN, make_op

EDGE_ENDPOINTS: tuple[tuple[int, int], ...] = tuple(
    (source, node) for node in range(INPUT_NODES, INPUT_NODES + STEPS) for source in range(node))
WEIGHTINGS = ("sum", "softmax", "maxw")
CELL_TYPES = ("normal", "reduce")

EdgeCandidates = tuple[tuple[str, ...], ...]  # 14 tuples of op names; () = the edge is absent


def node_edges(node: int) -> tuple[int, ...]:
    """Indices of the edges that feed intermediate node ``node`` (2..5)."""
    return tuple(e for e, (_, target) in enumerate(EDGE_ENDPOINTS) if target == node)


def edge_index(source: int, node: int) -> int:
    return EDGE_ENDPOINTS.index((source, node))


def normalize_candidates(candidates: Sequence[Sequence[str]]) -> EdgeCandidates:
    """Check 14 edges of known, distinct op names; returns an immutable copy."""
    if len(candidates) != NUM_EDGES:
        raise ValueError(f"expected candidates for {NUM_EDGES} edges, got {len(candidates)}")
    result = []
    for edge, ops in enumerate(candidates):
        ops = tuple(ops)
        unknown = [op for op in ops if op not in SEARCH_OPS]
        if unknown:
            raise ValueError(f"edge {edge}: unknown op(s) {unknown}; choose from {', '.join(SEARCH_OPS)}")
        if len(set(ops)) != len(ops):
            raise ValueError(f"edge {edge}: repeated op in {list(ops)}")
        result.append(ops)
    return tuple(result)


def full_candidates(ops: Sequence[str] = SEARCH_OPS) -> EdgeCandidates:
    """Every op on every edge: the DARTS supernet."""
    return normalize_candidates([tuple(ops)] * NUM_EDGES)


def candidates_from_genotype(genotype: Genotype, cell_type: str = "normal") -> EdgeCandidates:
    """The 14-edge candidate form of a discrete cell: one op on each kept edge, () on the others."""
    ops: list[tuple[str, ...]] = [()] * NUM_EDGES
    for index, (op, source) in enumerate(genotype.cell(cell_type)):
        ops[edge_index(source, index // 2 + INPUT_NODES)] = (op,)
    return tuple(ops)


def genes_from_edges(edges: Sequence[Sequence[str]], fallback: dict[int, str] | None = None) -> tuple[tuple[str, int], ...]:
    """The 8 genes ``(op, input)`` of a decided cell from its 14 edges' ops (``none`` is ignored).

    Every intermediate node must have exactly 2 edges left, each with exactly one real op; an edge left
    with ``none`` alone takes ``fallback[edge]`` (a DARTS-PT decision that kept ``none``). Genes are
    listed node by node, in edge order (= input order). Raises ValueError naming what is undecided.
    """
    fallback = fallback or {}
    genes = []
    for node in range(INPUT_NODES, INPUT_NODES + STEPS):
        kept = [e for e in node_edges(node) if edges[e]]
        if len(kept) != 2:
            raise ValueError(f"node {node} has {len(kept)} edges left, not 2: the cell is not decided")
        for e in kept:
            ops = [op for op in edges[e] if op != NONE_OP]
            if not ops and e in fallback:
                ops = [fallback[e]]
            if len(ops) != 1:
                raise ValueError(f"edge {e} has ops {list(edges[e])}, not exactly one besides none: "
                                 "the cell is not decided")
            genes.append((ops[0], EDGE_ENDPOINTS[e][0]))
    return tuple(genes)


def genotype_from_edges(normal: Sequence[Sequence[str]], reduce: Sequence[Sequence[str]] | None = None,
                        fallback: dict[tuple[str, int], str] | None = None) -> Genotype:
    """THE cell-to-genotype conversion: the Genotype of decided cells given as 14 edges' ops each
    (:func:`genes_from_edges`). ``reduce`` None: one shared cell (``Genotype.single``, normal = reduce,
    concat [2..5]). ``fallback[(cell type, edge)]``: the op of an edge left with ``none`` alone."""
    fallback = fallback or {}
    genes = {cell_type: genes_from_edges(edges, {e: op for (t, e), op in fallback.items() if t == cell_type})
             for cell_type, edges in (("normal", normal), ("reduce", reduce)) if edges is not None}
    if "reduce" not in genes:
        return Genotype.single(genes["normal"])
    return Genotype(normal=genes["normal"], normal_concat=DEFAULT_CONCAT, reduce=genes["reduce"],
                    reduce_concat=DEFAULT_CONCAT)


class MixedEdge(nn.Module):
    """One edge: candidate ops ``names`` for ``channels`` channels at ``stride``, with an active mask.

    forward(x: (N, C, H, W), weights: (len(names),) or None) -> (N, C, H/stride, W/stride) or None.
    """

    def __init__(self, names: Sequence[str], channels: int, stride: int):
        super().__init__()
        self.names = tuple(names)
        self.stride = stride
        self.ops = nn.ModuleList(make_op(name, channels, stride, affine=False) for name in self.names)
        self.active = [True] * len(self.names)

    def active_names(self) -> tuple[str, ...]:
        return tuple(name for name, on in zip(self.names, self.active) if on)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor | None:
        computed = [i for i, name in enumerate(self.names) if self.active[i] and name != NONE_OP]
        if not computed:
            return None
        if len(computed) == 1 and sum(self.active) == 1:
            return self.ops[computed[0]](x)  # a discrete edge: the plain op
        if weights is None:
            out = self.ops[computed[0]](x)
            for i in computed[1:]:
                out = out + self.ops[i](x)
            return out
        out = weights[computed[0]] * self.ops[computed[0]](x)
        for i in computed[1:]:
            out = out + weights[i] * self.ops[i](x)
        return out


class SearchCell(nn.Module):
    """A search cell. forward(s0: (N, C_pp, H0, W0), s1: (N, C_p, H, W), weights) -> (N, 4*C, H', W').

    ``weights``: a list of 14 per-edge weight vectors, or None for plain sums.
    """

    def __init__(self, candidates: EdgeCandidates, c_pp: int, c_p: int, channels: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_pp, channels, affine=False) if reduction_prev
                            else ReLUConvBN(c_pp, channels, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(c_p, channels, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedEdge(ops, channels, stride=2 if reduction and source < INPUT_NODES else 1)
            for ops, (source, _) in zip(candidates, EDGE_ENDPOINTS))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(INPUT_NODES, INPUT_NODES + STEPS):
            terms = []
            for e in node_edges(node):
                source, _ = EDGE_ENDPOINTS[e]
                out = self.edges[e](states[source], None if weights is None else weights[e])
                if out is not None:
                    terms.append(out)
            if terms:
                states.append(sum(terms[1:], terms[0]))
            else:  # every incoming edge removed: the node outputs zeros of its shape
                stride = 2 if self.reduction else 1
                states.append(states[1][:, :, ::stride, ::stride].mul(0.0))
        return torch.cat(states[INPUT_NODES:], dim=1)


class _RunningStatsKept:
    """Context of a checkpointed cell's recomputation: the BatchNorm running statistics (running_mean,
    running_var, num_batches_tracked) of ``module`` are saved on entry and written back on exit, so the
    second forward pass of the cell does not update them a second time."""

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                      and m.track_running_stats]
        self.saved: list[list[torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [[buffer.clone() for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)]
                      for m in self.norms]

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for m, saved in zip(self.norms, self.saved):
                for buffer, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), saved):
                    buffer.copy_(value)
        self.saved = []


class SearchNetwork(nn.Module):
    """The search network (DARTS): stem 3x3 conv to ``stem_multiplier * C`` + BN, ``layers`` cells with
    reductions at ``layers // 3`` and ``2 * layers // 3`` (channels double there), global average pool,
    linear classifier. forward(x: (N, in_channels, H, W)) -> logits (N, num_classes).

    ``normal``: the 14 edges' candidate ops of normal cells; ``reduce``: those of reduction cells, or None
    for ONE shared cell (PertNAS): then masks apply to normal and reduction cells together.
    ``weighting`` (module docstring) adds architecture parameters ``alphas[cell_type]`` of shape
    (14, K) when every edge has the same K candidates. ``checkpoint_cells``: activation checkpointing per
    cell (module docstring).
    """

    def __init__(self, in_channels: int, num_classes: int, normal: Sequence[Sequence[str]],
                 reduce: Sequence[Sequence[str]] | None = None, channels: int = 16, layers: int = 5,
                 stem_multiplier: int = 3, weighting: str = "sum", checkpoint_cells: bool = False):
        super().__init__()
        self.checkpoint_cells = checkpoint_cells
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if layers < 1 or channels < 2 or channels % 2:
            raise ValueError(f"need layers >= 1 and an even channel count >= 2, got layers={layers}, C={channels}")
        self.weighting = weighting
        self.shared = reduce is None
        self.candidates = {"normal": normalize_candidates(normal)}
        self.candidates["reduce"] = self.candidates["normal"] if reduce is None else normalize_candidates(reduce)
        self.reduction_layers = sorted({layers // 3, 2 * layers // 3}) if layers >= 3 else []

        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for index in range(layers):
            reduction = index in self.reduction_layers
            if reduction:
                c_curr *= 2
            cell = SearchCell(self.candidates["reduce" if reduction else "normal"], c_pp, c_p, c_curr,
                              reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, STEPS * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

        self.alphas = nn.ParameterDict()
        if weighting != "sum":
            for cell_type in self.arch_cell_types():
                widths = {len(ops) for ops in self.candidates[cell_type]}
                if len(widths) != 1:
                    raise ValueError("architecture weights need the same number of candidates on every edge")
                self.alphas[cell_type] = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, widths.pop()))

    # ---- structure -------------------------------------------------------------------------------
    def arch_cell_types(self) -> tuple[str, ...]:
        """``('normal',)`` for one shared cell, else ``('normal', 'reduce')``."""
        return ("normal",) if self.shared else CELL_TYPES

    def _cells_of(self, cell_type: str | None) -> list[SearchCell]:
        if cell_type not in (None, "normal", "reduce"):
            raise ValueError(f"cell_type must be None, 'normal' or 'reduce', not {cell_type!r}")
        if cell_type is None or self.shared:
            return list(self.cells)
        return [cell for cell in self.cells if cell.reduction == (cell_type == "reduce")]

    def set_active(self, edge: int, op: str, active: bool, cell_type: str | None = None) -> None:
        """Mask (``active=False``) or unmask op ``op`` on edge ``edge`` of every cell of ``cell_type``
        (None: all cells; with one shared cell, always all cells)."""
        for cell in self._cells_of(cell_type):
            mixed = cell.edges[edge]
            if op not in mixed.names:
                raise ValueError(f"edge {edge} has no candidate {op!r} (it has {list(mixed.names)})")
            mixed.active[mixed.names.index(op)] = active

    def set_edge_active(self, edge: int, active: bool, cell_type: str | None = None) -> None:
        """Remove (or restore) a whole edge: every candidate op on it."""
        for cell in self._cells_of(cell_type):
            mixed = cell.edges[edge]
            mixed.active = [active] * len(mixed.names)

    def active_ops(self, cell_type: str = "normal") -> EdgeCandidates:
        """The active candidate ops of each edge, e.g. ``(('sep_conv_3x3',), (), ...)``."""
        cell = self._cells_of(cell_type)[0] if self.cells else None
        if cell is None:
            return tuple(() for _ in range(NUM_EDGES))
        return tuple(edge.active_names() for edge in cell.edges)

    def mask_state(self) -> dict[str, list[list[bool]]]:
        """Every cell's masks, for checkpoints: {cell index: [[bool per op] per edge]}."""
        return {str(i): [list(edge.active) for edge in cell.edges] for i, cell in enumerate(self.cells)}

    def load_mask_state(self, state: dict[str, list[list[bool]]]) -> None:
        for i, cell in enumerate(self.cells):
            for edge, active in zip(cell.edges, state[str(i)]):
                if len(active) != len(edge.names):
                    raise ValueError("mask state does not match this network's candidates")
                edge.active = [bool(a) for a in active]

    @contextlib.contextmanager
    def removed(self, ops: Sequence[tuple[int, str]] = (), edges: Sequence[int] = (),
                cell_type: str | None = None) -> Iterator[None]:
        """Temporarily remove ``(edge, op)`` pairs and whole ``edges``; the masks are restored on exit."""
        saved = self.mask_state()
        try:
            for edge, op in ops:
                self.set_active(edge, op, False, cell_type)
            for edge in edges:
                self.set_edge_active(edge, False, cell_type)
            yield
        finally:
            self.load_mask_state(saved)

    # ---- weights ---------------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def edge_weights(self, cell_type: str) -> torch.Tensor | None:
        """(14, K) mixing weights of ``cell_type`` from its alphas, or None with ``weighting='sum'``."""
        if self.weighting == "sum":
            return None
        alpha = self.alphas["normal" if self.shared else cell_type]
        probs = F.softmax(alpha, dim=-1)
        if self.weighting == "maxw":
            probs = 1.0 - probs.max(dim=-1, keepdim=True).values + probs
        return probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {cell_type: self.edge_weights(cell_type) for cell_type in CELL_TYPES}
        s0 = s1 = self.stem(x)
        recompute = self.checkpoint_cells and torch.is_grad_enabled()
        for cell in self.cells:
            cell_weights = weights["reduce" if cell.reduction else "normal"]
            if recompute:
                out = checkpoint(cell, s0, s1, cell_weights, use_reentrant=False,
                                 context_fn=lambda cell=cell: (contextlib.nullcontext(), _RunningStatsKept(cell)))
            else:
                out = cell(s0, s1, cell_weights)
            s0, s1 = s1, out
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))

