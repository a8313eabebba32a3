"""What a search leaves in its run directory, and resuming from it.

    run_dir/
      checkpoints/ckpt_<step>.pt   one per decision (launch.checkpoint: atomic, checksummed, every rank's RNG)
      stage_a/member_<m>.json      stage-A rows of this rank's member m as they finish (its resume record;
                                   perturb/stage_a_records.py)
      scores.json                  every member's score matrix, the population average, every decision
      cells/step_<step>.png        the cell after each decision of stages B-D (all candidate ops shown)
      cells/final.png              the final genotype (space.pictures.draw_genotype)
      genotype.json                the searched cell (normal = reduce)
      summary.json                 status (running / done), progress per stage with ETA, wall time (per stage;
                                   rank 0's training and perturb-val seconds per stage), world size,
                                   device-hours = wall * W / 3600, decision confidence, the genotype
      config.yaml, log.txt, metrics.jsonl, tensorboard/   (launch.rundir)

Only rank 0 writes files (checkpoint saving is collective). Pictures are skipped, with one warning, when
graphviz is not installed.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from common.atomic import write_json_atomically
from launch.checkpoint import CheckpointManager
from launch.config import config_to_dict
from launch.distributed import DistEnv
from common.errors import ConfigError
from perturb.runtime import SearchRuntime
from perturb.stages import SearchState, decision_confidence, kill_for_test
from space.genotype import Genotype
from space.pictures import draw_genotype, draw_search_cell
from space.search_network import SearchNetwork


class TrainedNetwork:
    """The network and optimizer a decision leaves (stages B-D, the supernet) as a checkpoint component:
    ``state_dict`` packs them (SearchRuntime.pack; None after stage A), ``load_state_dict`` rebuilds them
    (SearchRuntime.restore_network); :meth:`restored` gives them back."""

    def __init__(self, runtime: SearchRuntime, network: SearchNetwork | None = None,
                 optimizer: torch.optim.Optimizer | None = None):
        self.runtime, self.network, self.optimizer = runtime, network, optimizer

    def state_dict(self) -> dict | None:
        return SearchRuntime.pack(self.network, self.optimizer) if self.network is not None else None

    def load_state_dict(self, record: dict | None) -> None:
        self.network = self.optimizer = None
        if record is not None:
            self.network, self.optimizer = self.runtime.restore_network(record, self.runtime.cfg.search.stage_c)

    def restored(self) -> tuple[SearchNetwork, torch.optim.Optimizer] | None:
        return (self.network, self.optimizer) if self.network is not None else None


class SearchRecorder:
    """Checkpoints, scores.json, pictures and the summary of one search run."""

    def __init__(self, run_dir: Path, env: DistEnv, runtime: SearchRuntime, config: object,
                 log: logging.Logger, pictures: bool = True):
        self.run_dir = Path(run_dir)
        self.env = env
        self.runtime = runtime
        self.config = config
        self.log = log
        self.pictures = pictures and env.is_main
        self.manager = CheckpointManager(self.run_dir, env, keep=2)

    # ---- resume ----------------------------------------------------------------------------------
    def resume(self, npop: int, n_ops: int, allow: bool = True):
        """``(state, trained)`` from the newest checkpoint, or a fresh state and None.

        ``allow=False`` starts over: the run directory's old checkpoints and stage-A files are deleted first.
        """
        state, trained = SearchState.fresh(npop, n_ops), TrainedNetwork(self.runtime)
        if not allow:
            self.runtime.stage_a_records.delete_all()  # every rank: its own (or the shared) files
        if not self.manager.resume({"search": state, "trained": trained}, allow=allow):
            return state, None
        if len(state.member_scores) != npop or len(state.member_scores[0][0]) != n_ops:
            raise ConfigError(f"the run directory {self.run_dir} holds a search with another npop or op list; "
                              "use another --note or --set resume=false")
        self.log.info("resumed from checkpoint step %d (stage %s)", state.step, state.stage)
        return state, trained.restored()

    # ---- after every decision --------------------------------------------------------------------
    def on_decision(self, state: SearchState, network: SearchNetwork | None,
                    optimizer: torch.optim.Optimizer | None, caption: str | None) -> None:
        self.manager.save_components(state.step, {"search": state, "trained": TrainedNetwork(self.runtime, network,
                                                                                             optimizer)})
        debug = self.runtime.cfg.debug
        if debug.crash_at_step and state.step == debug.crash_at_step:
            kill_for_test(debug, self.env.rank, f"killed after the checkpoint of decision {state.step}")
        if not self.env.is_main:
            return
        self.write_scores(state)
        self.write_summary(state, status="running")
        if caption is not None and state.cell is not None:
            self.picture(lambda path: draw_search_cell(state.current_cell(), path, caption),
                         self.run_dir / "cells" / f"step_{state.step:04d}.png")

    def on_progress(self, state: SearchState) -> None:
        """After each of this rank's stage-A units: rank 0 rewrites summary.json (progress, ETA)."""
        if self.env.is_main:
            self.write_summary(state, status="running")

    def write_scores(self, state: SearchState) -> None:
        search = self.runtime.cfg.search
        write_json_atomically(self.run_dir / "scores.json", {
            "ops": list(search.ops),
            "npop": search.npop,
            "score": ("top-1 % after removal minus reference top-1 %" if search.score == "top1" else
                      "reference cross-entropy minus cross-entropy after removal (nats)")
                     + "; more negative = more important",
            "standard_errors": "paired standard error of each score (in the score's unit), in stage_a_units and "
                               "decisions, with each decision's separation (margin against z standard errors)",
            "measurement": {"bn": search.measurement, "score": search.score, "baseline": search.baseline,
                            "val_batches": search.val_batches, "adaptive_rounds": search.adaptive_rounds,
                            "confidence_z": search.confidence_z},
            "members": {str(m): matrix for m, matrix in enumerate(state.member_scores)},
            "average": state.average,
            "stage_a_units": state.units,
            "decisions": state.decisions,
            "cell": state.cell,
        }, indent=1)

    def picture(self, draw, path: Path) -> None:
        if not self.pictures:
            return
        try:
            draw(path)
        except Exception as error:  # graphviz missing or failing: pictures are a convenience
            warnings.warn(f"cell pictures are skipped: {error}", stacklevel=2)
            self.log.warning("cell pictures are skipped: %s", error)
            self.pictures = False

    # ---- the end ---------------------------------------------------------------------------------
    def write_summary(self, state: SearchState, status: str, genotype: Genotype | None = None,
                      name: str | None = None) -> None:
        """summary.json: status ("running" after every decision, "done" at the end), progress per stage
        with ETAs, wall time, device-hours, decision confidence, stage and phase seconds, the config."""
        wall = state.wall_time()
        write_json_atomically(self.run_dir / "summary.json", {
            "status": status,
            "genotype": genotype.to_dict(name=name) if genotype is not None else None,
            "stage": state.stage,
            "progress": state.progress,
            "wall_time_s": round(wall, 3),
            "world_size": self.env.world_size,
            "device": str(self.env.device),
            "device_hours": wall * self.env.world_size / 3600.0,
            "decisions": state.step,
            "confidence": decision_confidence(state),
            "stage_seconds": {stage: round(t, 3) for stage, t in state.stage_seconds.items()},
            "phase_seconds": {stage: {phase: round(t, 3) for phase, t in phases.items()}
                              for stage, phases in state.counters.phase_seconds.items()},
            "config": config_to_dict(self.config),
        }, indent=1)

    def finish(self, state: SearchState, genotype: Genotype, name: str) -> None:
        wall = state.wall_time()
        if not self.env.is_main:
            return
        genotype.to_json(self.run_dir / "genotype.json", name=name)
        self.write_scores(state)
        self.picture(lambda path: draw_genotype(genotype, path, caption=name), self.run_dir / "cells" / "final.png")
        self.write_summary(state, status="done", genotype=genotype, name=name)
        confidence = decision_confidence(state)
        self.log.info("decisions separated beyond noise (per stage): %s; inside noise: %s",
                      confidence["separated_of_decided"],
                      ", ".join(f"{d['stage']} {'edge' if 'edge' in d else 'node'} {d.get('edge', d.get('node'))}"
                                for d in confidence["inside_noise"]) or "none")
        self.log.info("genotype: %s", genotype)
        self.log.info("search wall time %.1fs on %d rank(s): %.4f device-hours", wall, self.env.world_size,
                      wall * self.env.world_size / 3600.0)
