"""perturb_val on constructed cases: scores, restore, identical starts, RNG reset, sharding bookkeeping."""
import torch
import torch.nn.functional as F

from launch.distributed import DistEnv
from perturb.scoring import Candidate, perturb_val
from perturb.snapshot import Snapshot, state_digest
from space.ops import SEARCH_OPS
from space.search_network import SearchNetwork

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)


def network_and_optimizer():
    torch.manual_seed(0)
    cell = [("skip_connect",)] * 14
    cell[0] = ("sep_conv_3x3", "max_pool_3x3", "none")
    cell[9] = ("dil_conv_3x3",)
    network = SearchNetwork(1, 10, cell, channels=4, layers=1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    return network, optimizer


def active_op_accuracy(network):
    """A constructed 'accuracy': 50 + 10 per active sep_conv_3x3 on edge 0 + 5 if edge 9 is present."""
    ops = network.active_ops()
    return 50.0 + 10.0 * ("sep_conv_3x3" in ops[0]) + 5.0 * bool(ops[9])


def test_scores_are_accuracy_changes_on_removal_and_the_network_is_restored():
    network, optimizer = network_and_optimizer()
    snapshot = Snapshot.capture(network, optimizer)
    starts, draws = [], []
    batch = (torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))

    def finetune(module, steps):
        starts.append(state_digest(module))
        draws.append(torch.rand(2))  # the RNG must be reset to the same state for every task
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(module(batch[0]), batch[1]).backward()
            optimizer.step()

    candidates = [Candidate(0, "sep_conv_3x3"), Candidate(0, "max_pool_3x3"), Candidate(9)]
    result = perturb_val(network, candidates, snapshot=snapshot, finetune=finetune, measure=active_op_accuracy,
                         steps=2, env=ENV, shard=True, baseline=True, record_digests=True)
    assert result.reference == 65.0
    assert result.accuracies == [55.0, 65.0, 60.0]
    assert result.scores == [-10.0, 0.0, -5.0]
    # every task (baseline + 3 candidates) started from the snapshot's weights and RNG state
    assert len(starts) == 4 and set(starts) == {snapshot.digest()}
    assert result.start_digests == [snapshot.digest()] * 4
    assert all(torch.equal(draw, draws[0]) for draw in draws)
    # and the network is left exactly as captured: weights, masks
    assert snapshot.matches(network)
    assert network.active_ops()[0] == ("sep_conv_3x3", "max_pool_3x3", "none")
    assert network.active_ops()[9] == ("dil_conv_3x3",)


def test_without_baseline_the_reference_is_not_fine_tuned():
    network, optimizer = network_and_optimizer()
    calls = []
    result = perturb_val(network, [Candidate(0, "max_pool_3x3")], snapshot=Snapshot.capture(network, optimizer),
                         finetune=lambda module, steps: calls.append(steps), measure=active_op_accuracy, steps=3,
                         env=ENV, baseline=False)
    assert calls == [3]  # only the candidate
    assert result.scores == [0.0]

