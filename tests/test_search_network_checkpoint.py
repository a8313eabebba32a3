"""Activation checkpointing of the search network (``SearchNetwork(checkpoint_cells=True)``, the supernet's
``network.checkpoint_cells``): the same losses, gradients, BatchNorm running statistics and trained weights as
the plain network, bit for bit, and a first-order architecture gradient through it."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from launch.train import train_step
from space.search_network import SearchNetwork, full_candidates
from supernet.architect import first_order_alpha_gradients


def supernet_pair(channels_last: bool) -> tuple[SearchNetwork, SearchNetwork]:
    """(plain, checkpointed): one DARTS supernet (3 cells, separate normal/reduction cells) and its copy."""
    torch.manual_seed(0)
    plain = SearchNetwork(3, 10, full_candidates(), full_candidates(), channels=4, layers=3, weighting="softmax")
    if channels_last:
        plain.to(memory_format=torch.channels_last)
    checkpointed = copy.deepcopy(plain)
    checkpointed.checkpoint_cells = True
    return plain, checkpointed


def batch(seed: int = 1, count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 8, 8, generator=generator), torch.randint(0, 10, (count,), generator=generator)


def running_stats(network: torch.nn.Module) -> list[torch.Tensor]:
    return [buffer for name, buffer in network.named_buffers() if "running" in name or "num_batches" in name]


@pytest.mark.parametrize("channels_last", [False, True])
def test_checkpointed_backward_equals_the_plain_one(channels_last, one_thread):
    plain, checkpointed = supernet_pair(channels_last)
    images, labels = batch()
    results = []
    for network in (plain, checkpointed):
        network.train()
        loss = F.cross_entropy(network(images), labels)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in network.parameters()], running_stats(network)))
    (loss_a, grads_a, stats_a), (loss_b, grads_b, stats_b) = results
    assert torch.equal(loss_a, loss_b)
    assert all(g is not None for g in grads_b) and len(grads_a) == len(grads_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    # the recomputation did not update the running statistics a second time
    assert all(torch.equal(a, b) for a, b in zip(stats_a, stats_b))
    assert {int(n) for n in running_stats(checkpointed) if n.dim() == 0} == {1}


def test_checkpointed_training_and_alpha_gradients_match(one_thread):
    plain, checkpointed = supernet_pair(channels_last=False)
    alpha_grads = [first_order_alpha_gradients(net, net.arch_parameters(), batch(2), autocast=False)
                   for net in (plain, checkpointed)]
    assert all(torch.equal(a, b) for a, b in zip(*alpha_grads))
    for network in (plain, checkpointed):
        optimizer = torch.optim.SGD(network.weight_parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            train_step(network.train(), *batch(10 + step), optimizer, grad_clip=5.0)
    for a, b in zip(plain.state_dict().values(), checkpointed.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():  # no graph: nothing is checkpointed, the eval-mode outputs agree
        images, _ = batch(5)
        assert torch.equal(plain.eval()(images), checkpointed.eval()(images))


def test_checkpointing_keeps_fewer_tensors_for_the_backward_pass(one_thread):
    """What checkpointing is for: the graph of a forward pass holds far fewer saved activations."""
    plain, checkpointed = supernet_pair(channels_last=False)
    images, _ = batch()
    saved = []
    for network in (plain, checkpointed):
        sizes: list[int] = []

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            network.train()(images).sum()
        saved.append(sum(sizes))
    assert saved[1] < saved[0] / 4
