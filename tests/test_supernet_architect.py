"""The DARTS architecture gradient: second order against an exact double-backward, first order, the step."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from space.search_network import SearchNetwork, full_candidates
from supernet.architect import (Architect, batch_loss, first_order_alpha_gradients,
                                second_order_alpha_gradients)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_network(shared: bool, weighting: str) -> SearchNetwork:
    torch.manual_seed(0)
    candidates = full_candidates()
    network = SearchNetwork(1, 3, candidates, None if shared else candidates, channels=2, layers=3,
                            weighting=weighting).double()
    with torch.no_grad():  # alphas far from uniform, so the mixed edges differ clearly
        for alpha in network.arch_parameters():
            alpha.normal_(0.0, 0.5)
    return network


def tiny_batches():
    generator = torch.Generator().manual_seed(1)
    make = lambda: (torch.randn(4, 1, 4, 4, generator=generator, dtype=torch.float64),
                    torch.randint(0, 3, (4,), generator=generator))
    return make(), make(), make()


def exact_unrolled_alpha_gradients(network, optimizer, train_batch, val_batch, xi):
    """d/d alpha L_val(w'(alpha), alpha), w'(alpha) = w - xi (mu b + grad_w L_train(w, alpha) + lambda w),
    by double backward through the virtual step."""
    names = [name for name, _ in network.named_parameters() if not name.startswith("alphas.")]
    weights = [dict(network.named_parameters())[name] for name in names]
    alphas = network.arch_parameters()
    group = optimizer.param_groups[0]
    train_loss = F.cross_entropy(network(train_batch[0]), train_batch[1])
    grads = torch.autograd.grad(train_loss, weights, create_graph=True, allow_unused=True)
    unrolled = {}
    for name, w, g in zip(names, weights, grads):
        g = torch.zeros_like(w) if g is None else g
        buffer = optimizer.state[w]["momentum_buffer"]
        unrolled[name] = w - xi * (group["momentum"] * buffer + g + group["weight_decay"] * w)
    val_loss = F.cross_entropy(functional_call(network, unrolled, (val_batch[0],)), val_batch[1])
    return torch.autograd.grad(val_loss, alphas)


@pytest.mark.parametrize("shared,weighting", [(True, "softmax"), (False, "maxw")])
def test_second_order_matches_exact_double_backward(shared, weighting):
    network = tiny_network(shared, weighting)
    warmup_batch, train_batch, val_batch = tiny_batches()
    optimizer = torch.optim.SGD(network.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    batch_loss(network, warmup_batch).backward()  # one real step, so the momentum buffers are not zero
    optimizer.step()
    network.zero_grad(set_to_none=True)
    xi = 0.5
    before = {name: p.detach().clone() for name, p in network.named_parameters()}

    exact = exact_unrolled_alpha_gradients(network, optimizer, train_batch, val_batch, xi)
    approx = second_order_alpha_gradients(network, network.weight_parameters(), network.arch_parameters(),
                                          train_batch, val_batch, xi=xi, optimizer=optimizer, eps_scale=1e-4)

    exact_flat, approx_flat = torch.cat([g.flatten() for g in exact]), torch.cat([g.flatten() for g in approx])
    relative_error = (approx_flat - exact_flat).norm() / exact_flat.norm()
    assert relative_error < 1e-3, relative_error
    # the Hessian term matters here: leaving it out (or pt.darts's "/ 2.*eps") is far off
    first_term = torch.cat([g.flatten() for g in val_gradient_at_unrolled(network, optimizer, train_batch,
                                                                          val_batch, xi)])
    assert (first_term - exact_flat).norm() / exact_flat.norm() > 1e-2
    # the weights are put back exactly
    for name, parameter in network.named_parameters():
        assert torch.equal(parameter, before[name]), name


def val_gradient_at_unrolled(network, optimizer, train_batch, val_batch, xi):
    """grad_alpha L_val(w', alpha) alone: the second-order formula without its Hessian term."""
    names = [name for name, _ in network.named_parameters() if not name.startswith("alphas.")]
    weights = [dict(network.named_parameters())[name] for name in names]
    group = optimizer.param_groups[0]
    grads = torch.autograd.grad(batch_loss(network, train_batch), weights, allow_unused=True)
    unrolled = {name: (w - xi * (group["momentum"] * optimizer.state[w]["momentum_buffer"]
                                 + (torch.zeros_like(w) if g is None else g) + group["weight_decay"] * w)).detach()
                for name, w, g in zip(names, weights, grads)}
    val_loss = F.cross_entropy(functional_call(network, unrolled, (val_batch[0],)), val_batch[1])
    return torch.autograd.grad(val_loss, network.arch_parameters())




def test_first_order_is_the_plain_validation_gradient():
    network = tiny_network(True, "softmax")
    _, _, val_batch = tiny_batches()
    grads = first_order_alpha_gradients(network, network.arch_parameters(), val_batch)
    batch_loss(network, val_batch).backward()
    for alpha, grad in zip(network.arch_parameters(), grads):
        torch.testing.assert_close(grad, alpha.grad)


@pytest.mark.parametrize("second_order", [False, True])
def test_architect_step_moves_only_the_alphas(second_order):
    network = tiny_network(False, "softmax")
    _, train_batch, val_batch = tiny_batches()
    weight_optimizer = torch.optim.SGD(network.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    arch_optimizer = torch.optim.Adam(network.arch_parameters(), lr=3e-2, betas=(0.5, 0.999), weight_decay=1e-3)
    weights_before = [w.detach().clone() for w in network.weight_parameters()]
    alphas_before = [a.detach().clone() for a in network.arch_parameters()]
    loss_before = batch_loss(network, val_batch).item()
    architect = Architect(network, weight_optimizer, arch_optimizer, second_order=second_order)
    for _ in range(3):
        architect.step(train_batch, val_batch)
    assert all(torch.equal(w, b) for w, b in zip(network.weight_parameters(), weights_before))
    assert all(w.grad is None for w in network.weight_parameters())
    assert not any(torch.equal(a, b) for a, b in zip(network.arch_parameters(), alphas_before))
    if not second_order:  # plain descent on L_val(w, alpha) (the second order descends L_val(w', alpha))
        assert batch_loss(network, val_batch).item() < loss_before
