"""DARTS-PT projection decisions (perturb/projection.py) and the DARTS derivation (supernet/derive.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from launch.distributed import DistEnv
from perturb.measure import Outcomes, SearchValMeasure
from perturb.projection import decide, fallback_ops, projection_plan
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
    scores = dict(zip(OPS, record["scores"]))
    assert record["candidates"] == [f"edge 1: {op}" for op in OPS]
    assert scores["none"] == 0.0  # none is a candidate (darts-pt); removing it changes nothing
    assert record["kept"] == "skip_connect" and "fallback" not in record
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


def test_plan_interleaves_normal_and_reduce_groups_edges_first_seeded():
    """darts-pt pt_project: 14 op groups, then 3 node groups, each a normal then a reduction decision on a
    random remaining edge (node); the weights are tuned after every group."""
    separate = SearchNetwork(1, 2, full_candidates(), full_candidates(), channels=2, layers=3, weighting="softmax")
    shared = SearchNetwork(1, 2, full_candidates(), None, channels=2, layers=3, weighting="softmax")
    plan = projection_plan(separate, seed=1)
    assert len(plan) == 2 * (14 + 3)
    assert [d["kind"] for d in plan] == ["op"] * 28 + ["edge"] * 6
    assert [d["cell_type"] for d in plan] == ["normal", "reduce"] * 17
    assert [d["tune_after"] for d in plan] == [False, True] * 17
    for cell_type in ("normal", "reduce"):
        assert sorted(d["edge"] for d in plan[:28] if d["cell_type"] == cell_type) == list(range(14))
        assert sorted(d["node"] for d in plan[28:] if d["cell_type"] == cell_type) == [3, 4, 5]
    assert [d["edge"] for d in plan[:28:2]] != [d["edge"] for d in plan[1:28:2]]  # own order per cell type
    assert plan == projection_plan(separate, seed=1) and plan != projection_plan(separate, seed=2)
    single = projection_plan(shared, seed=1)
    assert len(single) == 14 + 3 and all(d["tune_after"] and d["cell_type"] is None for d in single)


class ScriptedMeasure:
    """A perturb-val measurement from a function of the network: 100 samples, the first round(accuracy) correct."""

    num_batches = 1

    def __init__(self, accuracy):
        self.accuracy = accuracy

    def offsets(self, batch_ids):
        return [0, 100 * len(batch_ids)]

    def __call__(self, module, batch_ids):
        correct = torch.zeros(100, dtype=torch.float64)
        correct[: round(self.accuracy(module))] = 1.0
        return Outcomes(correct, 1.0 - correct)


def scripted_accuracy(module) -> float:
    """A measurement that depends on the masks only: on edge 0 every real op costs accuracy (so removing
    any of them helps and none wins: 'none' is kept with the fallback max_pool_3x3, the op whose removal
    helps least); on every other edge skip_connect is worth 3 points."""
    active = module.active_ops("normal")
    cost = {"max_pool_3x3": 1.0, "skip_connect": 3.0, "avg_pool_3x3": 2.0}
    accuracy = 50.0 - sum(cost[op] for op in active[0] if op in cost)
    return accuracy + sum(3.0 for e in range(1, NUM_EDGES) if "skip_connect" in active[e])


scripted_measure = ScriptedMeasure(scripted_accuracy)


def test_none_can_be_kept_and_its_edge_takes_the_fallback_op_in_the_genotype():
    torch.manual_seed(0)
    network = SearchNetwork(1, 2, [OPS] * NUM_EDGES, None, channels=2, layers=1, weighting="softmax")
    record = decide(network, {"kind": "op", "cell_type": None, "edge": 0}, measure=scripted_measure, env=ENV)
    assert dict(zip(OPS, record["scores"])) == {"max_pool_3x3": 1.0, "skip_connect": 3.0, "avg_pool_3x3": 2.0,
                                                "none": 0.0}
    assert record["kept"] == "none" and record["fallback"] == "max_pool_3x3"
    assert network.active_ops("normal")[0] == ("none",)  # the edge now contributes nothing, as darts-pt's
    images = torch.randn(2, 1, 4, 4)
    with network.removed(edges=[0]):
        without_edge = network(images)
    torch.testing.assert_close(network(images), without_edge)
    for decision in projection_plan(network, seed=0):
        if (decision["kind"], decision.get("edge")) != ("op", 0):
            record = decide(network, decision, measure=scripted_measure, env=ENV)
            if decision["kind"] == "edge" and decision["node"] == 3:  # an edge that kept none is a candidate
                assert len(record["candidates"]) == 3
    records = [{"kind": "op", "cell_type": None, "edge": 0, "kept": "none", "fallback": "max_pool_3x3"}]
    assert fallback_ops(records) == {("normal", 0): "max_pool_3x3"}
    genotype = genotype_from_masks(network, fallback_ops(records))
    assert genotype.normal[:2] == (("max_pool_3x3", 0), ("skip_connect", 1))
    with pytest.raises(ValueError, match="edge 0"):
        genotype_from_masks(network)  # without the fallback the edge has no op to write


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


def test_a_tie_keeps_the_first_candidate_and_never_none():
    """Every removal leaves the accuracy unchanged: the first op in candidate order wins, and none, listed
    last, only wins when every real op's removal helps (darts-pt lists none first and would keep it)."""
    network = SearchNetwork(1, 2, [OPS] * NUM_EDGES, None, channels=2, layers=1, weighting="softmax")
    record = decide(network, {"kind": "op", "cell_type": None, "edge": 4}, measure=ScriptedMeasure(lambda module: 50.0), env=ENV)
    assert record["scores"] == [0.0] * 4 and record["kept"] == OPS[0] and "fallback" not in record


def test_darts_derivation_breaks_ties_by_the_lower_index():
    ops = ("max_pool_3x3", "skip_connect", "none")  # a tie must go to the first op, not the last name
    weights = torch.full((NUM_EDGES, 3), 0.3)
    genes = derive_cell(weights, [ops] * NUM_EDGES)
    assert genes[:4] == (("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1))
