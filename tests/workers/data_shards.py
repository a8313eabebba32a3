"""torchrun worker for tests/test_data_ffcv.py: which samples does each rank's loader visit?

Each rank builds the job's loaders (in-memory digits; FFCV too when --beton-dir is given), records the
sample indices its search_train loader visits in epochs 0 and 1, checks the yielded labels are those
samples' labels and that FFCV yields the same augmented batches as the in-memory loader (flip, translate,
cutout: seeded per rank); rank 0 writes all ranks' records to --out as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from data.loaders import DataConfig, build_loaders  # noqa: E402
from data.readers import read_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--beton-dir", default=None)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    cfg = DataConfig(dataset="digits", backend="memory", batch_size=32, augment=False)
    memory = build_loaders(cfg, rank=rank, world_size=world, seed=11, device=device)
    labels = read_dataset("digits", None, "train").labels
    record = {"rank": rank, "epochs": {}, "labels_match": True, "ffcv_match": None}
    for epoch in (0, 1):
        loader = memory.search_train
        loader.set_epoch(epoch)
        seen = torch.cat([batch_labels for _, batch_labels in loader]).numpy()
        indices = loader.epoch_indices(epoch)
        record["epochs"][epoch] = indices.tolist()
        record["labels_match"] &= bool((labels[indices] == seen).all())
    record["split"] = memory.search_train_indices.tolist()
    if args.beton_dir:
        augmented = dict(dataset="digits", batch_size=32, flip=True, translate=2, cutout=3)
        ffcv = build_loaders(DataConfig(beton_dir=args.beton_dir, backend="ffcv", num_workers=1, **augmented),
                             rank=rank, world_size=world, seed=11, device=device)
        memory = build_loaders(DataConfig(backend="memory", **augmented), rank=rank, world_size=world, seed=11,
                               device=device)
        memory.search_train.set_epoch(1)
        ffcv.search_train.set_epoch(1)
        pairs = list(zip(memory.search_train, ffcv.search_train))
        record["ffcv_match"] = len(pairs) == len(memory.search_train) > 0 and all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    gathered = [None] * world
    dist.all_gather_object(gathered, record)
    if rank == 0:
        Path(args.out).write_text(json.dumps(gathered))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
