"""What the stages need from the job: fresh networks, training phases, perturb-val with fixed batches.

:class:`SearchRuntime` binds the config, the process group and the loaders. Reproducibility rests on
*unit keys*: every unit of work (stage A: member m, edge e; B; C: edge e; D: node n) seeds the RNGs and
picks its data epochs from ``(seed, key)`` alone. So a unit gives the same result whichever rank runs it,
however many ranks there are, and whether the run was interrupted before it or not.

Two loader sets: ``member_loaders`` (rank 0 of 1, the full batch: the data a single network sees) feeds
stage-A training and every perturb-val (fine-tune and search-val batches are then identical on all
ranks); ``ddp_loaders`` (rank r of W, batch / W) feeds the DDP training of stages B-D.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from data.loaders import BatchStream, DataConfig, Loaders, build_loaders
from launch.distributed import DistEnv, broadcast_tensors, synced_batchnorm, wrap_ddp
from common.errors import ConfigError
from launch.rundir import MetricsLogger, progress
from launch.seeding import seed_everything
from launch.train import to_channels_last, train_epoch
from perturb.config import EvolutionConfig, StageConfig
from perturb.measure import SearchValMeasure
from perturb.scoring import Candidate, PerturbResult, Rounds, perturb_val
from perturb.snapshot import Snapshot
from perturb.stage_a_records import MemberRecords, records_for
from perturb.training import cosine_schedule, make_optimizer
from space.search_network import EdgeCandidates, SearchNetwork


def unit_seed(seed: int, key: str) -> int:
    """A 31-bit seed drawn from (seed, key) by SHA-256: independent streams per unit of work."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def data_epoch(seed: int, key: str) -> int:
    """The loader epoch a unit starts at (each unit sees its own shuffles, the same ones on a rerun)."""
    return (unit_seed(seed, f"epoch/{key}") % 100_000) * 1_000


def build_search_loaders(data: DataConfig, env: DistEnv, seed: int) -> tuple[Loaders, Loaders]:
    """The loaders of a search: ``(member_loaders, ddp_loaders)``.

    member_loaders: the whole batch of one network, unsharded (stage A members, perturb-val candidates);
    ddp_loaders: each rank's share ``batch_size / world_size`` of a DDP-trained network (stages B-D).
    Both are built now, so bad data fails before anything is written.
    """
    per_rank = data.per_rank(env.world_size)  # stages B-D split each batch across the ranks
    member_loaders = build_loaders(data, rank=0, world_size=1, seed=seed, device=env.device)
    ddp_loaders = member_loaders
    if env.is_distributed:
        ddp_loaders = build_loaders(per_rank, rank=env.rank, world_size=env.world_size, seed=seed,
                                    device=env.device)
    for loaders in (member_loaders, ddp_loaders):
        loaders.search_train, loaders.search_val  # noqa: B018 (built on first access)
    return member_loaders, ddp_loaders


@dataclasses.dataclass
class RunCounters:
    """What the runtime counts while it works, kept in the search state (so a checkpoint holds it):
    epochs_logged, the x axis of the TensorBoard training curves; phase_seconds, this rank's wall seconds per
    stage (a unit key's first letter) in "train" and "score"."""

    epochs_logged: int = 0
    phase_seconds: dict = dataclasses.field(default_factory=dict)


class SearchRuntime:
    """Training and scoring for the stages (see the module docstring). ``counters``: the search state's
    :class:`RunCounters`, which the runtime advances (run_search binds them)."""

    def __init__(self, cfg: EvolutionConfig, env: DistEnv, member_loaders: Loaders, ddp_loaders: Loaders,
                 run_dir: Path, metrics: MetricsLogger | None = None, log: logging.Logger | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.env = env
        self.member_loaders = member_loaders
        self.ddp_loaders = ddp_loaders
        self.info = member_loaders.info
        self.metrics = metrics
        self.log = log or logging.getLogger(__name__)
        self.counters = RunCounters()
        self.scores_logged = 0  # x axis of the perturb-val curves
        self._stage_a_records: MemberRecords | None = None
        self._val_batches: list | None = None
        self._calibration_batches: list | None = None

    # ---- networks --------------------------------------------------------------------------------
    def new_network(self, cell: EdgeCandidates, key: str) -> SearchNetwork:
        """A freshly initialised one-cell SearchNetwork of ``cell`` on the device, seeded by ``key`` alone
        (the same initial weights on every rank and for any world size)."""
        seed_everything(unit_seed(self.cfg.seed, key))
        net = self.cfg.network
        network = SearchNetwork(self.info.in_channels, self.info.num_classes, cell, reduce=None,
                                channels=net.channels, layers=net.layers, stem_multiplier=net.stem_multiplier)
        return to_channels_last(network.to(self.env.device), self.env.device, self.cfg.channels_last)

    @property
    def stage_a_records(self) -> MemberRecords:
        """This run's stage-A files (perturb/stage_a_records.py, their one owner)."""
        if self._stage_a_records is None:
            self._stage_a_records = records_for(self.run_dir, self.cfg)
        return self._stage_a_records

    def _add_time(self, key: str, phase: str, started: float) -> None:
        stage = self.counters.phase_seconds.setdefault(key[0], {"train": 0.0, "score": 0.0})
        stage[phase] += time.time() - started

    def restore_network(self, record: dict, stage: StageConfig) -> tuple[SearchNetwork, torch.optim.Optimizer]:
        """Network and optimizer from :meth:`pack`'s ``record`` (a checkpoint)."""
        network = self.new_network(tuple(tuple(ops) for ops in record["cell"]), "restore")
        network.load_mask_state(record["masks"])
        network.load_state_dict(record["model"])
        optimizer = make_optimizer(network, self.stage_lr(stage), self.cfg.optim)
        optimizer.load_state_dict(record["optimizer"])
        return network, optimizer

    @staticmethod
    def pack(network: SearchNetwork, optimizer: torch.optim.Optimizer) -> dict:
        """Everything to rebuild ``network`` and ``optimizer``: construction cell, masks, copies of the states."""
        return {
            "cell": [list(ops) for ops in network.candidates["normal"]],
            "masks": network.mask_state(),
            "model": {name: t.detach().to("cpu", copy=True) for name, t in network.state_dict().items()},
            "optimizer": _cpu_copy(optimizer.state_dict()),
        }

    # ---- training --------------------------------------------------------------------------------
    def stage_lr(self, stage: StageConfig) -> float:
        return self.cfg.optim.learning_rate / stage.lr_divisor

    def train(self, network: SearchNetwork, stage: StageConfig, *, key: str, distributed: bool, tag: str,
              epochs: int | None = None) -> torch.optim.Optimizer:
        """Train ``network`` ``epochs`` (default stage.epochs) epochs with a fresh SGD and cosine schedule.

        ``distributed``: every rank trains it together under DDP on its shard of each batch; afterwards
        rank 0's weights and BN statistics are broadcast so every rank holds bit-identical states.
        Otherwise this rank trains it alone.

        DDP runs with ``static_graph``: masked ops get no gradient, and since the masks do not change
        during a training phase the set of used parameters is found once, not traced after every
        backward as ``find_unused_parameters`` would (203 vs 130-158 ms per step of bench/search_cost.py's
        network on 2 CPU ranks). BN buffers are not broadcast before every forward: rank 0's running
        statistics are the same either way (it only ever receives its own), and those are what is
        broadcast at the end. On CUDA with search.sync_batchnorm, BatchNorm is synchronised over the ranks
        while training (launch.distributed.synced_batchnorm), so W ranks normalise over the whole batch as
        one rank does; on the CPU (torch's SyncBatchNorm is CUDA-only) each rank normalises its 1/W share.
        Returns the optimizer (its state is part of the snapshot perturb-val starts from).
        """
        epochs = stage.epochs if epochs is None else epochs
        use_ddp = distributed and self.env.is_distributed
        # seed + rank where ranks share the work (DDP); the unit alone where one rank owns it (stage A)
        seed_everything(unit_seed(self.cfg.seed, f"train/{key}"), rank=self.env.rank if use_ddp else 0)
        loader = (self.ddp_loaders if use_ddp else self.member_loaders).search_train
        optimizer = make_optimizer(network, self.stage_lr(stage), self.cfg.optim)
        scheduler = cosine_schedule(optimizer, epochs * len(loader), self.cfg.optim, len(loader))
        first_epoch = data_epoch(self.cfg.seed, key)
        started = time.time()
        sync_bn = use_ddp and self.cfg.search.sync_batchnorm and self.env.device.type == "cuda"
        with synced_batchnorm(network, enabled=sync_bn):
            model = wrap_ddp(network, self.env, static_graph=True, broadcast_buffers=False) if use_ddp else network
            for epoch in progress(range(epochs), self.env, desc=f"{tag} train", leave=False):
                loader.set_epoch(first_epoch + epoch)
                result = train_epoch(model, loader, optimizer, env=self.env, desc=f"{tag} epoch {epoch + 1}",
                                     sync=use_ddp, grad_clip=self.cfg.optim.grad_clip, scheduler=scheduler)
                self.log.info("%s epoch %d/%d: loss %.4f top1 %.2f%%", tag, epoch + 1, epochs, result["loss"],
                              result["top1"])
                self.counters.epochs_logged += 1
                if self.metrics is not None:
                    self.metrics.log(self.counters.epochs_logged, **{"train/loss": result["loss"], "train/top1": result["top1"]})
        if use_ddp:
            broadcast_tensors(list(network.parameters()) + list(network.buffers()), src=0)
        self.log.debug("%s trained %d epochs in %.1fs", tag, epochs, time.time() - started)
        self._add_time(key, "train", started)
        return optimizer

    # ---- perturb-val -----------------------------------------------------------------------------
    def val_batches(self) -> list:
        """The fixed search-val batches every accuracy is measured on (taken once per job): val_batches per
        round times adaptive_rounds, or the whole split when val_batches is 0."""
        if self._val_batches is None:
            search = self.cfg.search
            available = len(self.member_loaders.search_val)
            wanted = search.val_batches * search.adaptive_rounds or available
            if wanted > available:  # the stream would start over: the same images counted twice
                raise ConfigError(f"search.val_batches x search.adaptive_rounds = {wanted} batches, but search-val "
                                  f"holds {available} batches of {self.member_loaders.search_val.batch_size}; lower "
                                  "them (0 = all of search-val) or give search-val more images")
            with BatchStream(self.member_loaders.search_val) as stream:
                self._val_batches = list(stream.take(wanted))
        return self._val_batches

    def calibration_batches(self) -> list:
        """The fixed search-train batches BN statistics are re-estimated on (measurement 'recalibrate'),
        taken once per job from their own epoch of the search-train loader."""
        count = self.cfg.search.calibration_batches if self.cfg.search.measurement == "recalibrate" else 0
        if self._calibration_batches is None:
            self._calibration_batches = []
            if count:
                epoch = data_epoch(self.cfg.seed, "calibration")
                with BatchStream(self.member_loaders.search_train, start_epoch=epoch) as stream:
                    self._calibration_batches = list(stream.take(count))
        return self._calibration_batches

    def measure(self) -> SearchValMeasure:
        """The per-sample search-val measurement of this job (config search.measurement)."""
        return SearchValMeasure(self.val_batches(), measurement=self.cfg.search.measurement,
                                calibration=self.calibration_batches(), env=self.env)

    def finetune_batches(self, key: str, count: int) -> list:
        """``count`` search-train batches for one perturb-val call: every candidate sees exactly these."""
        if count == 0:
            return []
        with BatchStream(self.member_loaders.search_train, start_epoch=data_epoch(self.cfg.seed, f"ft/{key}")) as s:
            return list(s.take(count))

    def score(self, network: SearchNetwork, optimizer: torch.optim.Optimizer, candidates: Sequence[Candidate],
              stage: StageConfig, *, key: str, shard: bool, tag: str, keep: int = 1) -> PerturbResult:
        """Perturb-val of ``candidates`` on ``network`` with the stage's fine-tune budget K; the decision
        keeps the ``keep`` most important (its separation is judged on that boundary).

        Fine-tuning continues ``optimizer`` (restored from the snapshot for each candidate) at
        optim.finetune_lr, or at its end-of-training rate when that is null; with the stage's
        finetune_optimizer 'fresh' it uses a new SGD at the stage's peak rate instead (the reference's stage D).
        """
        started = time.time()
        search = self.cfg.search
        steps = search.finetune_budget(stage)
        seed_everything(unit_seed(self.cfg.seed, f"score/{key}"))  # the same RNG state on every rank
        batches = self.finetune_batches(key, steps)
        measure = self.measure()
        rounds = Rounds(batches=search.val_batches or measure.num_batches, max_rounds=search.adaptive_rounds,
                        keep=keep, z=search.confidence_z)
        finetune_lr = self.cfg.optim.finetune_lr
        grad_clip = self.cfg.optim.grad_clip
        if stage.finetune_optimizer == "fresh":
            optimizer, finetune_lr = make_optimizer(network, self.stage_lr(stage), self.cfg.optim), None

        def finetune(module: nn.Module, count: int) -> None:
            if finetune_lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = finetune_lr
            train_epoch(module, batches, optimizer, env=self.env, max_steps=count, desc="fine-tune", sync=False,
                        grad_clip=grad_clip)

        snapshot = Snapshot.capture(network, optimizer)
        with progress(iter(()), self.env, desc=f"{tag} perturb-val", total=len(candidates) + 1, leave=False) as bar:
            def on_task(index: int, label: str) -> None:
                bar.set_postfix_str(label)
                bar.update(1)

            result = perturb_val(network, candidates, snapshot=snapshot, finetune=finetune, measure=measure,
                                 steps=steps, env=self.env, shard=shard, baseline=search.baseline, rounds=rounds,
                                 score=search.score, record_digests=search.record_digests, on_task=on_task)
        if not snapshot.matches(network):
            raise RuntimeError("perturb-val did not restore the network's weights")
        self._add_time(key, "score", started)
        self.scores_logged += 1
        if self.metrics is not None:
            self.metrics.log(self.scores_logged, **{"perturb/reference_top1": result.reference,
                                                   "perturb/best_score": min(result.scores, default=0.0)})
        labels = [c.label for c in candidates]
        self.log.info("%s perturb-val (K=%d, %s BN, %d samples): reference %.2f%%, %s scores %s%s", tag, steps,
                      search.measurement, result.samples, result.reference, search.score,
                      ", ".join(f"{label} {s:+.3g}+-{se:.2g}"
                                for label, s, se in zip(labels, result.scores, result.standard_errors)),
                      f"; {result.separation.describe(labels)}" if result.separation is not None else "")
        return result


def _cpu_copy(value):
    """A deep copy of a (nested) optimizer state with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(item) for item in value)
    return value
