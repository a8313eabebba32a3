"""DARTS-PT projection decisions (perturb/projection.py) and the DARTS derivation (supernet/derive.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from launch.distributed import DistEnv
from perturb.projection import decide, projection_plan
from perturb.measure import SearchValMeasure
from space.search_network import NUM_EDGES, SearchNetwork, full_candidates, node_edges
from supernet.derive import derive_cell, genotype_from_alphas, genotype_from_masks

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
OPS = ("max_pool_3x3", "skip_connect", "avg_pool_3x3", "none")


pytestmark = pytest.mark.usefixtures("one_thread")


def trained_one_path_network():
    """A network whose only live path is edge 1 (input 1 -> node 2), where skip_connect carries nearly all
    the weight (alpha 8 against -8): after training, removing skip_connect leaves the classifier without
    features, removing any other op changes almost nothing. Two classes: bright vs dark images."""
    torch.manual_seed(0)
    network = SearchNetwork(1, 2, [OPS] * NUM_EDGES, None, channels=2, layers=1, weighting="softmax")
    for edge in range(NUM_EDGES):
        if edge != 1:
            network.set_edge_active(edge, False)
    with torch.no_grad():
        network.alphas["normal"].fill_(-8.0)
        network.alphas["normal"][1, OPS.index("skip_connect")] = 8.0
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 2, (64,), generator=generator)
    images = torch.randn(64, 1, 4, 4, generator=generator) * 0.3 + (labels.float() * 2 - 1).view(-1, 1, 1, 1)
    optimizer = torch.optim.SGD(network.weight_parameters(), lr=0.1, momentum=0.9)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(network(images), labels).backward()
        optimizer.step()
    for _ in range(5):  # settle the BN running statistics used in eval mode
        with torch.no_grad():
            network(images)
    return network, [(images, labels)]


def test_projection_keeps_the_op_whose_removal_hurts_most():
    network, batches = trained_one_path_network()
    measure = SearchValMeasure(batches, measurement="running", env=ENV)
    assert measure(network, [0]).top1 > 90.0
    record = decide(network, {"kind": "op", "cell_type": None, "edge": 1}, measure=measure, env=ENV)
    scores = dict(zip(["max_pool_3x3", "skip_connect", "avg_pool_3x3"], record["scores"]))
    assert record["kept"] == "skip_connect"
    assert scores["skip_connect"] < -30.0  # removing it destroys the features
    assert abs(scores["max_pool_3x3"]) < 5.0 and abs(scores["avg_pool_3x3"]) < 5.0
    assert network.active_ops("normal")[1] == ("skip_connect",)  # the other ops (none included) are masked
    assert measure(network, [0]).top1 > 90.0  # and the projected network still works


def test_edge_decision_keeps_the_two_edges_whose_removal_hurts_most():
    network, batches = trained_one_path_network()
    measure = SearchValMeasure(batches, measurement="running", env=ENV)
    for edge in node_edges(3):  # node 3 gets three live edges; only edge 3 (from input 1) carries features
        network.set_edge_active(edge, True)
    before = {e: network.active_ops("normal")[e] for e in node_edges(3)}
    record = decide(network, {"kind": "edge", "cell_type": None, "node": 3}, measure=measure, env=ENV)
    assert len(record["kept"]) == 2 and set(record["kept"]) <= set(node_edges(3))
    removed = (set(node_edges(3)) - set(record["kept"])).pop()
    assert network.active_ops("normal")[removed] == ()
    assert all(network.active_ops("normal")[e] == before[e] for e in record["kept"])
    assert record["scores"][node_edges(3).index(removed)] == max(record["scores"])


def test_plan_order_edges_first_then_nodes_seeded():
    separate = SearchNetwork(1, 2, full_candidates(), full_candidates(), channels=2, layers=3, weighting="softmax")
    shared = SearchNetwork(1, 2, full_candidates(), None, channels=2, layers=3, weighting="softmax")
    plan = projection_plan(separate, seed=1)
    assert len(plan) == 2 * (14 + 3) and len(projection_plan(shared, seed=1)) == 14 + 3
    assert [d["kind"] for d in plan] == ["op"] * 28 + ["edge"] * 6
    assert plan == projection_plan(separate, seed=1) and plan != projection_plan(separate, seed=2)
    assert sorted((d["cell_type"], d["edge"]) for d in plan[:28]) == sorted(
        (t, e) for t in ("normal", "reduce") for e in range(14))


def test_full_projection_leaves_a_valid_genotype():
    network, batches = trained_one_path_network()
    for edge in range(NUM_EDGES):
        network.set_edge_active(edge, True)
    measure = SearchValMeasure(batches, measurement="running", env=ENV)
    for decision in projection_plan(network, seed=0):
        decide(network, decision, measure=measure, env=ENV)
    genotype = genotype_from_masks(network)
    assert genotype.is_shared and len(genotype.normal) == 8
    assert ("skip_connect", 1) in genotype.normal[:2] or ("skip_connect", 0) in genotype.normal[:2]


def test_darts_derivation_strongest_non_none_op_and_top_two_edges():
    ops = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "none")
    weights = torch.full((NUM_EDGES, 4), 0.1)
    weights[:, 3] = 0.9  # none is the strongest everywhere: it must never be chosen
    weights[0, 2], weights[1, 1] = 0.5, 0.4  # node 2
    weights[2, 0], weights[3, 2], weights[4, 1] = 0.3, 0.2, 0.6  # node 3: edges 2 and 4
    weights[5, 2], weights[8, 0] = 0.7, 0.8  # node 4: edges 5 and 8
    weights[9, 1], weights[13, 2] = 0.35, 0.45  # node 5: edges 9 and 13
    genes = derive_cell(weights, [ops] * NUM_EDGES)
    assert genes == (("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("skip_connect", 2),
                     ("sep_conv_3x3", 0), ("max_pool_3x3", 3), ("skip_connect", 0), ("sep_conv_3x3", 4))
    masked = [ops] * NUM_EDGES
    masked[4] = ("max_pool_3x3",)  # a projection removed skip_connect from edge 4
    assert derive_cell(weights, [ops] * NUM_EDGES, masked)[2:4] == (("max_pool_3x3", 0), ("sep_conv_3x3", 1))


def test_genotype_from_alphas_of_separate_cells():
    network = SearchNetwork(1, 2, full_candidates(), full_candidates(), channels=2, layers=3, weighting="maxw")
    with torch.no_grad():
        network.alphas["normal"].zero_()
        network.alphas["normal"][:, 2] = 1.0  # skip_connect everywhere in normal cells
        network.alphas["reduce"].zero_()
        network.alphas["reduce"][:, 0] = 1.0  # max_pool everywhere in reduction cells
    genotype = genotype_from_alphas(network)
    assert {op for op, _ in genotype.normal} == {"skip_connect"}
    assert {op for op, _ in genotype.reduce} == {"max_pool_3x3"}
