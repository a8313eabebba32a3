"""Snapshot restores bit for bit (weights, BN statistics, optimizer, RNG, masks), unlike a state_dict backup."""
import random

import torch
import torch.nn.functional as F

from perturb.snapshot import Snapshot, state_digest
from space.ops import SEARCH_OPS
from space.search_network import SearchNetwork


def tiny_network(seed=0):
    torch.manual_seed(seed)
    cell = [("sep_conv_3x3",)] * 14
    cell[3] = SEARCH_OPS
    return SearchNetwork(1, 10, cell, channels=4, layers=1)


def train_steps(network, optimizer, steps, seed=1):
    generator = torch.Generator().manual_seed(seed)
    network.train()
    for _ in range(steps):
        images = torch.randn(8, 1, 8, 8, generator=generator)
        labels = torch.randint(0, 10, (8,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(network(images), labels).backward()
        optimizer.step()


def test_restore_is_bit_for_bit_and_a_state_dict_backup_is_not():
    network = tiny_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    train_steps(network, optimizer, 2)  # momentum buffers and BN statistics now exist
    snapshot = Snapshot.capture(network, optimizer)
    aliased_backup = network.state_dict()  # what PertNAS did
    before = state_digest(network)
    momentum_before = {k: v["momentum_buffer"].clone() for k, v in optimizer.state_dict()["state"].items()}
    rng_before = (torch.rand(3), random.random())
    network.set_active(3, "sep_conv_3x3", False)

    train_steps(network, optimizer, 3, seed=7)
    assert state_digest(network) != before
    # the state_dict "backup" changed along with the network: it restores nothing
    network.load_state_dict(aliased_backup)
    assert state_digest(network) != before

    snapshot.restore()
    assert state_digest(network) == before == snapshot.digest()
    assert snapshot.matches(network)
    bn = [name for name, _ in network.named_buffers() if name.endswith("running_mean")]
    assert bn, "the network has BN running statistics"
    for key, buffer in optimizer.state_dict()["state"].items():
        assert torch.equal(buffer["momentum_buffer"], momentum_before[key])
    assert network.active_ops()[3] == SEARCH_OPS  # masks back
    assert all(p.grad is None for p in network.parameters())
    assert torch.equal(torch.rand(3), rng_before[0]) and random.random() == rng_before[1]


def test_restored_optimizer_does_not_write_into_the_snapshot():
    network = tiny_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    train_steps(network, optimizer, 2)
    snapshot = Snapshot.capture(network, optimizer)
    digests = []
    for _ in range(2):  # two candidates in a row, each from the snapshot
        snapshot.restore()
        train_steps(network, optimizer, 2, seed=5)
        digests.append(state_digest(network))
    assert digests[0] == digests[1]
    snapshot.restore()
    assert snapshot.matches(network)
