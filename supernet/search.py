"""The supernet searches: DARTS bilevel training and DARTS-PT projection (the PertNAS supernet variant,
``method: pertnas``, is perturb/'s stage A computed on a supernet: perturb/search.py run_search_on_supernet).

Bilevel loop (DARTS), per step of an epoch over search-train:
    1. architecture step (supernet/architect.py; first or second order) on a fresh search-val batch,
       ``loaders.arch_val``: augmented like training and drawn at random for every step, as DARTS's
       ``next(iter(valid_queue))``; the alpha gradient is averaged over ranks so every rank holds the same
       alphas;
    2. weight step on the search-train batch: ``launch.train.train_step`` (SGD, momentum 0.9, wd 3e-4,
       gradient clipping 5; lr annealed by cosine or cosine power annealing) with the alphas frozen, under
       DDP when distributed (alphas are left out of DDP's gradient all-reduce).
The epoch is ``launch.train.train_epoch`` with step 1 as its ``before_step`` hook (after
``arch.warmup_epochs`` weight-only epochs).

DARTS-PT (``method: darts_pt``) then projects (perturb/projection.py) as darts-pt does: the weight
optimizer is reset at lr/10, and after every group of decisions the supernet is fine-tuned with the same
bilevel steps (supernet/config.py ProjectionConfig).

Run directory (``save/note``)::

    checkpoints/ckpt_<n>.pt    after every epoch (n = epoch) and every projection decision (n = epochs + i)
    cells/epoch_<e>.png        the cell derived from the alphas after epoch e (graphviz)
    cells/project_<i>.png      the cell after projection decision i (DARTS-PT)
    cells/progress.gif         all of the above, animated
    heatmaps/epoch_<e>.png     softmax(alpha) per edge and op (PIL); heatmaps/project_<i>.png
    genotype.json, alphas.json, projection.json (DARTS-PT decisions), summary.json
    config.yaml, fingerprint.json (launch/fingerprint.py), log.txt (log.rank<r>.txt), metrics.jsonl, tensorboard/

Every rank logs a digest of its alphas after every epoch, so identical alphas across ranks can be checked
from the log files.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from data.loaders import BatchStream, Loaders, build_loaders
from common.atomic import write_json_atomically
from launch.checkpoint import CheckpointManager, ModelWeights
from launch.config import config_to_dict
from launch.distributed import DistEnv, all_gather_cat, broadcast_tensor, wrap_ddp
from launch.fingerprint import check_fingerprint, result_fingerprint, write_fingerprint
from launch.rundir import MetricsLogger, prepare_run_dir
from launch.schedules import build_scheduler
from launch.seeding import seed_everything
from launch.session import run_session
from launch.train import evaluate, to_channels_last, train_epoch, train_step
from perturb.measure import SearchValMeasure
from perturb.projection import decide, fallback_ops, projection_plan
from perturb.search import run_search_on_supernet
from space.genotype import Genotype
from space.pictures import draw_genotype
from space.search_network import NUM_EDGES, SearchNetwork, normalize_candidates
from supernet.architect import Architect
from supernet.config import SupernetConfig, evolution_config
from supernet.derive import genotype_from_alphas, genotype_from_masks
from supernet.pictures import make_gif, save_heatmap

Batch = tuple[torch.Tensor, torch.Tensor]
#: The config fields a search's results depend on (its fingerprint): a resume must match them.
RESULT_SECTIONS = ("method", "seed", "epochs", "eval_batches", "data", "network", "weights", "arch", "projection",
                   "pertnas")
#: What every checkpoint's state holds (checked when it is loaded).
CHECKPOINT_STATE = {"search": str, "model": dict, "masks": dict, "weight_optimizer": dict, "arch_optimizer": dict,
                    "scheduler": dict, "val_stream": dict}


@contextlib.contextmanager
def requiring_grad(parameters: Sequence[nn.Parameter], enabled: bool) -> Iterator[None]:
    """Parameters whose ``requires_grad`` is ``enabled`` inside the block; their own flags come back after."""
    flags = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(enabled)
    try:
        yield
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)


def frozen(parameters: Sequence[nn.Parameter]):
    """Parameters that get no gradient inside the block (the alphas during a weight step)."""
    return requiring_grad(parameters, False)


def alpha_digest(network: SearchNetwork) -> str:
    """SHA-256 (first 16 hex digits) of the alphas' raw bytes: equal digests = bit-identical alphas."""
    digest = hashlib.sha256()
    for name, alpha in sorted(network.alphas.items()):
        digest.update(name.encode())
        digest.update(alpha.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def build_supernet(cfg: SupernetConfig, in_channels: int, num_classes: int, device: torch.device) -> SearchNetwork:
    """The DARTS supernet of ``cfg.network``: every op of ``network.ops`` on every edge, with alphas;
    seeded by ``cfg.seed`` alone so that every rank builds the same one."""
    seed_everything(cfg.seed)
    net = cfg.network
    candidates = normalize_candidates([tuple(net.ops)] * NUM_EDGES)
    network = SearchNetwork(in_channels, num_classes, candidates, None if net.shared_cell else candidates,
                            channels=net.channels, layers=net.layers, stem_multiplier=net.stem_multiplier,
                            weighting=net.weighting, checkpoint_cells=net.checkpoint_cells)
    return to_channels_last(network.to(device), device, cfg.channels_last)


class BilevelSearch:
    """One DARTS / DARTS-PT search on this rank (see the module docstring); resumable."""

    def __init__(self, cfg: SupernetConfig, env: DistEnv, loaders: Loaders, run_dir: Path,
                 log: logging.Logger, metrics: MetricsLogger | None):
        self.cfg, self.env, self.loaders, self.run_dir, self.log, self.metrics = cfg, env, loaders, run_dir, log, metrics
        info = loaders.info
        self.network = build_supernet(cfg, info.in_channels, info.num_classes, env.device)
        for alpha in self.network.arch_parameters():  # one set of alphas for the whole job
            broadcast_tensor(alpha.data, src=0)
        seed_everything(cfg.seed, env.rank)
        if env.is_distributed:
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self.network, [f"alphas.{name}" for name in self.network.alphas])
        self.model = wrap_ddp(self.network, env, find_unused_parameters=True)
        w = cfg.weights
        self.weight_optimizer = torch.optim.SGD(self.network.weight_parameters(), lr=w.learning_rate,
                                                momentum=w.momentum, weight_decay=w.weight_decay)
        self.steps_per_epoch = len(loaders.search_train)
        self.scheduler = build_scheduler(self.weight_optimizer, w.schedule, total_steps=cfg.epochs * self.steps_per_epoch,
                                         min_lr=w.learning_rate_min, power_k=w.power_k,
                                         steps_per_epoch=self.steps_per_epoch, per_epoch=w.schedule_per == "epoch")
        a = cfg.arch
        self.arch_optimizer = torch.optim.Adam(self.network.arch_parameters(), lr=a.learning_rate,
                                               betas=(a.beta1, a.beta2), weight_decay=a.weight_decay)
        self.architect = Architect(self.network, self.weight_optimizer, self.arch_optimizer,
                                   second_order=a.second_order, eps_scale=a.eps_scale)
        self.val_stream = BatchStream(loaders.arch_val)
        self.checkpoints = CheckpointManager(run_dir, env, keep=2)
        self.pictures = cfg.pictures and env.is_main
        self.progress = BilevelProgress(cfg.epochs)
        self._fixed_val: list[Batch] | None = None

    @property
    def state(self) -> dict:
        """Where the search stands (:class:`BilevelProgress`): phase, epoch, history, projection."""
        return self.progress.values

    # ---- checkpoints -----------------------------------------------------------------------------
    def _checkpoint_step(self) -> int:
        projection = self.state["projection"]
        return self.state["epoch"] + (projection["done"] if projection else 0)

    def components(self) -> dict:
        """The checkpoint components of this search, in loading order (the masks before the weights)."""
        return {"search": self.progress, "masks": NetworkMasks(self.network), "model": ModelWeights(self.network),
                "weight_optimizer": self.weight_optimizer, "arch_optimizer": self.arch_optimizer,
                "scheduler": self.scheduler, "val_stream": self.val_stream}

    def save(self) -> None:
        """A checkpoint of everything needed to continue (collective)."""
        self.checkpoints.save_components(self._checkpoint_step(), self.components())

    def resume(self, allow: bool) -> bool:
        """Load the newest checkpoint (``allow``) or delete old ones; True when resumed."""
        if not self.checkpoints.resume(self.components(), allow=allow, expect=CHECKPOINT_STATE):
            return False
        self.log.info("resumed from checkpoint %d (phase %s, epoch %d)", self._checkpoint_step(),
                      self.state["phase"], self.state["epoch"])
        return True

    def _elapsed(self) -> float:
        return self.progress.wall_time()

    # ---- bilevel training ------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> bool:
        """Run the remaining epochs (at most ``stop_after`` in this call); True when all are done."""
        cfg = self.cfg
        run = 0
        while self.state["phase"] == "train" and self.state["epoch"] < cfg.epochs:
            if stop_after is not None and run >= stop_after:
                self.log.info("stopping after %d epoch(s) as asked (stop_after_epochs); rerun to continue", run)
                return False
            self._train_epoch(self.state["epoch"])
            self.state["epoch"] += 1
            run += 1
            self._after_epoch(self.state["epoch"])
        if self.state["phase"] == "train":
            self.state["phase"] = "project" if cfg.method == "darts_pt" else "done"
        return True

    def _bilevel_step(self, images: torch.Tensor, labels: torch.Tensor, *, update_alphas: bool,
                      scheduler=None) -> dict:
        """One step of the bilevel loop (module docstring): an architecture step on the next search-val
        batch (if ``update_alphas``), then a weight step on ``(images, labels)`` with the alphas frozen."""
        if update_alphas:
            self.architect.step((images, labels), self.val_stream.next_batch())
        with frozen(self.network.arch_parameters()):
            return train_step(self.model, images, labels, self.weight_optimizer,
                              grad_clip=self.cfg.weights.grad_clip, scheduler=scheduler)

    def _architecture_step(self, index: int, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Step 1 of the bilevel loop as :func:`launch.train.train_epoch`'s ``before_step`` hook: the
        architecture step on the next search-val batch, the alphas thawed for it (the epoch runs them frozen)."""
        with requiring_grad(self.network.arch_parameters(), True):
            self.architect.step((images, labels), self.val_stream.next_batch())

    def _train_epoch(self, epoch: int) -> None:
        """One epoch of the bilevel loop over search-train (launch.train.train_epoch with the alphas frozen
        for the weight steps and :meth:`_architecture_step` before each, once past arch.warmup_epochs), then
        the fixed search-val batches scored, metrics and a log line."""
        cfg, env = self.cfg, self.env
        update_alphas = epoch >= cfg.arch.warmup_epochs
        loader = self.loaders.search_train
        loader.set_epoch(epoch)
        with frozen(self.network.arch_parameters()):
            train = train_epoch(self.model, loader, self.weight_optimizer, env=env,
                                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                                before_step=self._architecture_step if update_alphas else None,
                                grad_clip=cfg.weights.grad_clip, scheduler=self.scheduler)
        val = evaluate(self.model, self.fixed_val_batches(cfg.eval_batches), env=env)
        record = {"search/train_loss": train["loss"], "search/train_top1": train["top1"],
                  "search/val_loss": val["loss"], "search/val_top1": val["top1"],
                  "search/lr": self.weight_optimizer.param_groups[0]["lr"]}
        for cell_type in self.network.arch_cell_types():
            probs = torch.softmax(self.network.alphas[cell_type].detach().float(), dim=-1)
            record[f"alpha/entropy_{cell_type}"] = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
        if self.metrics is not None:
            self.metrics.log(epoch + 1, **record)
        self.log.info("epoch %d/%d: train loss %.4f top1 %.2f%% | search-val loss %.4f top1 %.2f%% | lr %.5f",
                      epoch + 1, cfg.epochs, record["search/train_loss"], record["search/train_top1"],
                      val["loss"], val["top1"], record["search/lr"])

    def fixed_val_batches(self, count: int) -> list[Batch]:
        """The first ``count`` search-val batches of this rank (taken once per job, kept on the device)."""
        if self._fixed_val is None or len(self._fixed_val) < count:
            with BatchStream(self.loaders.search_val) as stream:
                self._fixed_val = list(stream.take(max(count, 1)))
        return self._fixed_val[:count]

    def _after_epoch(self, epoch: int) -> None:
        genotype = genotype_from_alphas(self.network)
        self.state["history"].append(genotype.to_dict())
        self.log.info("epoch %d alphas digest %s genotype %s", epoch, alpha_digest(self.network), genotype)
        self.save()
        self._pictures(genotype, f"epoch_{epoch:03d}", f"epoch {epoch}")

    def _pictures(self, genotype: Genotype, stem: str, caption: str) -> None:
        if not self.pictures:
            return
        try:
            if self.network.weighting != "sum":
                save_heatmap(self.network, self.run_dir / "heatmaps" / f"{stem}.png", caption)
            draw_genotype(genotype, self.run_dir / "cells" / f"{stem}.png", caption=caption)
        except Exception as error:  # graphviz missing or failing: pictures are a convenience
            warnings.warn(f"pictures are skipped: {error}", stacklevel=2)
            self.log.warning("pictures are skipped: %s", error)
            self.pictures = False

    # ---- DARTS-PT projection ---------------------------------------------------------------------
    def projection_batches(self) -> list[Batch]:
        """The search-val batches every projection decision is measured on: this rank's first
        ``projection.val_batches`` batches (null: all of them), gathered from all ranks so every rank
        measures the same data."""
        count = self.cfg.projection.val_batches
        local = self.fixed_val_batches(len(self.loaders.search_val) if count is None else count)
        return [(all_gather_cat(images), all_gather_cat(labels)) for images, labels in local]

    def calibration_batches(self) -> list[Batch]:
        """Search-train batches for measurement 'recalibrate': ``projection.calibration_batches`` of this
        rank's shard from a fixed epoch, gathered from all ranks (every rank recalibrates on the same data)."""
        if self.cfg.projection.measurement != "recalibrate":
            return []
        with BatchStream(self.loaders.search_train, start_epoch=10 ** 6) as stream:
            local = list(stream.take(self.cfg.projection.calibration_batches))
        return [(all_gather_cat(images), all_gather_cat(labels)) for images, labels in local]

    def tuning_plan(self, plan: list[dict]) -> tuple[int, int]:
        """(steps of one tuning epoch, tuning epochs of the whole projection) for ``plan``."""
        p = self.cfg.projection
        epoch_steps = p.tune_epoch_steps if p.tune_epoch_steps is not None else self.steps_per_epoch
        groups = sum(1 for decision in plan if decision["tune_after"])
        return epoch_steps, p.tune_epochs * max(groups - 1, 0) + p.final_tune_epochs

    def tune_lr(self, tuning_epoch: int, total_epochs: int) -> float:
        """The weights' learning rate in tuning epoch ``tuning_epoch`` (0-based) of ``total_epochs``:
        constant tune_lr, or cosine from tune_lr to weights.learning_rate_min (ProjectionConfig)."""
        p, w = self.cfg.projection, self.cfg.weights
        lr = p.tune_lr if p.tune_lr is not None else w.learning_rate / 10
        if p.tune_schedule == "constant":
            return lr
        return w.learning_rate_min + (lr - w.learning_rate_min) * 0.5 * (
            1.0 + math.cos(math.pi * tuning_epoch / max(total_epochs, 1)))

    def _reset_weight_optimizer(self, lr: float) -> None:
        """darts-pt's ``reset_optimizer``: a fresh SGD (no momentum buffers) at ``lr``, momentum and weight
        decay of ``weights``; the architect's virtual step reads it from now on."""
        w = self.cfg.weights
        self.weight_optimizer = torch.optim.SGD(self.network.weight_parameters(), lr=lr, momentum=w.momentum,
                                                weight_decay=w.weight_decay)
        self.architect.weight_optimizer = self.weight_optimizer

    def project(self) -> None:
        """DARTS-PT (perturb/projection.py): every decision, fine-tuning after each group; a checkpoint after
        each decision (a restart redoes the decision and tuning in flight, with the same result)."""
        cfg, env = self.cfg, self.env
        if self.state["phase"] != "project":
            return
        if self.state["projection"] is None:
            plan = projection_plan(self.network, cfg.seed)
            self.state["projection"] = {"plan": plan, "done": 0, "records": [], "tuned_steps": 0,
                                        "tune_stream": {"epoch": cfg.epochs, "batch_in_epoch": 0}}
            self._reset_weight_optimizer(self.tune_lr(0, self.tuning_plan(plan)[1]))
        projection = self.state["projection"]
        measure = SearchValMeasure(self.projection_batches(), measurement=cfg.projection.measurement,
                                   calibration=self.calibration_batches(), env=env)  # the same data on every rank
        tune_stream = BatchStream(self.loaders.search_train)
        tune_stream.load_state_dict(projection["tune_stream"])
        plan = projection["plan"]
        epoch_steps, total_epochs = self.tuning_plan(plan)
        while projection["done"] < len(plan):
            index = projection["done"]
            decision = plan[index]
            record = decide(self.model, decision, measure=measure, env=env)
            projection["records"].append(record)
            self.log.info("projection %d/%d: %s", index + 1, len(plan), _describe(record))
            if decision["tune_after"]:
                last = index + 1 == len(plan)
                epochs = cfg.projection.final_tune_epochs if last else cfg.projection.tune_epochs
                self._tune(tune_stream, epochs * epoch_steps, epoch_steps, total_epochs)
            projection["done"] = index + 1
            projection["tune_stream"] = tune_stream.state_dict()
            if self.metrics is not None and "reference" in record:
                self.metrics.log(cfg.epochs + index + 1, **{"projection/reference_top1": record["reference"]})
            if projection["done"] == len(plan):
                self.state["phase"] = "done"
            self.save()
            if self.pictures:
                try:  # an edge that kept none leaves its node with one edge until the node decision
                    genotype = genotype_from_alphas(self.network)
                except ValueError:
                    continue
                self._pictures(genotype, f"project_{index + 1:03d}", f"projection {index + 1}: {_describe(record)}")
        tune_stream.close()

    def _tune(self, stream: BatchStream, steps: int, epoch_steps: int, total_epochs: int) -> None:
        """Fine-tune ``steps`` bilevel steps on every rank (DDP), the learning rate set per tuning epoch
        (:meth:`tune_lr`); alphas move too unless ``projection.arch_steps`` is false."""
        projection = self.state["projection"]
        update_alphas = self.cfg.projection.arch_steps
        self.model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
        for images, labels in stream.take(steps):
            lr = self.tune_lr(projection["tuned_steps"] // epoch_steps, total_epochs)
            for group in self.weight_optimizer.param_groups:
                group["lr"] = lr
            result = self._bilevel_step(images, labels, update_alphas=update_alphas)
            projection["tuned_steps"] += 1
            n = labels.shape[0]
            sums += torch.tensor([result["loss"] * n, result["top1"] * n / 100.0, n], dtype=torch.float64)
        if steps:
            self.log.info("tuned %d steps (%d of %d tuning epochs of %d steps done), lr %.5f: train loss %.4f "
                          "top1 %.2f%% (this rank)", steps, projection["tuned_steps"] // epoch_steps, total_epochs,
                          epoch_steps, self.weight_optimizer.param_groups[0]["lr"],
                          sums[0].item() / sums[2].item(), 100.0 * sums[1].item() / sums[2].item())

    # ---- the end ---------------------------------------------------------------------------------
    def genotype(self) -> Genotype:
        if self.cfg.method == "darts_pt":
            return genotype_from_masks(self.network, fallback_ops(self.state["projection"]["records"]))
        return genotype_from_alphas(self.network)

    def finish(self, genotype: Genotype) -> None:
        """genotype.json, alphas.json, projection.json, the GIF and summary.json (rank 0)."""
        if not self.env.is_main:
            return
        cfg, run_dir = self.cfg, self.run_dir
        genotype.to_json(run_dir / "genotype.json", name=cfg.note)
        alphas = {cell_type: {"ops": list(self.network.candidates[cell_type][0]),
                              "softmax": torch.softmax(alpha.detach().double().cpu(), -1).tolist(),
                              "alpha": alpha.detach().double().cpu().tolist()}
                  for cell_type, alpha in self.network.alphas.items()}
        write_json_atomically(run_dir / "alphas.json", {"shared_cell": self.network.shared, "cells": alphas,
                                                        "digest": alpha_digest(self.network)}, indent=1)
        if self.state["projection"] is not None:
            write_json_atomically(run_dir / "projection.json", self.state["projection"], indent=1)
        if self.pictures:
            frames = sorted((run_dir / "cells").glob("epoch_*.png")) + sorted((run_dir / "cells").glob("project_*.png"))
            make_gif(frames, run_dir / "cells" / "progress.gif")
        wall = self._elapsed()
        write_json_atomically(run_dir / "summary.json", {
            "method": cfg.method, "genotype": genotype.to_dict(name=cfg.note), "wall_time_s": round(wall, 3),
            "world_size": self.env.world_size, "device": str(self.env.device),
            "steps_per_epoch": self.steps_per_epoch, "global_batch_size": cfg.data.batch_size,
            "device_hours": wall * self.env.world_size / 3600.0, "epochs": self.state["epoch"],
            "config": config_to_dict(cfg)}, indent=1)
        self.log.info("genotype: %s", genotype)


class BilevelProgress:
    """Where a bilevel search stands, as a checkpoint component: ``values`` = phase ("train", "project",
    "done"), epoch, history (the genotype after each epoch), projection (DARTS-PT: plan, decisions done,
    records, tuning position) and elapsed_s, the wall time before this process took over; its state is
    JSON text with elapsed_s up to now."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.values = {"phase": "train", "epoch": 0, "history": [], "projection": None, "elapsed_s": 0.0}
        self._resumed_at = time.time()

    def wall_time(self) -> float:
        """Seconds of the search so far, across restarts."""
        return self.values["elapsed_s"] + time.time() - self._resumed_at

    def state_dict(self) -> str:
        return json.dumps({**self.values, "elapsed_s": self.wall_time()})

    def load_state_dict(self, text: str) -> None:
        values = json.loads(text)
        if not _search_state_ok(values, self.epochs):
            raise ValueError("the search state is malformed")
        self.values, self._resumed_at = values, time.time()


class NetworkMasks:
    """A search network's op masks (which candidates a projection removed) as a checkpoint component."""

    def __init__(self, network: SearchNetwork):
        self.network = network

    def state_dict(self) -> dict:
        return self.network.mask_state()

    def load_state_dict(self, state: dict) -> None:
        self.network.load_mask_state(state)


def _search_state_ok(state: object, epochs: int) -> bool:
    """Whether a checkpoint's search state has the layout :class:`BilevelSearch` writes."""
    if not (isinstance(state, dict) and state.get("phase") in ("train", "project", "done")
            and type(state.get("epoch")) is int and 0 <= state["epoch"] <= epochs
            and isinstance(state.get("history"), list) and isinstance(state.get("elapsed_s"), (int, float))):
        return False
    projection = state.get("projection")
    return projection is None or (isinstance(projection, dict) and isinstance(projection.get("plan"), list)
                                  and type(projection.get("done")) is int
                                  and 0 <= projection["done"] <= len(projection["plan"])
                                  and isinstance(projection.get("records"), list)
                                  and isinstance(projection.get("tune_stream"), dict))


def _describe(record: dict) -> str:
    where = f"{record['cell_type']} " if record.get("cell_type") else ""
    if record["kind"] == "op":
        fallback = f" (in a genotype: {record['fallback']})" if record.get("fallback") else ""
        return f"{where}edge {record['edge']} keeps {record['kept']}{fallback}"
    return f"{where}node {record['node']} keeps edges {record['kept']}"


def run_supernet_search(cfg: SupernetConfig) -> Genotype | None:
    """Run (or resume) the search of ``cfg`` in ``cfg.save/cfg.note`` on every rank; returns the genotype,
    or None when ``stop_after_epochs`` ended this invocation early."""
    with run_session(Path(cfg.save) / cfg.note, device=cfg.device, threads=cfg.threads, seed=cfg.seed) as session:
        env, run_dir = session.env, session.run_dir
        fingerprint = result_fingerprint(cfg, RESULT_SECTIONS)
        if cfg.resume:  # before anything in the run dir changes
            check_fingerprint(run_dir, fingerprint, is_main=env.is_main, write=False)
        log = session.logger("search_supernet")
        log.info("supernet search (%s) on %d rank(s), device %s, run dir %s", cfg.method, env.world_size,
                 env.device, run_dir)
        if cfg.method == "pertnas":
            prepare_run_dir(run_dir, env, cfg)
            write_fingerprint(run_dir, fingerprint, is_main=env.is_main)
            return run_search_on_supernet(evolution_config(cfg), env, run_dir, log, session.metrics(),
                                          op_cap=cfg.pertnas.op_cap, supernet=cfg.pertnas.supernet)
        loaders = build_loaders(cfg.data.per_rank(env.world_size), rank=env.rank, world_size=env.world_size, seed=cfg.seed, device=env.device)
        search = BilevelSearch(cfg, env, loaders, run_dir, log, None)
        search.resume(cfg.resume)  # a checkpoint that does not fit is refused here, before config.yaml moves
        prepare_run_dir(run_dir, env, cfg)
        write_fingerprint(run_dir, fingerprint, is_main=env.is_main)
        search.metrics = session.metrics()
        if not search.train(stop_after=cfg.stop_after_epochs):
            return None
        search.project()
        genotype = search.genotype()
        search.finish(genotype)
        return genotype
