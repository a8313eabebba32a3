"""The retraining recipe as typed config dataclasses (filled by launch.config from configs/eval_*.yaml).

The defaults are the DARTS CIFAR-10 recipe (REFERENCE section 5): 600 epochs, batch 96, C = 36, 20 cells,
auxiliary head weighted 0.4, cutout 16, drop path 0.2 ramped linearly from 0, SGD lr 0.025 with momentum
0.9 and weight decay 3e-4, cosine annealing to 0 stepped per epoch, gradient norm clipped at 5.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.errors import ConfigError
from data.config import DataConfig
from launch.run_config import RunConfig
from space.network_config import NetworkConfig


def _darts_cifar10_data() -> DataConfig:
    return DataConfig(dataset="cifar10", batch_size=96, eval_batch_size=256, cutout=16, translate=4, flip=True,
                      search_portion=0.9, drop_last=False)


@dataclass
class EvalNetworkConfig(NetworkConfig):
    """The evaluation network (space.eval_network.EvalNetwork).

    channels: C of the first cells; layers: number of cells (space.network_config.NetworkConfig);
    stem: 'cifar' (3x3 conv) or 'imagenet' (two stride-2 convs); auxiliary_weight: weight of the auxiliary
    head's loss (0 = no head);
    drop_path_prob: final drop-path probability p, ramped as p * epoch / epochs.
    """

    channels: int = 36
    layers: int = 20
    stem: Literal["cifar", "imagenet"] = "cifar"
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2

    def validate(self) -> None:
        super().validate()
        if self.auxiliary_weight < 0:
            raise ConfigError(f"must not be negative (got {self.auxiliary_weight})", key="auxiliary_weight")
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise ConfigError(f"must be in [0, 1) (got {self.drop_path_prob})", key="drop_path_prob")


@dataclass
class OptimConfig:
    """SGD with a learning-rate schedule (launch.schedules.build_scheduler).

    learning_rate: peak learning rate (for the global batch data.batch_size; not rescaled with the world
    size); schedule: 'cosine' (to learning_rate_min), 'cosine_power' (sharpDARTS, base power_k), 'constant'
    or 'exponential' (x gamma per epoch: DARTS's ImageNet StepLR(1, 0.97)); schedule_per: 'epoch' (the rate
    changes at each epoch's start, as DARTS's schedulers) or 'step' (smoothly at every step);
    warmup_epochs: linear warmup before the schedule; grad_clip: max gradient norm (null = off);
    label_smoothing: epsilon of the smoothed cross-entropy (0.1 for ImageNet).
    """

    learning_rate: float = 0.025
    learning_rate_min: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    schedule: Literal["cosine", "cosine_power", "constant", "exponential"] = "cosine"
    schedule_per: Literal["epoch", "step"] = "epoch"
    gamma: float = 0.97
    power_k: float = 2.0
    warmup_epochs: int = 0
    grad_clip: float | None = 5.0
    label_smoothing: float = 0.0

    def validate(self) -> None:
        if self.learning_rate <= 0:
            raise ConfigError(f"must be positive (got {self.learning_rate})", key="learning_rate")
        if not 0 <= self.learning_rate_min <= self.learning_rate:
            raise ConfigError(f"must be in [0, learning_rate] (got {self.learning_rate_min})", key="learning_rate_min")
        if self.weight_decay < 0:  # momentum: launch.config.SHARED_RULES
            raise ConfigError(f"must not be negative (got {self.weight_decay})", key="weight_decay")
        if self.schedule == "cosine_power" and self.power_k < 1:
            raise ConfigError(f"must be >= 1 (got {self.power_k})", key="power_k")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"must be in (0, 1] (got {self.gamma})", key="gamma")
        if self.warmup_epochs < 0:
            raise ConfigError(f"must not be negative (got {self.warmup_epochs})", key="warmup_epochs")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"must be positive or null (got {self.grad_clip})", key="grad_clip")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"must be in [0, 1) (got {self.label_smoothing})", key="label_smoothing")


@dataclass
class EvalConfig(RunConfig):
    """One retraining run (see configs/eval_*.yaml).

    seed, device, threads: launch.run_config.RunConfig (seed: of weights, data order and augmentation, seed
    + rank per rank); the run directory is train_eval.py's --run-dir.
    epochs: training epochs;
    data: the data layer's DataConfig (data.batch_size is the GLOBAL batch: each of W ranks trains
    batch_size / W samples per step; data/config.py);
    holdout_validation: train on ``data.search_portion`` of the training set and pick the best epoch on the
    rest (the test split is never used for selection); false: train on the whole training set, no selection;
    autoaugment: AutoAugment's CIFAR-10 policy on training batches (data/autoaugment.py);
    precision: the forward pass's precision (launch.train.PRECISIONS): 'auto' = bf16 autocast on CUDA and
    float32 on the CPU, 'bf16' = bf16 autocast on any device, 'fp32' = never autocast;
    channels_last (launch.run_config.RunConfig): channels_last memory format for the model (and, on the CPU,
    the batches): true (default) = on any device (about 2x faster on the CPU for these depthwise-separable
    networks with torch's CPU kernels), null = on CUDA only, false = never;
    compile: torch.compile the network (launch.train.maybe_compile; inside DDP, evaluation runs compiled too);
    sync_batchnorm: SyncBatchNorm across ranks (CUDA only);
    deterministic: deterministic kernels (slower on GPU);
    max_steps_per_epoch: cut epochs short (smoke tests), null = full epochs;
    keep_checkpoints: how many per-epoch checkpoints to keep.
    """

    epochs: int = 600
    data: DataConfig = field(default_factory=_darts_cifar10_data)
    network: EvalNetworkConfig = field(default_factory=EvalNetworkConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    holdout_validation: bool = False
    autoaugment: bool = False
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False
    sync_batchnorm: bool = False
    deterministic: bool = False
    max_steps_per_epoch: int | None = None
    keep_checkpoints: int = 2

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1:
            raise ConfigError(f"must be at least 1 (got {self.epochs})", key="epochs")
        if self.optim.warmup_epochs >= self.epochs:
            raise ConfigError(f"must be fewer than the {self.epochs} epochs (got {self.optim.warmup_epochs})",
                              key="optim.warmup_epochs")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError(f"must be at least 1 or null (got {self.max_steps_per_epoch})",
                              key="max_steps_per_epoch")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"must be at least 1 (got {self.keep_checkpoints})", key="keep_checkpoints")
