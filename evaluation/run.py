"""The retraining loop: one genotype, one seed, from scratch to report.json; several seeds to summary.json.

Per epoch e = 0..E-1:

1. drop-path probability p_e = p * e / E (linear ramp from 0, DARTS);
2. one pass over the training loader (launch.train.train_epoch: the shared train step with the auxiliary
   loss L = CE(logits, y) + w_aux * CE(aux_logits, y), gradient clipping, the LR schedule (per epoch or per
   step); the config's ``precision``, ``channels_last`` and ``compile``: by default bf16 autocast +
   channels_last on CUDA); with AutoAugment, each batch (flipped and translated by the loader) goes through
   the policy and then cutout (the paper's order);
3. with a held-out validation split: evaluate on it and keep the best epoch's weights (best/);
4. a checkpoint (launch.checkpoint): model, optimizer, scheduler, epoch, history, best so far, elapsed time.

A rerun in the same run dir resumes from the newest good checkpoint. The test split is evaluated once, at
the end: the final model and, if a held-out split picked one, the best-on-validation model.

Code: build_seed_training (setup), resume_training, train_and_validate_epoch (one epoch), evaluate_on_test,
build_report; train_one_seed runs them in that order.

Run dir layout: config.yaml, fingerprint.json (launch/fingerprint.py: a resume with other results-changing
settings or another genotype is refused), log.txt, metrics.jsonl, tensorboard/, checkpoints/, best/checkpoints/,
report.json. With several seeds: <run_dir>/seed_<s>/ each, and <run_dir>/summary.json.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

from common.atomic import write_json_atomically
from common.errors import ConfigError
from data.autoaugment import AutoAugment
from data.augment import random_cutout
from data.epoch_loader import EpochLoader
from data.loaders import Loaders, build_loaders
from evaluation.complexity import model_size
from evaluation.recipe import EvalConfig
from evaluation.report import REPORT_FILE, SUMMARY_FILE, summarize_seeds
from launch.checkpoint import (START_ANEW, CheckpointInvalid, CheckpointManager, ModelWeights, load_model_state,
                               model_state, state_problem)
from launch.config import config_to_dict
from launch.distributed import DistEnv, wrap_ddp
from launch.fingerprint import check_fingerprint, result_fingerprint
from launch.rundir import MetricsLogger, get_logger, make_run_dir, prepare_run_dir
from launch.schedules import build_scheduler
from launch.seeding import seed_everything
from launch.session import run_session
from launch.train import evaluate, maybe_compile, to_channels_last, train_epoch
from space.eval_network import EvalNetwork
from space.genotype import Genotype

_AUGMENT_STREAM = 7  # keeps AutoAugment's draws apart from the loaders' streams
#: The config fields a run's results depend on (its fingerprint, with the genotype): a resume must match them.
RESULT_SECTIONS = ("seed", "epochs", "data", "network", "optim", "holdout_validation", "autoaugment",
                   "max_steps_per_epoch")
#: What every per-epoch checkpoint's state holds (checked when it is loaded).
EPOCH_STATE = {"model": dict, "optimizer": dict, "scheduler": dict, "progress": dict}
#: What the "progress" entry of a per-epoch checkpoint holds (:class:`TrainingRecord`).
PROGRESS_STATE = {"epoch": int, "elapsed_s": (int, float), "history": list, "best": dict}


def genotype_fingerprint(genotype: Genotype) -> dict:
    """The genotype's cells by dotted key (both cells always, so a shared cell differs from two)."""
    return {f"genotype.{cell}": [list(gene) for gene in genotype.cell(cell)] for cell in ("normal", "reduce")} | {
        f"genotype.{cell}_concat": list(genotype.concat(cell)) for cell in ("normal", "reduce")}


def _resume_problem(epoch: int, history: list, best: dict, epochs: int) -> str | None:
    """What is inconsistent in a per-epoch checkpoint's training record, or None."""
    if not 0 <= epoch <= epochs:
        return f"is at epoch {epoch} of a run of {epochs} epochs"
    if len(history) != epoch or not all(isinstance(record, dict) and _is_number(record.get("train_loss"))
                                        and _is_number(record.get("train_top1")) for record in history):
        return f"holds no training record for each of its {epoch} epochs"
    if set(best) != {"epoch", "top1"} or not (best["epoch"] is None or type(best["epoch"]) is int) or not (
            best["top1"] is None or _is_number(best["top1"])):
        return "holds a malformed best-epoch record"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def build_network(config: EvalConfig, genotype: Genotype, num_classes: int, in_channels: int) -> EvalNetwork:
    """The evaluation network of ``genotype`` as the config's network section describes it."""
    net = config.network
    return EvalNetwork(genotype, num_classes, channels=net.channels, layers=net.layers,
                       auxiliary=net.auxiliary_weight > 0, in_channels=in_channels, stem=net.stem)


def _mapped(batches: Iterable, transforms: list) -> Iterator:
    for images, labels in batches:
        for transform in transforms:
            images = transform(images)
        yield images, labels


def _cutout(images: torch.Tensor, *, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout on a normalised batch: the square is filled with 0, i.e. the data set's mean colour."""
    fill = torch.zeros(images.shape[1], device=images.device, dtype=images.dtype)
    return random_cutout(images, size, fill, generator)


def _to_channels_last(images: torch.Tensor) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last)


class _Sized:
    """An iterable with the length of the loader it wraps (for the progress bar)."""

    def __init__(self, iterable: Iterable, length: int):
        self.iterable, self.length = iterable, length

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self) -> int:
        return self.length


@dataclass
class SeedTraining:
    """What one seed's training works with, built by :func:`build_seed_training`.

    ``network`` is the plain EvalNetwork (checkpoints, drop path); ``model`` is the network as the steps run it
    (torch.compile'd and/or inside DDP). ``train_loader`` is search-train with a held-out validation split
    (``val_loader`` then search-val), else the whole training split (``val_loader`` None).
    """

    loaders: Loaders
    train_loader: EpochLoader
    val_loader: EpochLoader | None
    network: EvalNetwork
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR  # launch.schedules.build_scheduler
    criterion: nn.Module
    size: dict  # model_size(): params_m, multiply_adds_m
    steps_per_epoch: int
    cutout_after_policy: int  # cutout size applied after AutoAugment (0: none, or the loader cuts out)
    cpu_channels_last: bool  # convert batches to channels_last on the CPU (CUDA batches already are)


@dataclass
class TrainingRecord:
    """The epochs done so far, fresh or resumed; the "progress" component of a per-epoch checkpoint.

    ``history`` has one record per finished epoch (train_loss, train_top1, lr, ... ; val_* with a held-out
    split), ``best`` is ``{"epoch", "top1"}`` of the best validation epoch so far (None before any),
    ``elapsed_before`` the wall time of earlier sessions in seconds (:meth:`wall_time` adds this one's);
    ``epochs``: the run's length, which a resumed record must fit; ``session_start``: when this session began
    (time.time(); the caller's start, so that building loaders and the network counts too).
    """

    epochs: int
    start_epoch: int = 0
    elapsed_before: float = 0.0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "top1": None})
    resumed: bool = False
    session_start: float = field(default_factory=time.time, repr=False)

    def wall_time(self) -> float:
        """Seconds of training so far, across sessions."""
        return self.elapsed_before + time.time() - self.session_start

    def state_dict(self) -> dict:
        return {"epoch": len(self.history), "history": self.history, "best": self.best,
                "elapsed_s": self.wall_time()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's record (a malformed one, or one that does not fit a run of
        ``epochs`` epochs, raises ValueError: CheckpointManager.restoring makes it one line)."""
        problem = state_problem(state, PROGRESS_STATE) if isinstance(state, dict) else "is not a record"
        problem = problem or _resume_problem(state["epoch"], state["history"], state["best"], self.epochs)
        if problem:
            raise ValueError(f"the training record {problem}")
        self.start_epoch, self.elapsed_before = state["epoch"], float(state["elapsed_s"])
        self.history, self.best, self.resumed = state["history"], state["best"], True


def build_seed_training(config: EvalConfig, genotype: Genotype, env: DistEnv) -> SeedTraining:
    """Seed this rank and build the loaders, network, optimizer (SGD), LR schedule and loss of one run.

    Refuses (ConfigError) SyncBatchNorm off CUDA and a cutout larger than the images. With AutoAugment the
    loader does not cut out: cutout comes after the policy (as in the paper), in :func:`epoch_batches`.
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed, env.rank, deterministic=config.deterministic)
    device = env.device
    if config.sync_batchnorm and env.is_distributed and device.type != "cuda":
        raise ConfigError("needs CUDA (torch's SyncBatchNorm does not run on the CPU)", key="sync_batchnorm")
    cutout_after_policy = config.data.cutout if config.autoaugment and config.data.augment else 0
    data_config = (replace(config.data, cutout=0) if cutout_after_policy else config.data).per_rank(env.world_size)
    loaders = build_loaders(data_config, rank=env.rank, world_size=env.world_size, seed=config.seed, device=device)
    info = loaders.info
    if cutout_after_policy > min(loaders.image_size):
        raise ConfigError(f"cutout {cutout_after_policy} exceeds the {min(loaders.image_size)}-pixel images",
                          key="data.cutout")
    train_loader = loaders.search_train if config.holdout_validation else loaders.train
    val_loader = loaders.search_val if config.holdout_validation else None

    network = build_network(config, genotype, info.num_classes, info.in_channels).to(device)
    size = model_size(network, (info.in_channels, *loaders.image_size))
    to_channels_last(network, device, config.channels_last)
    if config.sync_batchnorm and env.is_distributed:
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    model = wrap_ddp(maybe_compile(network, config.compile), env)

    optim = config.optim
    optimizer = torch.optim.SGD(network.parameters(), lr=optim.learning_rate, momentum=optim.momentum,
                                weight_decay=optim.weight_decay, nesterov=optim.nesterov)
    steps_per_epoch = len(train_loader)
    if config.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    scheduler = build_scheduler(optimizer, optim.schedule, total_steps=config.epochs * steps_per_epoch,
                                min_lr=optim.learning_rate_min, warmup_steps=optim.warmup_epochs * steps_per_epoch,
                                power_k=optim.power_k, steps_per_epoch=steps_per_epoch,
                                per_epoch=optim.schedule_per == "epoch", gamma=optim.gamma)
    return SeedTraining(
        loaders=loaders, train_loader=train_loader, val_loader=val_loader, network=network, model=model,
        optimizer=optimizer, scheduler=scheduler,
        criterion=nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing), size=size,
        steps_per_epoch=steps_per_epoch, cutout_after_policy=cutout_after_policy,
        cpu_channels_last=bool(config.channels_last) and device.type != "cuda")


def checkpoint_components(training: SeedTraining, record: TrainingRecord) -> dict:
    """The components of a per-epoch checkpoint (:data:`EPOCH_STATE`): weights, optimizer, LR schedule and
    the training record."""
    return {"model": ModelWeights(training.network), "optimizer": training.optimizer,
            "scheduler": training.scheduler, "progress": record}


def resume_training(training: SeedTraining, checkpoints: CheckpointManager, epochs: int,
                    session_start: float | None = None) -> TrainingRecord:
    """The record of the newest good checkpoint in ``checkpoints``, with the weights, optimizer, scheduler
    and RNG states it holds loaded into ``training``; a fresh record when there is none.

    Raises CheckpointInvalid when the checkpoint does not fit (another architecture, or a training record
    that does not fit a run of ``epochs``). Nothing in the run dir changes here, so a refusal leaves it as it was.
    ``session_start`` (default: now) is when this session began, for the record's wall time.
    """
    record = TrainingRecord(epochs=epochs, session_start=time.time() if session_start is None else session_start)
    checkpoints.resume(checkpoint_components(training, record), expect=EPOCH_STATE)
    return record


def epoch_batches(config: EvalConfig, training: SeedTraining, env: DistEnv, epoch: int) -> Iterable:
    """The training batches of ``epoch``: the loader's, then (in this order, where on) AutoAugment, cutout
    after the policy and the CPU channels_last conversion. The augmentations draw from a generator seeded by
    (seed, stream, rank, epoch), so a resumed run draws what an unbroken one does."""
    transforms = []
    if config.autoaugment:
        words = np.random.SeedSequence([config.seed, _AUGMENT_STREAM, env.rank, epoch]).generate_state(1)
        generator = torch.Generator(device=env.device).manual_seed(int(words[0]))
        info = training.loaders.info
        transforms.append(AutoAugment(info.mean, info.std, generator=generator))
        if training.cutout_after_policy:
            transforms.append(functools.partial(_cutout, size=training.cutout_after_policy, generator=generator))
    if training.cpu_channels_last:
        transforms.append(_to_channels_last)
    loader = training.train_loader
    return _Sized(_mapped(loader, transforms), len(loader)) if transforms else loader


def train_and_validate_epoch(config: EvalConfig, training: SeedTraining, env: DistEnv, epoch: int,
                             record: TrainingRecord, best_checkpoints: CheckpointManager) -> dict:
    """Train epoch ``epoch`` (0-based), then score the held-out split if there is one; returns the epoch's
    history entry, also appended to ``record.history``.

    The drop-path probability is p * epoch / epochs. A better validation top-1 than ``record.best`` updates
    it and saves the weights to ``best_checkpoints``.
    """
    epoch_start = time.time()
    network = training.network
    network.drop_path_prob = config.network.drop_path_prob * epoch / config.epochs
    training.train_loader.set_epoch(epoch)
    train = train_epoch(training.model, epoch_batches(config, training, env, epoch), training.optimizer, env=env,
                        max_steps=config.max_steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                        criterion=training.criterion, grad_clip=config.optim.grad_clip,
                        aux_weight=config.network.auxiliary_weight, scheduler=training.scheduler,
                        precision=config.precision)
    entry = {"epoch": epoch + 1, "train_loss": train["loss"], "train_top1": train["top1"],
             "lr": training.scheduler.get_last_lr()[0], "drop_path_prob": network.drop_path_prob}
    if training.val_loader is not None:
        training.val_loader.set_epoch(0)
        val = evaluate(training.model, training.val_loader, env=env, criterion=training.criterion,
                       desc="validation", precision=config.precision)
        entry.update(val_loss=val["loss"], val_top1=val["top1"])
        if record.best["top1"] is None or val["top1"] > record.best["top1"]:
            record.best = {"epoch": epoch + 1, "top1": val["top1"]}
            best_checkpoints.save(epoch + 1, {"model": model_state(network), "epoch": epoch + 1,
                                              "val_top1": val["top1"]})
    entry["epoch_time_s"] = time.time() - epoch_start
    record.history.append(entry)
    return entry


def log_epoch(entry: dict, epochs: int, metrics: MetricsLogger, logger: logging.Logger) -> None:
    """One history ``entry`` to metrics.jsonl / TensorBoard (train/*, val/*, epoch/*) and one log line."""
    held_out = "val_top1" in entry
    scalars = {"train/loss": entry["train_loss"], "train/top1": entry["train_top1"], "epoch/lr": entry["lr"],
               "epoch/drop_path_prob": entry["drop_path_prob"], "epoch/time_s": entry["epoch_time_s"]}
    if held_out:
        scalars.update({"val/loss": entry["val_loss"], "val/top1": entry["val_top1"]})
    metrics.log(entry["epoch"], **scalars)
    logger.info("epoch %d/%d: train loss %.4f top1 %.2f%s lr %.5f (%.0f s)", entry["epoch"], epochs,
                entry["train_loss"], entry["train_top1"],
                f" | val loss {entry['val_loss']:.4f} top1 {entry['val_top1']:.2f}" if held_out else "",
                entry["lr"], entry["epoch_time_s"])


def evaluate_on_test(config: EvalConfig, training: SeedTraining, env: DistEnv, record: TrainingRecord,
                        best_checkpoints: CheckpointManager) -> tuple[dict, dict | None]:
    """Score the test split once with the final weights and, if a held-out split picked a best epoch, once
    with that epoch's weights (loaded from ``best_checkpoints`` into the network, which keeps them).

    Returns (final, best or None), each as :func:`launch.train.evaluate` returns it.
    """
    test_loader = training.loaders.test
    test_loader.set_epoch(0)
    final_test = evaluate(training.model, test_loader, env=env, criterion=training.criterion,
                          desc="test (final model)", precision=config.precision)
    if record.best["epoch"] is None:
        return final_test, None
    best_state = best_checkpoints.load_latest(restore_rng=False, expect={"model": dict})
    if best_state is None:
        raise CheckpointInvalid(f"{best_checkpoints.directory} holds no readable checkpoint of the best "
                                f"epoch ({record.best['epoch']}); {START_ANEW}")
    load_model_state(training.network, best_state["model"], source=str(best_checkpoints.loaded_path))
    test_loader.set_epoch(0)
    best_test = evaluate(training.model, test_loader, env=env, criterion=training.criterion,
                         desc="test (best on val)", precision=config.precision)
    return final_test, best_test


def build_report(config: EvalConfig, genotype: Genotype, genotype_name: str, training: SeedTraining,
                 env: DistEnv, run_dir: Path, record: TrainingRecord, tests: tuple[dict, dict | None],
                 wall_time_s: float) -> dict:
    """The run's report.json: model size, test (final and best-on-validation), validation and last train
    scores, wall time and device hours (wall time x world size), and the whole config."""
    final_test, best_test = tests
    history, best, val_loader = record.history, record.best, training.val_loader
    return {
        "genotype": genotype_name,
        "genotype_cells": genotype.to_dict(name=genotype_name),
        "dataset": training.loaders.info.name,
        "run_dir": str(run_dir),
        "seed": config.seed,
        "epochs": config.epochs,
        "steps_per_epoch": training.steps_per_epoch,
        "global_batch_size": config.data.batch_size,
        "world_size": env.world_size,
        "device": env.device.type,
        **training.size,
        "test": {
            "final_top1": final_test["top1"], "final_top5": final_test["top5"], "final_loss": final_test["loss"],
            "final_error": 100.0 - final_test["top1"],
            "best_on_validation_top1": best_test["top1"] if best_test else None,
            "count": final_test["count"],
        },
        "validation": {
            "held_out": config.holdout_validation,
            "final_top1": history[-1].get("val_top1") if history else None,
            "best_top1": best["top1"],
            "best_epoch": best["epoch"],
            "count": len(val_loader.plan.indices) if val_loader is not None else 0,
        },
        "train": {"final_loss": history[-1]["train_loss"], "final_top1": history[-1]["train_top1"]},
        "wall_time_s": wall_time_s,
        "device_hours": wall_time_s * env.world_size / 3600.0,
        "config": config_to_dict(config),
    }


def train_one_seed(config: EvalConfig, genotype: Genotype, run_dir: str | Path, env: DistEnv, *,
                   genotype_name: str = "genotype", stop_after_epochs: int | None = None,
                   logger: logging.Logger | None = None) -> dict | None:
    """Train ``genotype`` from scratch with ``config`` in ``run_dir`` (resuming if it holds a checkpoint).

    Every rank calls it. Returns the report (also written to run_dir/report.json on rank 0), or None when
    ``stop_after_epochs`` epochs ran in this call before training finished (rerun to resume).
    Steps: :func:`build_seed_training`, :func:`resume_training`, per epoch :func:`train_and_validate_epoch`
    (+ log and checkpoint), :func:`evaluate_on_test`, :func:`build_report`.
    """
    session_start = time.time()
    run_dir = make_run_dir(run_dir, env)
    fingerprint = {**result_fingerprint(config, RESULT_SECTIONS), **genotype_fingerprint(genotype)}
    check_fingerprint(run_dir, fingerprint, is_main=env.is_main, write=False)  # before anything in run_dir changes
    training = build_seed_training(config, genotype, env)
    checkpoints = CheckpointManager(run_dir, env, keep=config.keep_checkpoints)
    best_checkpoints = CheckpointManager(run_dir / "best", env, keep=1)
    record = resume_training(training, checkpoints, config.epochs, session_start)  # before the run dir is touched
    prepare_run_dir(run_dir, env, config)
    check_fingerprint(run_dir, fingerprint, is_main=env.is_main)
    logger = logger or get_logger("train_eval", env, run_dir)
    if record.resumed:
        logger.info("resumed from epoch %d in %s", record.start_epoch, run_dir)
    logger.info("%s: %.3fM params, %.2fM multiply-adds, %d steps/epoch x %d epochs on %s x %d",
                genotype_name, training.size["params_m"], training.size["multiply_adds_m"],
                training.steps_per_epoch, config.epochs, env.device.type, env.world_size)

    metrics = MetricsLogger(run_dir, env)
    try:
        for epochs_this_call, epoch in enumerate(range(record.start_epoch, config.epochs)):
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                logger.info("stopping after %d epochs as asked; rerun to resume from epoch %d", epochs_this_call, epoch)
                return None
            entry = train_and_validate_epoch(config, training, env, epoch, record, best_checkpoints)
            log_epoch(entry, config.epochs, metrics, logger)
            checkpoints.save_components(epoch + 1, checkpoint_components(training, record))
        tests = evaluate_on_test(config, training, env, record, best_checkpoints)
        metrics.log(config.epochs, **{"test/final_top1": tests[0]["top1"]})
    finally:
        metrics.close()

    report = build_report(config, genotype, genotype_name, training, env, run_dir, record, tests,
                          record.wall_time())
    if env.is_main:
        write_json_atomically(run_dir / REPORT_FILE, report)
    final_test, best_test = tests
    logger.info("final test top1 %.2f%% (error %.2f%%)%s; report in %s", final_test["top1"],
                100.0 - final_test["top1"],
                f", best-on-val (epoch {record.best['epoch']}) test top1 {best_test['top1']:.2f}%" if best_test else "",
                run_dir / REPORT_FILE)
    return report


def train_seeds(config: EvalConfig, genotype: Genotype, run_dir: str | Path, env: DistEnv, seeds: list[int], *,
                genotype_name: str = "genotype", stop_after_epochs: int | None = None) -> dict | None:
    """Train one run per seed in ``run_dir/seed_<s>/`` and write ``run_dir/summary.json`` (mean and std of
    the final test accuracy). Returns the summary, or None if a run stopped early (rerun to resume)."""
    run_dir = Path(run_dir)
    reports = {}
    for seed in seeds:
        report = train_one_seed(replace(config, seed=seed), genotype, run_dir / f"seed_{seed}", env,
                                genotype_name=genotype_name, stop_after_epochs=stop_after_epochs)
        if report is None:
            return None
        reports[seed] = report
    summary = summarize_seeds(reports)
    if env.is_main:
        write_json_atomically(run_dir / SUMMARY_FILE, summary)
        get_logger("train_eval", env).info("%s; summary in %s", summary["headline"], run_dir / SUMMARY_FILE)
    return summary


def run_evaluation(config: EvalConfig, genotype: Genotype, run_dir: str | Path, *, seeds: list[int] | None = None,
                   genotype_name: str = "genotype", stop_after_epochs: int | None = None) -> dict | None:
    """train_eval.py's driver: in one session (launch/session.py: process group, run directory; torn down on
    exit), :func:`train_seeds` for ``seeds``, else :func:`train_one_seed` with the config's seed. Each run
    seeds its ranks and opens its log and metrics in its own run directory. Returns the summary or report."""
    with run_session(run_dir, device=config.device) as session:
        if seeds:
            return train_seeds(config, genotype, session.run_dir, session.env, list(seeds),
                               genotype_name=genotype_name, stop_after_epochs=stop_after_epochs)
        return train_one_seed(config, genotype, session.run_dir, session.env, genotype_name=genotype_name,
                              stop_after_epochs=stop_after_epochs)
