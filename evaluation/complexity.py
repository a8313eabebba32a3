"""How big a network is: parameters (auxiliary head excluded, as DARTS reports) and multiply-adds.

Multiply-adds are counted with forward hooks on every ``Conv2d`` and ``Linear`` for ONE input image in
eval mode (so the auxiliary head, which runs in training only, is not counted; batch norm, pooling,
activations and additions are not counted either, as in the DARTS / NAS papers' "mult-adds"):

    Conv2d: MACs = H_out * W_out * C_out * (C_in / groups) * k_h * k_w
    Linear: MACs = in_features * out_features   (per row of the input)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from space.eval_network import count_parameters


def count_multiply_adds(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of ``model`` on one input of shape (C, H, W) (float32, on the model's device).

    The model is run in eval mode under ``torch.no_grad`` and put back in its previous mode.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        per_output = (module.in_channels // module.groups) * kernel
        total += output.shape[0] * output.shape[1] * output.shape[2] * output.shape[3] * per_output

    def linear_hook(module: nn.Linear, inputs, output: torch.Tensor) -> None:
        nonlocal total
        rows = output.numel() // module.out_features
        total += rows * module.in_features * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return int(total)


def model_size(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, float]:
    """``{"params": n, "params_m": n / 1e6, "multiply_adds": m, "multiply_adds_m": m / 1e6}``."""
    params = count_parameters(model, exclude_auxiliary=True)
    multiply_adds = count_multiply_adds(model, input_shape)
    return {"params": params, "params_m": params / 1e6,
            "multiply_adds": multiply_adds, "multiply_adds_m": multiply_adds / 1e6}
