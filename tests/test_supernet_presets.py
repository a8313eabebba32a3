"""configs/darts_cifar10.yaml and configs/darts_pt_cifar10.yaml hold the published protocols' numbers."""
from pathlib import Path

from launch.config import load_config
from space.ops import SEARCH_OPS
from supernet.config import SupernetConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_darts_and_darts_pt_presets_hold_the_reference_search():
    """quark0/darts cnn/train_search.py (darts-pt's sota/cnn/train_search.py has the same defaults): batch 64,
    half/half split, RandomCrop(32, padding=4) + flip on both halves, no cutout, C=16, 8 cells, 50 epochs,
    SGD 0.025 -> 0.001 (CosineAnnealingLR stepped per epoch), momentum 0.9, wd 3e-4, clip 5, Adam 3e-4
    (0.5, 0.999) wd 1e-3, first order."""
    for name in ("darts_cifar10", "darts_pt_cifar10"):
        config = load_config(SupernetConfig, CONFIGS / f"{name}.yaml")
        data, net, w, a = config.data, config.network, config.weights, config.arch
        assert (config.epochs, data.batch_size, data.search_portion) == (50, 64, 0.5)
        assert (data.augment, data.translate, data.flip, data.cutout, data.drop_last) == (True, 4, True, 0, False)
        assert (net.channels, net.layers, net.weighting, net.shared_cell, tuple(net.ops)) == \
            (16, 8, "softmax", False, SEARCH_OPS)
        assert (w.learning_rate, w.learning_rate_min, w.momentum, w.weight_decay, w.grad_clip) == \
            (0.025, 0.001, 0.9, 3e-4, 5.0)
        assert (w.schedule, w.schedule_per) == ("cosine", "epoch")
        assert (a.learning_rate, a.beta1, a.beta2, a.weight_decay, a.second_order, a.warmup_epochs) == \
            (3e-4, 0.5, 0.999, 1e-3, False, 0)


def test_darts_pt_preset_is_darts_pts_projection():
    """darts-pt exp_scripts/darts-proj-sota.sh (--proj_intv 5) and sota/cnn/projection.py: the whole valid
    queue measured, 5 tuning epochs per group and 1 after the last, lr/10 held constant, alphas moving."""
    projection = load_config(SupernetConfig, CONFIGS / "darts_pt_cifar10.yaml").projection
    assert (projection.val_batches, projection.tune_epochs, projection.final_tune_epochs) == (None, 5, 1)
    assert (projection.tune_epoch_steps, projection.tune_lr, projection.tune_schedule, projection.arch_steps) == \
        (None, None, "constant", True)
