"""The typed config of search_supernet.py: every key, with DARTS's (and for ``projection``, darts-pt's)
defaults (REFERENCE section 4), except ``data``: translate 2 and flip per data set are the data layer's
defaults, where DARTS pads 4 and flips (configs/darts_cifar10.yaml and darts_pt_cifar10.yaml set them).

``method`` picks the search:

- ``darts``: bilevel search (weights on search-train, alphas on search-val), genotype by alpha magnitude;
- ``darts_pt``: the same supernet training, then DARTS-PT's perturbation projection (perturb/projection.py);
- ``pertnas``: a supernet with fixed equal weights ('sum', every op on every edge or ``op_cap`` random ops
  per edge) trained on search-train, each edge's ops scored by perturb-val (the 14 x n_ops matrix that
  stage A of the evolutionary search averages over its population), then the evolutionary stages B-D.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from common.errors import ConfigError
from data.config import DataConfig
from launch.run_config import SearchRunConfig
from perturb.config import MEASUREMENTS, EvolutionConfig, SearchNetworkConfig, StageConfig
from perturb.config import OptimConfig as EvolutionOptimConfig
from perturb.config import SearchConfig as EvolutionSearchConfig
from space.primitives import PRIMITIVES, SEARCH_OPS


@dataclass
class SupernetNetworkConfig(SearchNetworkConfig):
    """The supernet: the search network's C = ``channels``, ``layers`` cells and stem (perturb.config), with
    candidate ``ops`` on every edge (DARTS: the 7 primitives + none), ``weighting`` softmax (DARTS) or maxw
    (sharpDARTS Max-W), ``shared_cell``: one cell for normal and reduction cells (PertNAS) or two.
    ``checkpoint_cells``: activation checkpointing per cell (space/search_network.py): each cell's
    activations are recomputed in the backward pass instead of kept, for a fraction of the memory at the
    cost of one more forward pass (README, "Search speed"); results are the same to the bit."""

    layers: int = 8
    weighting: Literal["softmax", "maxw"] = "softmax"
    shared_cell: bool = False
    checkpoint_cells: bool = False
    ops: list[str] = field(default_factory=lambda: list(SEARCH_OPS))

    def validate(self) -> None:
        super().validate()
        if not self.shared_cell and self.layers < 3:
            raise ConfigError(f"separate normal/reduction cells need layers >= 3 (got {self.layers}); "
                              "set network.shared_cell=true or more layers", key="layers")
        unknown = [op for op in self.ops if op not in SEARCH_OPS]
        if unknown or len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"must list distinct ops of {', '.join(SEARCH_OPS)} (got {self.ops})", key="ops")
        if len([op for op in self.ops if op != "none"]) < 1:
            raise ConfigError("needs at least one op other than none", key="ops")


@dataclass
class WeightOptimConfig:
    """SGD of the weights on search-train: lr annealed from learning_rate to learning_rate_min by
    ``schedule`` (cosine, or sharpDARTS cosine power annealing with base ``power_k``), changed at each epoch's
    start (``schedule_per: epoch``, DARTS's CosineAnnealingLR stepped per epoch) or at every step."""

    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    schedule: Literal["cosine", "cosine_power"] = "cosine"
    schedule_per: Literal["epoch", "step"] = "epoch"
    power_k: float = 2.0

    def validate(self) -> None:
        if not self.learning_rate > 0 or self.learning_rate_min < 0:
            raise ConfigError(f"must be positive (got {self.learning_rate}, min {self.learning_rate_min})",
                              key="learning_rate")
        if self.schedule == "cosine_power" and not self.power_k >= 1:
            raise ConfigError(f"must be >= 1 (got {self.power_k})", key="power_k")


@dataclass
class ArchOptimConfig:
    """Adam of the alphas on search-val (DARTS: lr 3e-4, betas (0.5, 0.999), weight decay 1e-3).
    second_order: the unrolled gradient (supernet/architect.py); eps_scale: the 0.01 of eps = 0.01/||v||;
    warmup_epochs: epochs of weight-only training before the alphas start to move."""

    learning_rate: float = 3e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-3
    second_order: bool = False
    eps_scale: float = 0.01
    warmup_epochs: int = 0

    def validate(self) -> None:
        if not self.learning_rate > 0 or not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ConfigError("needs lr > 0 and betas in [0, 1)", key="learning_rate")
        if not self.eps_scale > 0 or self.warmup_epochs < 0:
            raise ConfigError("needs eps_scale > 0 and warmup_epochs >= 0", key="eps_scale")


@dataclass
class ProjectionConfig:
    """DARTS-PT (perturb/projection.py; darts-pt's ``sota/cnn/projection.py`` with ``--proj_intv 5``).

    Each decision is scored on ``val_batches`` fixed search-val batches (null: all of search-val, as
    darts-pt measures on its whole valid queue), with no fine-tuning. Before the first decision the weight
    optimizer is reset (fresh SGD, momentum and weight decay of ``weights``) at ``tune_lr`` (null: the
    weights' learning_rate / 10, darts-pt's); after every group of decisions (a normal and a reduction
    decision) the supernet is fine-tuned ``tune_epochs`` epochs, and ``final_tune_epochs`` after the last
    group (darts-pt: 5 x 16 + 1 = 81 epochs; the last one cannot change the genotype).
    A tuning epoch is ``tune_epoch_steps`` steps (null: one pass over search-train). Each step is one
    bilevel step as in the search: an architecture step on a fresh search-val batch (``arch_steps``; false
    freezes the alphas, beyond darts-pt), then a weight step. ``tune_schedule``: 'constant' holds tune_lr
    (darts-pt: its CosineAnnealingLR is built but never stepped); 'cosine' anneals per tuning epoch from
    tune_lr to weights.learning_rate_min over all tuning epochs (what that unstepped scheduler describes).
    measurement: BatchNorm while scoring (perturb/measure.py): 'batch' (each batch's own statistics, as
    darts-pt), 'recalibrate' (re-estimated on calibration_batches fixed search-train batches per rank) or
    'running' (eval mode with the running statistics).
    """

    val_batches: int | None = None
    measurement: str = "batch"
    calibration_batches: int = 8
    tune_epochs: int = 5
    final_tune_epochs: int = 1
    tune_epoch_steps: int | None = None
    tune_lr: float | None = None
    tune_schedule: Literal["constant", "cosine"] = "constant"
    arch_steps: bool = True

    def validate(self) -> None:
        if self.val_batches is not None and self.val_batches < 1:
            raise ConfigError(f"must be at least 1 or null (got {self.val_batches})", key="val_batches")
        if self.tune_epochs < 0 or self.final_tune_epochs < 0:
            raise ConfigError("tuning budgets must not be negative", key="tune_epochs")
        if self.tune_epoch_steps is not None and self.tune_epoch_steps < 1:
            raise ConfigError(f"must be at least 1 or null (got {self.tune_epoch_steps})", key="tune_epoch_steps")
        if self.tune_lr is not None and not self.tune_lr > 0:
            raise ConfigError(f"must be positive or null (got {self.tune_lr})", key="tune_lr")
        if self.measurement not in MEASUREMENTS:
            raise ConfigError(f"must be one of {', '.join(MEASUREMENTS)} (got {self.measurement!r})", key="measurement")
        if self.measurement == "recalibrate" and self.calibration_batches < 1:
            raise ConfigError("must be at least 1 with measurement 'recalibrate'", key="calibration_batches")


@dataclass
class PertnasConfig:
    """The PertNAS supernet variant. op_cap: ops per edge drawn at random (seeded) from search.ops, null =
    all; supernet: training epochs / lr divisor / fine-tune budget of the supernet and its scoring; network,
    optim, search: as in the evolutionary search (perturb/config.py), whose stages B-D then run."""

    op_cap: int | None = None
    supernet: StageConfig = field(default_factory=lambda: StageConfig(epochs=50, lr_divisor=2.5, finetune_extra=20))
    network: SearchNetworkConfig = field(default_factory=SearchNetworkConfig)
    optim: EvolutionOptimConfig = field(default_factory=EvolutionOptimConfig)
    search: EvolutionSearchConfig = field(default_factory=EvolutionSearchConfig)

    def validate(self) -> None:
        if self.op_cap is not None and not 1 <= self.op_cap <= len(self.search.ops):
            raise ConfigError(f"must be in 1..{len(self.search.ops)} or null (got {self.op_cap})", key="op_cap")
        if self.op_cap is not None and self.op_cap < self.search.top_k:
            raise ConfigError(f"must be at least search.top_k = {self.search.top_k} (got {self.op_cap})",
                              key="op_cap")


@dataclass
class SupernetConfig(SearchRunConfig):
    """Everything ``search_supernet.py`` needs. The run keys (seed, device, threads, save, note, resume,
    pictures) are launch.run_config.SearchRunConfig's; the run directory is ``save/note``.

    data.batch_size is the global batch of one step (data/config.py; DARTS: 64 on one GPU): each of W
    ranks takes batch_size / W. stop_after_epochs: end this invocation after that many
    supernet epochs (a time-limited allocation; rerun to continue); null = run to the end.
    eval_batches: this rank's first search-val batches, the per-epoch accuracy curve's data (>= 1).
    """

    method: Literal["darts", "darts_pt", "pertnas"] = "darts"
    save: str = "runs/search_supernet"
    epochs: int = 50
    eval_batches: int = 20
    stop_after_epochs: int | None = None
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="cifar10", batch_size=64, cutout=0))
    network: SupernetNetworkConfig = field(default_factory=SupernetNetworkConfig)
    weights: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    pertnas: PertnasConfig = field(default_factory=PertnasConfig)

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1:
            raise ConfigError(f"must be at least 1 (got {self.epochs})", key="epochs")
        if self.eval_batches < 1:
            raise ConfigError(f"must be at least 1 (got {self.eval_batches})", key="eval_batches")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            raise ConfigError(f"must be at least 1 or null (got {self.stop_after_epochs})", key="stop_after_epochs")
        if self.method == "pertnas" and self.network.checkpoint_cells:
            raise ConfigError("applies to the darts and darts_pt supernets only (method pertnas trains "
                              "pertnas.network)", key="network.checkpoint_cells")
        if self.method != "pertnas" and "none" not in self.network.ops and len(self.network.ops) < 2:
            raise ConfigError("a bilevel search needs at least 2 candidate ops", key="network.ops")


def evolution_config(cfg: SupernetConfig) -> EvolutionConfig:
    """The evolutionary search's config for the PertNAS variant's stages (same seed, data and run dir)."""
    pertnas = cfg.pertnas
    return EvolutionConfig(seed=cfg.seed, save=cfg.save, note=cfg.note, resume=cfg.resume, device=cfg.device,
                           threads=cfg.threads, channels_last=cfg.channels_last, pictures=cfg.pictures,
                           data=dataclasses.replace(cfg.data),
                           network=pertnas.network, optim=pertnas.optim,
                           search=dataclasses.replace(pertnas.search, npop=1))


__all__ = ["SupernetConfig", "SupernetNetworkConfig", "WeightOptimConfig", "ArchOptimConfig", "ProjectionConfig",
           "PertnasConfig", "evolution_config", "PRIMITIVES"]
