"""perturb_val on constructed cases: scores, restore, identical starts, RNG reset, paired statistics,
separation, adaptive measurement."""
import math

import pytest
import torch
import torch.nn.functional as F

from launch.distributed import DistEnv
from perturb.measure import Outcomes
from perturb.scoring import Candidate, Rounds, paired_difference, perturb_val, sample_quality, separation
from perturb.snapshot import Snapshot, state_digest
from space.search_network import SearchNetwork

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
SAMPLES_PER_BATCH = 20


def network_and_optimizer():
    torch.manual_seed(0)
    cell = [("skip_connect",)] * 14
    cell[0] = ("sep_conv_3x3", "max_pool_3x3", "none")
    cell[9] = ("dil_conv_3x3",)
    network = SearchNetwork(1, 10, cell, channels=4, layers=1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    return network, optimizer


class ConstructedMeasure:
    """A constructed measurement: per batch of 20 samples, the first round(acc / 5) are correct, where
    acc = 50 + 10 per active sep_conv_3x3 on edge 0 + 5 if edge 9 is present."""

    def __init__(self, num_batches=1):
        self.num_batches = num_batches
        self.calls = []

    def offsets(self, batch_ids):
        return [SAMPLES_PER_BATCH * i for i in range(len(batch_ids) + 1)]

    def __call__(self, network, batch_ids):
        self.calls.append(list(batch_ids))
        ops = network.active_ops()
        accuracy = 50.0 + 10.0 * ("sep_conv_3x3" in ops[0]) + 5.0 * bool(ops[9])
        one = torch.zeros(SAMPLES_PER_BATCH, dtype=torch.float64)
        one[: round(accuracy / 5)] = 1.0
        correct = one.repeat(len(batch_ids))
        return Outcomes(correct, 1.0 - correct)


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
    result = perturb_val(network, candidates, snapshot=snapshot, finetune=finetune, measure=ConstructedMeasure(),
                         steps=2, env=ENV, shard=True, baseline=True, record_digests=True)
    assert result.reference == 65.0
    assert result.accuracies == [55.0, 65.0, 60.0]
    assert result.scores == [-10.0, 0.0, -5.0]
    by_loss = perturb_val(network, candidates, snapshot=snapshot, finetune=lambda module, steps: None,
                          measure=ConstructedMeasure(), steps=0, env=ENV, baseline=True, score="loss")
    assert by_loss.scores == pytest.approx([-0.1, 0.0, -0.05]) and by_loss.accuracies == [55.0, 65.0, 60.0]
    assert result.samples == SAMPLES_PER_BATCH and result.rounds == 1
    assert result.loss_changes == [0.1, 0.0, 0.05]
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
                         finetune=lambda module, steps: calls.append(steps), measure=ConstructedMeasure(), steps=3,
                         env=ENV, baseline=False)
    assert calls == [3]  # only the candidate
    assert result.scores == [0.0]


def test_paired_difference_against_a_hand_computation():
    candidate = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1.0])
    reference = torch.tensor([1, 1, 1, 0, 0, 1, 1, 1.0])
    # d = [0, -1, 0, 1, 0, 0, -1, 0]: mean -1/8; sample variance = (sum d^2 - n mean^2) / (n - 1)
    mean, se = paired_difference(100 * candidate, 100 * reference)  # top1 qualities: points
    variance = (3 - 8 * (1 / 8) ** 2) / 7
    assert mean == pytest.approx(-12.5)
    assert se == pytest.approx(100 * math.sqrt(variance / 8))
    assert math.isnan(paired_difference(torch.ones(1), torch.zeros(1))[1])  # one sample: no error estimate


def test_separation_compares_the_last_kept_with_the_first_dropped():
    n = 100
    reference = torch.ones(n)
    clear = torch.ones(n)
    clear[:40] = 0  # score -40: clearly the most important
    close_a = torch.ones(n)
    close_a[:11] = 0  # -11
    close_b = torch.ones(n)
    close_b[5:15] = 0  # -10, mostly on other samples than close_a
    correct = 100 * torch.stack([reference, close_b, clear, close_a])
    keep_one = separation(correct, keep=1, z=1.96)
    assert keep_one.kept == [1] and keep_one.separated  # -40 vs -11
    assert keep_one.margin == pytest.approx(29.0)
    keep_two = separation(correct, keep=2, z=1.96)
    assert keep_two.kept == [1, 2] and (keep_two.last_kept, keep_two.first_dropped) == (2, 0)
    assert keep_two.margin == pytest.approx(1.0) and not keep_two.separated  # -11 vs -10: inside noise
    # hand computation of that margin's SE: d = close_b - close_a is +1 on 5 samples (0..4), -1 on 4 (11..14)
    d = close_b - close_a
    assert keep_two.standard_error == pytest.approx(100 * float(d.std()) / math.sqrt(n))
    loss = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.9, 0.7, 1.1, 0.9]], dtype=torch.float64)
    assert sample_quality(torch.zeros(2, 4), loss, "loss")[1].tolist() == [-0.9, -0.7, -1.1, -0.9]
    mean, se = paired_difference(*sample_quality(torch.zeros(2, 4), loss, "loss").flip(0))
    assert mean == pytest.approx(-0.4) and se == pytest.approx(float(torch.tensor([0.4, 0.2, 0.6, 0.4]).std()) / 2)
    assert separation(correct[:3], keep=2, z=1.96) is None  # two candidates, two kept: nothing dropped


class StubbornMeasure(ConstructedMeasure):
    """Two candidates whose outcomes differ on one sample per batch only: never separated at z = 1.96."""

    def __call__(self, network, batch_ids):
        self.calls.append(list(batch_ids))
        ops = network.active_ops()
        correct = torch.ones(SAMPLES_PER_BATCH * len(batch_ids), dtype=torch.float64)
        if "sep_conv_3x3" not in ops[0]:
            correct[::SAMPLES_PER_BATCH] = 0.0
        if "max_pool_3x3" not in ops[0]:
            correct[1::SAMPLES_PER_BATCH] = 0.0
        return Outcomes(correct, 1.0 - correct)


def test_adaptive_measurement_stops_when_separated_or_at_the_cap():
    network, optimizer = network_and_optimizer()
    tuned = []
    candidates = [Candidate(0, "sep_conv_3x3"), Candidate(0, "max_pool_3x3")]

    def run(measure, rounds):
        tuned.clear()
        return perturb_val(network, candidates, snapshot=Snapshot.capture(network, optimizer),
                           finetune=lambda module, steps: tuned.append(steps), measure=measure, steps=1, env=ENV,
                           baseline=True, rounds=rounds)

    separated = ConstructedMeasure(num_batches=6)  # -10 vs 0 on every sample block: separated in round 1
    result = run(separated, Rounds(batches=2, max_rounds=3, keep=1))
    assert result.rounds == 1 and result.separation.separated and result.samples == 40
    assert separated.calls == [[0, 1]] * 3 and len(tuned) == 3

    stubborn = StubbornMeasure(num_batches=5)  # never separated: all 3 rounds, the last one short
    result = run(stubborn, Rounds(batches=2, max_rounds=3, keep=1))
    assert result.rounds == 3 and not result.separation.separated and result.samples == 100
    assert stubborn.calls == [[0, 1]] * 3 + [[2, 3]] * 3 + [[4]] * 3
    assert len(tuned) == 3  # fine-tuned once per task; later rounds re-measure the kept fine-tuned weights
    assert result.scores == [-5.0, -5.0] and snapshot_free(network)

    capped = StubbornMeasure(num_batches=3)  # the batches run out before the rounds
    assert run(capped, Rounds(batches=2, max_rounds=5, keep=1)).rounds == 2


def snapshot_free(network):
    """The masks are back to the network's own after perturb-val."""
    return network.active_ops()[0] == ("sep_conv_3x3", "max_pool_3x3", "none")


def test_later_adaptive_rounds_measure_each_task_s_own_fine_tuned_weights():
    """Round k re-measures the weights fine-tuning left in round 1 (not the snapshot's, not another task's)."""
    network, optimizer = network_and_optimizer()
    snapshot = Snapshot.capture(network, optimizer)
    batch = (torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))

    def finetune(module, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(module(batch[0]), batch[1]).backward()
            optimizer.step()

    class Recording(StubbornMeasure):
        def __call__(self, module, batch_ids):
            self.seen.append((batch_ids[0], state_digest(module), module.active_ops()[0]))
            return super().__call__(module, batch_ids)

    measure = Recording(num_batches=3)
    measure.seen = []
    candidates = [Candidate(0, "sep_conv_3x3"), Candidate(0, "max_pool_3x3")]
    result = perturb_val(network, candidates, snapshot=snapshot, finetune=finetune, measure=measure, steps=2,
                         env=ENV, baseline=True, rounds=Rounds(batches=1, max_rounds=3))
    assert result.rounds == 3
    per_round = [measure.seen[i:i + 3] for i in (0, 3, 6)]  # tasks 0, 1, 2 in each round
    assert [[first for first, _, _ in r] for r in per_round] == [[0] * 3, [1] * 3, [2] * 3]
    for task in range(3):
        states = {(digest, ops) for r in per_round for _, digest, ops in [r[task]]}
        assert len(states) == 1  # the same weights and masks in every round
        assert next(iter(states))[0] != snapshot.digest()  # ... and they are the fine-tuned ones
    assert len({digest for _, digest, _ in per_round[0]}) == 3  # each task its own
    assert snapshot.matches(network)
