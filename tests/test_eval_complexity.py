"""Parameters and multiply-adds (evaluation/complexity.py) and the DARTS_V2 CIFAR preset's size."""
from pathlib import Path

import torch.nn as nn

from evaluation.complexity import count_multiply_adds, model_size
from evaluation.recipe import EvalConfig
from evaluation.run import build_network
from launch.config import load_config
from space.eval_network import count_parameters
from space.genotype import builtin_genotype

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_multiply_adds_follow_the_conv_and_linear_formulas():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10))
    expected = 16 * 16 * 8 * 3 * 9 + 8 * 8 * 8 * 1 * 9 + 8 * 10
    model.train()
    assert count_multiply_adds(model, (3, 16, 16)) == expected
    assert model.training  # mode restored


def test_darts_v2_at_the_cifar10_preset_has_3_3m_params():
    config = load_config(EvalConfig, REPO_ROOT / "configs" / "eval_cifar10.yaml")
    assert (config.epochs, config.data.batch_size, config.network.channels, config.network.layers) == (600, 96, 36, 20)
    network = build_network(config, builtin_genotype("DARTS_V2"), num_classes=10, in_channels=3)
    assert network.auxiliary_head is not None
    params = count_parameters(network)  # what report.json's params_m holds (a forward pass is too slow here)
    assert abs(params / 1e6 - 3.3) / 3.3 < 0.03, params
    # the auxiliary head is excluded from the count, but does exist
    assert sum(p.numel() for p in network.parameters()) > params


def test_model_size_reports_params_without_the_auxiliary_head():
    network = build_network(load_config(EvalConfig, None, ["network.channels=4", "network.layers=3"]),
                            builtin_genotype("DARTS_V2"), num_classes=10, in_channels=3)
    size = model_size(network, (3, 16, 16))
    assert size["params"] == count_parameters(network, exclude_auxiliary=True)
    assert size["multiply_adds"] == count_multiply_adds(network, (3, 16, 16)) > 0
    assert size["params_m"] == size["params"] / 1e6
