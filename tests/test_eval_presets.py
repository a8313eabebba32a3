"""The retraining presets in configs/eval_*.yaml load and say what the published recipes say."""
from pathlib import Path

import pytest

from evaluation.recipe import EvalConfig
from launch.config import load_config
from common.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["eval_cifar10", "eval_cifar100", "eval_mnist", "eval_imagenet", "eval_quick"])
def test_every_preset_loads(name):
    assert isinstance(load_config(EvalConfig, CONFIGS / f"{name}.yaml"), EvalConfig)


def test_cifar10_preset_is_the_darts_recipe():
    config = load_config(EvalConfig, CONFIGS / "eval_cifar10.yaml")
    assert config == EvalConfig()  # the dataclass defaults are the same recipe
    assert (config.epochs, config.data.batch_size, config.data.cutout) == (600, 96, 16)
    assert (config.network.channels, config.network.layers, config.network.auxiliary_weight,
            config.network.drop_path_prob) == (36, 20, 0.4, 0.2)
    optim = config.optim
    assert (optim.learning_rate, optim.learning_rate_min, optim.schedule, optim.momentum, optim.weight_decay,
            optim.grad_clip) == (0.025, 0.0, "cosine", 0.9, 3e-4, 5.0)
    assert optim.schedule_per == "epoch"  # DARTS steps CosineAnnealingLR(600) once per epoch
    assert (config.data.translate, config.data.flip, config.data.crop_size, config.data.color_jitter) == \
        (4, True, None, None)  # RandomCrop(32, padding=4), flip
    assert config.data.drop_last is False  # DataLoader's default: the last batch of 80 images is trained on


def test_imagenet_preset_is_the_mobile_setting():
    """quark0/darts cnn/train_imagenet.py defaults: 250 epochs, batch 128, lr 0.1, wd 3e-5, StepLR(1, 0.97),
    label smoothing 0.1, clip 5, no drop path; RandomResizedCrop(224), flip, ColorJitter(0.4, 0.4, 0.4, 0.2);
    Resize(256) + CenterCrop(224) for testing."""
    config = load_config(EvalConfig, CONFIGS / "eval_imagenet.yaml")
    assert (config.network.channels, config.network.layers, config.network.stem) == (48, 14, "imagenet")
    assert (config.network.auxiliary_weight, config.network.drop_path_prob) == (0.4, 0.0)
    assert config.optim.label_smoothing == 0.1 and config.data.dataset == "imagefolder"
    optim = config.optim
    assert (config.epochs, config.data.batch_size, optim.learning_rate, optim.momentum, optim.weight_decay,
            optim.grad_clip) == (250, 128, 0.1, 0.9, 3e-5, 5.0)
    assert (optim.schedule, optim.schedule_per, optim.gamma) == ("exponential", "epoch", 0.97)
    data = config.data
    assert (data.image_size, data.crop_size, data.color_jitter, data.flip) == (256, 224, [0.4, 0.4, 0.4, 0.2], True)
    assert (data.translate, data.cutout, data.drop_last, config.holdout_validation) == (0, 0, False, False)


def test_impossible_settings_name_their_key():
    with pytest.raises(ConfigError, match="optim.warmup_epochs"):
        load_config(EvalConfig, CONFIGS / "eval_quick.yaml", ["optim.warmup_epochs=5"])
    with pytest.raises(ConfigError, match="network.channels"):
        load_config(EvalConfig, None, ["network.channels=7"])
