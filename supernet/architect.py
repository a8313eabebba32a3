"""The architecture step of DARTS's bilevel search (Liu et al., ICLR 2019), first and second order.

DARTS solves   min_alpha L_val(w*(alpha), alpha)   s.t.   w*(alpha) = argmin_w L_train(w, alpha)
by alternating one weight step on search-train with one architecture step on search-val. The
architecture gradient is approximated by unrolling ONE step of the weight optimiser:

First order (xi = 0):
    d alpha = grad_alpha L_val(w, alpha)

Second order: with the virtual step of SGD with momentum mu and weight decay lambda at learning rate xi
    w' = w - xi * (mu * b + grad_w L_train(w, alpha) + lambda * w)        (b: the momentum buffer)
the chain rule gives
    d alpha = grad_alpha L_val(w', alpha) - xi * grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha)
and the Hessian-vector product is taken by central finite differences around w:
    v    = grad_w' L_val(w', alpha)
    eps  = 0.01 / ||v||
    w+-  = w +- eps * v
    H    = (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 * eps)
    d alpha = grad_alpha L_val(w', alpha) - xi * H
(pt.darts writes ``/ 2.*eps``, which multiplies by eps instead of dividing by it; here the division is
explicit and a test compares the result with an exact double-backward.)

Weights are moved in place (w -> w' -> w+ -> w-) and a copy of w is written back at the end, so the
network is left exactly as it was except for BatchNorm running statistics (updated by each forward in
train mode; DARTS runs the forward at w' on a copy of the network, so its statistics miss that update). Under DDP every rank computes d alpha on its own batches and the gradients are
averaged across ranks (one all-reduce per cell type) before the optimiser step, so alphas stay identical.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from launch.distributed import all_reduce_mean
from launch.train import autocast_context

Batch = tuple[torch.Tensor, torch.Tensor]


def batch_loss(network: nn.Module, batch: Batch, autocast: bool = False) -> torch.Tensor:
    """Mean cross-entropy of ``network`` on ``batch = (images (N, C, H, W), labels (N,))`` (a 0-d tensor).

    ``autocast`` runs the forward pass under :func:`launch.train.autocast_context` (bf16 on CUDA)."""
    images, labels = batch
    if autocast:
        with autocast_context(images.device):
            logits = network(images)
    else:
        logits = network(images)
    return F.cross_entropy(logits.float(), labels)


def _grads(loss: torch.Tensor, params: Sequence[torch.Tensor], **kwargs) -> list[torch.Tensor]:
    """d loss / d params, with zeros for parameters the loss does not reach (masked ops)."""
    grads = torch.autograd.grad(loss, list(params), allow_unused=True, **kwargs)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def virtual_step_direction(weights: Sequence[torch.Tensor], weight_grads: Sequence[torch.Tensor],
                           optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The update direction of one SGD step, ``mu * b + g + lambda * w`` per weight tensor.

    ``mu`` (momentum), ``lambda`` (weight_decay) and the momentum buffers ``b`` are read from ``optimizer``
    (zero buffers before its first step, as in DARTS)."""
    settings = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            settings[id(p)] = (group.get("momentum", 0.0), group.get("weight_decay", 0.0))
    directions = []
    for w, g in zip(weights, weight_grads):
        momentum, weight_decay = settings.get(id(w), (0.0, 0.0))
        direction = g + weight_decay * w.detach()
        buffer = optimizer.state.get(w, {}).get("momentum_buffer") if momentum else None
        if buffer is not None:
            direction = direction + momentum * buffer
        directions.append(direction)
    return directions


@torch.no_grad()
def _assign(targets: Sequence[torch.Tensor], base: Sequence[torch.Tensor],
            step: Sequence[torch.Tensor] | None = None, scale: float = 0.0) -> None:
    """targets <- base + scale * step (in place)."""
    for target, b, s in zip(targets, base, step if step is not None else base):
        target.copy_(b)
        if step is not None:
            target.add_(s, alpha=scale)


def second_order_alpha_gradients(network: nn.Module, weights: Sequence[torch.Tensor],
                                 alphas: Sequence[torch.Tensor], train_batch: Batch, val_batch: Batch, *,
                                 xi: float, optimizer: torch.optim.Optimizer | None = None,
                                 eps_scale: float = 0.01) -> list[torch.Tensor]:
    """DARTS's second-order d alpha (module docstring) for ``alphas`` (each (14, K)); one tensor per alpha.

    ``weights``: the network's weight parameters w; ``optimizer``: the weight optimiser whose momentum
    buffers and weight decay enter the virtual step (None: plain SGD, w' = w - xi * grad_w L_train);
    ``xi``: its learning rate; ``eps_scale``: the 0.01 of eps = 0.01 / ||v||.
    """
    weights, alphas = list(weights), list(alphas)
    original = [w.detach().clone() for w in weights]
    try:
        # virtual step w' = w - xi * (mu * b + grad_w L_train(w) + lambda * w)
        train_grads = _grads(batch_loss(network, train_batch), weights)
        if optimizer is None:
            direction = train_grads
        else:
            direction = virtual_step_direction(weights, train_grads, optimizer)
        _assign(weights, original, direction, -xi)

        # grad_alpha L_val(w', alpha) and v = grad_w' L_val(w', alpha)
        val_grads = _grads(batch_loss(network, val_batch), alphas + weights)
        alpha_grads, v = val_grads[: len(alphas)], val_grads[len(alphas):]
        v_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in v]))
        if v_norm.item() == 0.0:  # nothing flows back to the weights: the Hessian term vanishes
            return alpha_grads
        eps = eps_scale / v_norm.item()

        # H = (grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)) / (2 eps)
        _assign(weights, original, v, eps)
        grads_plus = _grads(batch_loss(network, train_batch), alphas)
        _assign(weights, original, v, -eps)
        grads_minus = _grads(batch_loss(network, train_batch), alphas)
        return [g - xi * (gp - gm) / (2.0 * eps) for g, gp, gm in zip(alpha_grads, grads_plus, grads_minus)]
    finally:
        _assign(weights, original)


def first_order_alpha_gradients(network: nn.Module, alphas: Sequence[torch.Tensor], val_batch: Batch,
                                autocast: bool = True) -> list[torch.Tensor]:
    """d alpha = grad_alpha L_val(w, alpha): one tensor of shape (14, K) per alpha."""
    return _grads(batch_loss(network, val_batch, autocast=autocast), list(alphas))


class Architect:
    """Updates the alphas of a search network on search-val batches.

    ``network``: the UNWRAPPED search network (``arch_parameters()`` / ``weight_parameters()``);
    ``weight_optimizer``: the SGD optimiser of the weights (its learning rate is xi, its momentum buffers
    and weight decay enter the virtual step); ``arch_optimizer``: the alphas' optimiser (DARTS: Adam lr
    3e-4, betas (0.5, 0.999), weight decay 1e-3). ``second_order``: unrolled (True) or first order.
    The second-order step runs in full precision (finite differences do not survive bf16); the first-order
    one under autocast.
    """

    def __init__(self, network: nn.Module, weight_optimizer: torch.optim.Optimizer,
                 arch_optimizer: torch.optim.Optimizer, *, second_order: bool = False, eps_scale: float = 0.01):
        self.network = network
        self.weight_optimizer = weight_optimizer
        self.arch_optimizer = arch_optimizer
        self.second_order = second_order
        self.eps_scale = eps_scale

    def alpha_gradients(self, train_batch: Batch, val_batch: Batch) -> list[torch.Tensor]:
        """d alpha of this rank's batches (not yet averaged across ranks)."""
        alphas = self.network.arch_parameters()
        if not self.second_order:
            return first_order_alpha_gradients(self.network, alphas, val_batch)
        xi = self.weight_optimizer.param_groups[0]["lr"]
        return second_order_alpha_gradients(self.network, self.network.weight_parameters(), alphas,
                                            train_batch, val_batch, xi=xi, optimizer=self.weight_optimizer,
                                            eps_scale=self.eps_scale)

    def step(self, train_batch: Batch, val_batch: Batch) -> None:
        """One architecture step: d alpha averaged over ranks, then ``arch_optimizer.step()``.

        ``train_batch`` is used by the second order only (the virtual step and the Hessian term). The
        alphas' gradients are dropped afterwards, so the weight step's gradient clipping (over the model's
        parameters) measures the weights' gradients alone, as DARTS clips only its weights."""
        grads = self.alpha_gradients(train_batch, val_batch)
        self.arch_optimizer.zero_grad(set_to_none=True)
        for alpha, grad in zip(self.network.arch_parameters(), grads):
            alpha.grad = all_reduce_mean(grad.detach().clone())
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)
