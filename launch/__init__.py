"""How a job runs: the runtime every CLI shares.

- ``launch.distributed``: :func:`init_distributed` -> :class:`DistEnv` from torchrun's environment (world of
  one under plain python), NCCL on CUDA / gloo on CPU; tensor-only collectives (barrier, all_reduce_mean,
  all_reduce_sum, all_gather_tensor, all_gather_cat, broadcast_tensor), wrap_ddp, unwrap_model.
- ``launch.seeding``: seed_everything(seed, rank) (Python random, numpy, torch, CUDA), RNG state capture/restore.
- ``launch.config``: typed dataclass configs from YAML + ``--set key=value`` overrides, with validation.
- ``launch.rundir``: run directory, rank-0 console logging, metrics.jsonl + TensorBoard, tqdm progress.
- ``launch.checkpoint``: atomic, checksummed checkpoints with every rank's RNG state; the resume protocol: components
  with state_dict()/load_state_dict(), saved and resumed (or started anew) by one CheckpointManager.
- ``launch.session``: run_session(run_dir, ...): the drivers' process group, run directory, seeding, logger and
  metrics writer, torn down on exit.
- ``launch.train``: the one train_step / train_epoch / evaluate (bf16 autocast + channels_last on CUDA).
- ``launch.schedules``: cosine, cosine power annealing, linear warmup, build_scheduler (per-step LambdaLR).
- ``launch/local.sh`` (one node) and ``launch/slurm.sbatch`` (many nodes) wrap torchrun.

One-line user errors, atomic writes and the restricted unpickler live in the leaf package ``common/``.
Nothing is imported here, so ``import launch.distributed`` stays light.
"""
