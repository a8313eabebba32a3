"""The search presets in configs/ load, and configs/pertnas_cifar10.yaml holds the reference's protocol numbers."""
from pathlib import Path

import pytest

from launch.config import load_config
from perturb.config import REFERENCE_EDGE_ORDER, EvolutionConfig
from space.ops import PRIMITIVES
from supernet.config import SupernetConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name, kind", [
    ("quickstart", EvolutionConfig), ("pertnas_cifar10", EvolutionConfig), ("darts_cifar10", SupernetConfig),
    ("darts_pt_cifar10", SupernetConfig), ("pertnas_supernet_cifar10", SupernetConfig),
    ("supernet_quick", SupernetConfig),
])
def test_every_search_preset_loads(name, kind):
    assert isinstance(load_config(kind, CONFIGS / f"{name}.yaml"), kind)


def test_pertnas_preset_is_the_reference_protocol():
    """REFERENCE section 3 and PertNAS search_evolutionary.py: npop 4, batch 256, lr 0.2176 / 2.5 (B: / 3) with a
    per-epoch cosine to 0.001, SGD momentum 0.9, wd 3e-4, no gradient clipping, 5 epochs per training,
    71 / 131 / 181 fine-tuning steps in stages A / C / D (its train() breaks after step index 70 / 130 / 180),
    stage D with a fresh SGD at lr / 2.5, top-2 ops per edge, the fixed stage-C edge order, a random (here
    seeded) node order, eval-mode BN and an un-fine-tuned reference accuracy; 45k / 5k images."""
    config = load_config(EvolutionConfig, CONFIGS / "pertnas_cifar10.yaml")
    search, optim = config.search, config.optim
    assert (search.npop, config.data.batch_size, search.top_k, search.ops) == (4, 256, 2, list(PRIMITIVES))
    assert (optim.learning_rate, optim.learning_rate_min, optim.momentum, optim.weight_decay) == \
        (0.2176, 0.001, 0.9, 3e-4)
    assert optim.grad_clip is None and optim.schedule_per == "epoch" and optim.finetune_lr is None
    assert config.data.search_portion == 0.9 and search.val_batches == 0
    assert (config.data.translate, config.data.cutout, config.data.cutout_inside) == (2, 8, True)  # FFCV ops
    stages = (search.stage_a, search.stage_b, search.stage_c, search.stage_d)
    assert [stage.epochs for stage in stages] == [5, 5, 5, 5]
    assert [stage.lr_divisor for stage in stages] == [2.5, 3.0, 2.5, 2.5]
    assert [search.finetune_budget(stage) for stage in (stages[0], stages[2], stages[3])] == [71, 131, 181]
    assert [stage.finetune_optimizer for stage in stages] == ["trained", "trained", "trained", "fresh"]
    assert search.edge_order == REFERENCE_EDGE_ORDER and search.shuffle_nodes
    assert not search.weight_inheritance and not search.baseline  # the options beyond the reference are off
    assert search.measurement == "running" and search.adaptive_rounds == 1 and search.sync_batchnorm
