"""The selection rules: most negative score wins, deterministic ties, top-k per edge, top-2 edges per node."""
import math

import pytest

from perturb.selection import (coarse_select, expand_edge, importance_order, keep_edges, keep_op, most_important,
                               node_visit_order, random_cell, select_node_edges, supernet_cell, top_k)
from space.genotype import Genotype
from space.ops import PRIMITIVES, SEARCH_OPS
from space.search_network import genotype_from_edges, node_edges


def test_most_important_is_the_most_negative_with_lowest_index_on_ties():
    assert most_important([0.5, -2.0, -1.0]) == 1
    assert most_important([-3.0, 0.0, -3.0]) == 0
    assert importance_order([1.0, math.nan, -1.0, 1.0]) == [2, 0, 3, 1]
    assert top_k([0.0, -1.0, -1.0, -5.0], 2) == [3, 1]
    with pytest.raises(ValueError):
        top_k([1.0], 2)


def test_coarse_select_keeps_top_k_in_primitive_order_plus_none():
    matrix = [[0.0] * 7 for _ in range(14)]
    matrix[0] = [0.0, 0.0, 0.0, -4.0, 0.0, -1.0, 0.0]       # sep_conv_3x3, dil_conv_3x3
    matrix[5] = [-2.0, 0.0, -2.0, 0.0, 0.0, 0.0, -3.0]      # dil_conv_5x5, then max_pool (tie, lower index)
    cell = coarse_select(matrix, k=2)
    assert cell[0] == ("sep_conv_3x3", "dil_conv_3x3", "none")
    assert cell[5] == ("max_pool_3x3", "dil_conv_5x5", "none")
    assert cell[1] == ("max_pool_3x3", "avg_pool_3x3", "none")  # all equal: lowest indices


def test_node_edges_selection_and_final_genotype():
    cell = [("sep_conv_3x3", "none")] * 14
    for node in (3, 4, 5):
        edges = list(node_edges(node))
        scores = [0.0] * len(edges)
        scores[-1], scores[0] = -5.0, -1.0
        kept = select_node_edges(scores, edges)
        assert kept == [edges[0], edges[-1]]
        cell = keep_edges(cell, node, kept)
    cell = keep_op(cell, 0, "sep_conv_3x3")
    genotype = genotype_from_edges(cell)
    assert isinstance(genotype, Genotype) and genotype.is_shared
    assert genotype.normal[:2] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert [source for _, source in genotype.normal[2:]] == [0, 2, 0, 3, 0, 4]
    with pytest.raises(ValueError):
        genotype_from_edges([("sep_conv_3x3",)] * 14)  # nodes 3-5 still have more than 2 inputs


def test_random_cells_depend_on_seed_and_member_only():
    assert random_cell(2, 0) == random_cell(2, 0)
    assert random_cell(2, 0) != random_cell(2, 1)
    assert random_cell(2, 0) != random_cell(3, 0)
    assert all(len(ops) == 1 and ops[0] in PRIMITIVES for ops in random_cell(2, 5))
    expanded = expand_edge(random_cell(2, 0), 4)
    assert expanded[4] == SEARCH_OPS and expanded[3] == random_cell(2, 0)[3]


def test_node_visit_order_is_the_given_order_or_a_seeded_permutation():
    assert node_visit_order([5, 3, 4], seed=1, shuffle=False) == [5, 3, 4]
    orders = {seed: node_visit_order([3, 4, 5], seed=seed, shuffle=True) for seed in range(20)}
    assert all(sorted(order) == [3, 4, 5] for order in orders.values())
    assert all(node_visit_order([3, 4, 5], seed=seed, shuffle=True) == order for seed, order in orders.items())
    assert len({tuple(order) for order in orders.values()}) > 2  # the seed decides: several orders occur


def test_supernet_cell_caps_ops_per_edge_by_seed_and_edge_only():
    ops = list(SEARCH_OPS)
    capped = supernet_cell(ops, 3, seed=5)
    assert len(capped) == 14 and all(len(edge) == 3 for edge in capped)
    assert all(list(edge) == [op for op in ops if op in edge] for edge in capped)  # listed in ops order
    assert capped == supernet_cell(ops, 3, seed=5) and capped != supernet_cell(ops, 3, seed=6)
    assert supernet_cell(ops, None, seed=5) == tuple(tuple(ops) for _ in range(14))
