"""torchrun worker for tests/test_search_ffcv_torchrun.py: one network's perturb-val on the FFCV backend.

Every rank builds the search's loaders on digits .beton files (augmented: flip, translate, cutout), trains
the same stage-A-like network alone (as a stage-A member: the member loader, full batch) and scores its
edge-0 candidates with perturb-val sharded over the ranks (as stages C and D do). Rank 0 writes the
result, the trained weights' digest and every rank's first fine-tune batch digest to --out as JSON. Run
as one process it gives the values a 2-rank run must reproduce exactly.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from data.loaders import DataConfig  # noqa: E402
from launch.distributed import init_distributed, shutdown_distributed  # noqa: E402
from perturb.config import EvolutionConfig, SearchConfig, SearchNetworkConfig, StageConfig  # noqa: E402
from perturb.runtime import SearchRuntime, build_search_loaders  # noqa: E402
from perturb.scoring import Candidate  # noqa: E402
from perturb.snapshot import state_digest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--beton-dir", required=True)
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    stage = StageConfig(epochs=4, finetune_extra=0)
    cfg = EvolutionConfig(
        seed=3, data=DataConfig(dataset="digits", backend="ffcv", beton_dir=args.beton_dir, batch_size=32,
                                eval_batch_size=64, train_subset=640, flip=True, translate=2, cutout=3, num_workers=1),
        network=SearchNetworkConfig(channels=4, layers=1), search=SearchConfig(finetune_steps=3, val_batches=2))
    env = init_distributed(device="cpu")
    member_loaders, ddp_loaders = build_search_loaders(cfg.data, env, cfg.seed)
    assert member_loaders.backend == "ffcv"
    runtime = SearchRuntime(cfg, env, member_loaders, ddp_loaders, Path(args.run_dir))
    ops = ("sep_conv_3x3", "max_pool_3x3", "skip_connect")
    cell = tuple(ops if edge == 0 else (("avg_pool_3x3",) if edge in (1, 5) else ()) for edge in range(14))
    network = runtime.new_network(cell, "A/m0/e0")
    optimizer = runtime.train(network, stage, key="A/m0/e0", distributed=False, tag="train")
    batch = runtime.finetune_batches("C/e0", 1)[0][0]
    result = runtime.score(network, optimizer, [Candidate(0, op) for op in ops], stage, key="C/e0", shard=True,
                           tag="score")
    record = {"rank": env.rank, "reference": result.reference, "accuracies": result.accuracies,
              "trained": state_digest(network),
              "batch": hashlib.sha256(batch.numpy().tobytes()).hexdigest()}
    records = [None] * env.world_size
    if env.is_distributed:
        dist.all_gather_object(records, record)
    else:
        records = [record]
    if env.is_main:
        Path(args.out).write_text(json.dumps(records))
    shutdown_distributed(wait_for_others=True)


if __name__ == "__main__":
    main()
