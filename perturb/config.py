"""The typed config of the evolutionary search: every number of the PertNAS protocol is a key here.

The defaults are this project's: the reference's numbers (REFERENCE section 3; PertNAS
``search_evolutionary.py``) with the fair measurement of perturb/measure.py, a fine-tuned reference
accuracy, gradient clipping at 5 and a per-step cosine. ``configs/pertnas_cifar10.yaml`` sets every key to
the reference's value (its documented defects aside); the README's "Differences from the published code"
lists each difference. Learning rates and fine-tuning budgets follow the reference's formulas:

    lr_stage = optim.learning_rate / stage.lr_divisor           (0.2176 / 2.5 in A, C, D; / 3 in B)
    K_stage  = search.finetune_steps + stage.finetune_extra     (steps run; the reference runs one more
                                                                 than it asks for: 71, 131, 181 in its preset)

and each training phase runs SGD (momentum, weight decay, optional gradient clipping) with a cosine from
lr_stage down to ``optim.learning_rate_min``, per step or per epoch (``optim.schedule_per``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ConfigError
from data.config import DataConfig
from launch.run_config import SearchRunConfig
from space.genotype import NUM_EDGES
from space import network_config
from space.primitives import PRIMITIVES

#: The BatchNorm treatments of a perturb-val accuracy (perturb/measure.py).
MEASUREMENTS = ("recalibrate", "batch", "running")
#: What a removal's score measures (perturb/scoring.py).
SCORES = ("top1", "loss")
REFERENCE_EDGE_ORDER = [13, 12, 8, 11, 7, 4, 9, 10, 5, 6, 2, 3, 0, 1]  # PertNAS stage C visiting order
#: The config fields a search's results depend on (its fingerprint): a resume must match them.
RESULT_SECTIONS = ("seed", "data", "network", "optim", "search")


@dataclass
class StageConfig:
    """One stage's training and scoring budget.

    epochs: training epochs of a fresh network (stage A: per edge; C, D: the retrain after a decision).
    lr_divisor: the stage's peak learning rate is optim.learning_rate / lr_divisor.
    finetune_extra: K = search.finetune_steps + finetune_extra fine-tune steps per perturb-val candidate.
    inherit_epochs: with search.weight_inheritance, epochs of the retrain that continues from the
    current weights instead of training a fresh network for ``epochs``.
    finetune_optimizer: what perturb-val fine-tunes with: 'trained' (the training phase's SGD, momentum
    buffers included, at its end-of-training rate or optim.finetune_lr: the reference's stages A and C) or
    'fresh' (a new SGD at the stage's peak rate lr_stage: the reference's stage D).
    """

    epochs: int = 5
    lr_divisor: float = 2.5
    finetune_extra: int = 0
    inherit_epochs: int = 1
    finetune_optimizer: str = "trained"

    def validate(self) -> None:
        if self.epochs < 0 or self.inherit_epochs < 0:
            raise ConfigError(f"must not be negative (got {self.epochs} / {self.inherit_epochs})", key="epochs")
        if not self.lr_divisor > 0:
            raise ConfigError(f"must be positive (got {self.lr_divisor})", key="lr_divisor")
        if self.finetune_optimizer not in ("trained", "fresh"):
            raise ConfigError(f"must be 'trained' or 'fresh' (got {self.finetune_optimizer!r})",
                              key="finetune_optimizer")


@dataclass
class OptimConfig:
    """SGD and its schedule. finetune_lr: fine-tuning learning rate in perturb-val with the trained
    optimizer; null = its rate at the end of training (learning_rate_min), which is what the reference
    uses. grad_clip: gradient-norm clipping (null: none, as the reference). schedule_per: the cosine
    changes the rate every 'step', or once per 'epoch' (the reference's CosineAnnealingLR)."""

    learning_rate: float = 0.2176
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    finetune_lr: float | None = None
    schedule_per: str = "step"

    def validate(self) -> None:
        if not self.learning_rate > 0 or self.learning_rate_min < 0:
            raise ConfigError(f"must be positive (got {self.learning_rate}, min {self.learning_rate_min})",
                              key="learning_rate")
        if self.finetune_lr is not None and self.finetune_lr < 0:
            raise ConfigError(f"must not be negative (got {self.finetune_lr})", key="finetune_lr")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"must be positive or null (got {self.grad_clip})", key="grad_clip")
        if self.schedule_per not in ("step", "epoch"):
            raise ConfigError(f"must be 'step' or 'epoch' (got {self.schedule_per!r})", key="schedule_per")


@dataclass
class SearchNetworkConfig(network_config.NetworkConfig):
    """The search network: ``channels`` (C), ``layers`` cells (space.network_config.NetworkConfig), and the
    stem's width stem_multiplier x C."""

    layers: int = 5
    stem_multiplier: int = 3


@dataclass
class SearchConfig:
    """The protocol.

    npop: population size (members 0..npop-1; rank r trains members r, r+W, ...).
    ops: the candidate ops of stage A (the score matrix has one column per op, in this order).
    top_k: ops kept per edge in stage B (plus none). edge_order: stage C's edge visiting order.
    node_order: stage D's node order; shuffle_nodes: visit them in a permutation of node_order drawn
    from the seed (the reference draws the order at random, unseeded).
    finetune_steps: base K (see the module docstring). val_batches: search-val batches per accuracy
    (0 = the whole search-val split).
    measurement: the BatchNorm treatment of every perturb-val accuracy (perturb/measure.py): 'recalibrate'
    (statistics re-estimated on calibration_batches fixed search-train batches), 'batch' (each search-val
    batch's own statistics) or 'running' (eval mode with the running statistics: PertNAS as published).
    baseline: fine-tune the no-removal reference K steps like the candidates (false: PertNAS as published).
    The published measurement is ``measurement: running`` with ``baseline: false``.
    score: what a removal's score measures: 'top1' (the change of top-1 accuracy in points: the method)
    or 'loss' (L_ref - L_i, the change of the mean per-sample cross-entropy in nats; continuous, so far
    less noisy on a few hundred search-val images: bench/perturb_noise.py). Either way more negative =
    more important.
    adaptive_rounds: up to this many rounds of val_batches search-val batches per decision, measured
    while the decision is inside noise (1 = a fixed measurement). confidence_z: a decision is separated
    when its margin exceeds confidence_z standard errors (perturb/scoring.py).
    sync_batchnorm: on CUDA, synchronise BatchNorm over the ranks while B-D train under DDP, so W ranks
    compute what one rank computes (torch's SyncBatchNorm is CUDA-only: on the CPU each rank normalises
    its 1/W share of the batch).
    weight_inheritance: retrain after a C/D decision from the current weights (stage.inherit_epochs)
    instead of a fresh network (stage.epochs, the reference). record_digests: hash the weights at every
    perturb-val task's start and store them in scores.json (proves every candidate starts equal).
    """

    npop: int = 4
    ops: list[str] = field(default_factory=lambda: list(PRIMITIVES))
    top_k: int = 2
    edge_order: list[int] = field(default_factory=lambda: list(REFERENCE_EDGE_ORDER))
    node_order: list[int] = field(default_factory=lambda: [3, 4, 5])
    shuffle_nodes: bool = False
    finetune_steps: int = 50
    val_batches: int = 40
    measurement: str = "recalibrate"
    score: str = "top1"
    calibration_batches: int = 8
    baseline: bool = True
    adaptive_rounds: int = 1
    confidence_z: float = 1.96
    sync_batchnorm: bool = True
    weight_inheritance: bool = False
    record_digests: bool = False
    stage_a: StageConfig = field(default_factory=lambda: StageConfig(epochs=5, lr_divisor=2.5, finetune_extra=20))
    stage_b: StageConfig = field(default_factory=lambda: StageConfig(epochs=5, lr_divisor=3.0, finetune_extra=0))
    stage_c: StageConfig = field(default_factory=lambda: StageConfig(epochs=5, lr_divisor=2.5, finetune_extra=80))
    stage_d: StageConfig = field(default_factory=lambda: StageConfig(epochs=5, lr_divisor=2.5, finetune_extra=130))

    def validate(self) -> None:
        if self.npop < 1:
            raise ConfigError(f"must be at least 1 (got {self.npop})", key="npop")
        unknown = [op for op in self.ops if op not in PRIMITIVES]
        if unknown:
            raise ConfigError(f"holds unknown op(s) {unknown}; choose from {', '.join(PRIMITIVES)}", key="ops")
        if len(set(self.ops)) != len(self.ops) or len(self.ops) < 1:
            raise ConfigError(f"must list distinct ops, at least one (got {self.ops})", key="ops")
        if not 1 <= self.top_k <= len(self.ops):
            raise ConfigError(f"must be in 1..{len(self.ops)} (got {self.top_k})", key="top_k")
        if sorted(self.edge_order) != list(range(NUM_EDGES)):
            raise ConfigError(f"must list each edge 0..{NUM_EDGES - 1} once (got {self.edge_order})",
                              key="edge_order")
        if sorted(self.node_order) != [3, 4, 5]:
            raise ConfigError(f"must list the nodes 3, 4, 5 once each (got {self.node_order})", key="node_order")
        if self.measurement not in MEASUREMENTS:
            raise ConfigError(f"must be one of {', '.join(MEASUREMENTS)} (got {self.measurement!r})", key="measurement")
        if self.score not in SCORES:
            raise ConfigError(f"must be one of {', '.join(SCORES)} (got {self.score!r})", key="score")
        if self.measurement == "recalibrate" and self.calibration_batches < 1:
            raise ConfigError(f"must be at least 1 with measurement 'recalibrate' (got {self.calibration_batches})",
                              key="calibration_batches")
        if self.adaptive_rounds < 1:
            raise ConfigError(f"must be at least 1 (got {self.adaptive_rounds})", key="adaptive_rounds")
        if self.adaptive_rounds > 1 and self.val_batches == 0:
            raise ConfigError("needs val_batches > 0 (rounds are counted in val_batches)", key="adaptive_rounds")
        if not (0 < self.confidence_z < float("inf")):
            raise ConfigError(f"must be a positive number (got {self.confidence_z})", key="confidence_z")
        if self.finetune_steps < 0 or self.val_batches < 0:
            raise ConfigError(f"must not be negative (got {self.finetune_steps} / {self.val_batches})",
                              key="finetune_steps")
        for name in ("stage_a", "stage_b", "stage_c", "stage_d"):
            if self.finetune_steps + getattr(self, name).finetune_extra < 0:
                raise ConfigError("gives a negative fine-tune budget", key=f"{name}.finetune_extra")

    def finetune_budget(self, stage: StageConfig) -> int:
        """K for ``stage``: finetune_steps + stage.finetune_extra."""
        return self.finetune_steps + stage.finetune_extra


@dataclass
class DebugConfig:
    """Test hooks. crash_after_units > 0: rank ``crash_rank`` kills itself with SIGKILL after its
    crash_after_units-th stage-A unit, once: only while ``crash_marker`` (a file it then creates) is absent.
    crash_at_step > 0: instead, rank ``crash_rank`` kills itself (once, same marker) right after the
    checkpoint of decision ``crash_at_step`` (stages B-D). slow_rank / slow_unit_s: that rank sleeps
    slow_unit_s seconds after each of its stage-A units (a slow member)."""

    crash_after_units: int = 0
    crash_at_step: int = 0
    crash_rank: int = 0
    crash_marker: str | None = None
    slow_rank: int = -1
    slow_unit_s: float = 0.0


@dataclass
class EvolutionConfig(SearchRunConfig):
    """Everything ``search_evolutionary.py`` needs. The run keys (seed, device, threads, save, note, resume,
    pictures) are launch.run_config.SearchRunConfig's; the run directory is ``save/note``.

    data.batch_size is the global batch of one network's training step (data/config.py): a stage-A member
    trains with all of it on one rank; in stages B-D each of the W ranks of the DDP job takes batch_size / W
    (so it must divide by W).
    dist_timeout_s: how long a collective may wait for the other ranks before the job aborts. Ranks that
    finish their stage-A members early wait for the others outside any collective, so this bounds only
    the waits inside a decision (an unequal share of perturb-val candidates, rank 0 writing a checkpoint).
    """

    save: str = "runs/search_evolutionary"
    dist_timeout_s: float = 1800.0
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="cifar10", backend="ffcv", beton_dir="betons",
                                                                batch_size=256, eval_batch_size=256, cutout=0))
    network: SearchNetworkConfig = field(default_factory=SearchNetworkConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)

    def validate(self) -> None:
        super().validate()
        if not 0 < self.dist_timeout_s < float("inf"):
            raise ConfigError(f"must be a positive number of seconds (got {self.dist_timeout_s})", key="dist_timeout_s")
