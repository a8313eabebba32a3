"""One evolutionary search from a resolved config: session (launch/session.py), loaders, stages, outputs."""
from __future__ import annotations

import logging
from pathlib import Path

from launch.distributed import DistEnv
from launch.fingerprint import check_fingerprint, result_fingerprint, write_fingerprint
from launch.rundir import MetricsLogger, make_run_dir, prepare_run_dir
from launch.session import run_session
from perturb.config import RESULT_SECTIONS, EvolutionConfig, StageConfig
from perturb.outputs import SearchRecorder
from perturb.runtime import SearchRuntime, build_search_loaders
from perturb.stages import SupernetStageA, run_search
from space.genotype import Genotype


def run_evolutionary_search(cfg: EvolutionConfig) -> Genotype:
    """Run (or resume) the search described by ``cfg`` in ``cfg.save/cfg.note``; returns the genotype.

    Call it in every torchrun worker (or in a plain process: a world of one).
    """
    with run_session(Path(cfg.save) / cfg.note, device=cfg.device, threads=cfg.threads, seed=cfg.seed,
                     dist_timeout_s=cfg.dist_timeout_s, create_run_dir=False) as session:
        env = session.env
        member_loaders, ddp_loaders = build_search_loaders(cfg.data, env, cfg.seed)  # bad data: no run dir yet
        run_dir = make_run_dir(session.run_dir, env)
        fingerprint = result_fingerprint(cfg, RESULT_SECTIONS)
        if cfg.resume:  # before anything in the run dir changes
            check_fingerprint(run_dir, fingerprint, is_main=env.is_main, write=False)
        log = session.logger("search_evolutionary")
        log.info("evolutionary search: npop %d on %d rank(s), device %s, run dir %s", cfg.search.npop,
                 env.world_size, env.device, run_dir)
        runtime = SearchRuntime(cfg, env, member_loaders, ddp_loaders, run_dir, None, log)
        recorder = SearchRecorder(run_dir, env, runtime, cfg, log, pictures=cfg.pictures)
        state, trained = recorder.resume(cfg.search.npop, len(cfg.search.ops), allow=cfg.resume)
        prepare_run_dir(run_dir, env, cfg)
        write_fingerprint(run_dir, fingerprint, is_main=env.is_main)
        runtime.metrics = session.metrics()
        genotype = run_search(runtime, state, recorder.on_decision, trained, on_progress=recorder.on_progress)
        recorder.finish(state, genotype, name=cfg.note)
        return genotype


def run_search_on_supernet(cfg: EvolutionConfig, env: DistEnv, run_dir: Path, log: logging.Logger,
                           metrics: MetricsLogger, *, op_cap: int | None, supernet: StageConfig) -> Genotype:
    """The PertNAS supernet variant (``search_supernet.py --method pertnas``): stage A computed on one
    supernet (perturb/stages.py :func:`~perturb.stages.stage_a_on_supernet`), then stages B-D, in the
    prepared ``run_dir`` of a one-member search ``cfg`` (npop 1); resumes from its checkpoints."""
    member_loaders, ddp_loaders = build_search_loaders(cfg.data, env, cfg.seed)
    runtime = SearchRuntime(cfg, env, member_loaders, ddp_loaders, run_dir, metrics, log)
    recorder = SearchRecorder(run_dir, env, runtime, cfg, log, pictures=cfg.pictures)
    state, trained = recorder.resume(1, len(cfg.search.ops), allow=cfg.resume)
    genotype = run_search(runtime, state, recorder.on_decision, trained,
                          supernet=SupernetStageA(op_cap=op_cap, stage=supernet))
    recorder.finish(state, genotype, name=cfg.note)
    return genotype
