"""torchrun worker for tests/test_perturb_sharding.py: perturb-val with its tasks sharded over the ranks.

Every rank builds the same trained network (seeded) and the same digits batches and runs ``perturb_val``
with ``shard=True`` (the reference can be split by search-val batches), measured with recalibrated BN
statistics: 3 candidates without and with a fine-tuned baseline, 2 candidates without, and 3 with
adaptive measurement that never separates (3 rounds of 2, 2 and 1 batches). It records the tasks it ran
(``on_task``), the result and whether the network was left as captured. Rank 0 writes all ranks' records
to --out as JSON. Run as one process it gives the unsharded values to compare with.
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
import torch.nn.functional as F  # noqa: E402

from data.readers import read_dataset  # noqa: E402
from launch.distributed import init_distributed, shutdown_distributed  # noqa: E402
from launch.train import train_epoch  # noqa: E402
from perturb.measure import SearchValMeasure  # noqa: E402
from perturb.scoring import Candidate, Rounds, perturb_val  # noqa: E402
from perturb.snapshot import Snapshot  # noqa: E402
from space.search_network import SearchNetwork  # noqa: E402


def digits_batches(count: int, size: int, offset: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = read_dataset("digits", None, "train")
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 16.0  # digits pixels are 0..16
    labels = torch.from_numpy(data.labels)
    return [(images[offset + i * size: offset + (i + 1) * size], labels[offset + i * size: offset + (i + 1) * size])
            for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = init_distributed()
    train_batches = digits_batches(6, 32, 0)
    val_batches = digits_batches(5, 40, 600)  # a reference split over 2 ranks: 3 and 2 batches
    torch.manual_seed(0)
    cell = [("skip_connect", "sep_conv_3x3")] * 14
    cell[0] = ("sep_conv_3x3", "max_pool_3x3", "avg_pool_3x3")
    network = SearchNetwork(1, 10, cell, channels=4, layers=1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    train_epoch(network, train_batches[:4], optimizer, env=env, sync=False)
    finetune_batches = train_batches[4:]

    def finetune(module, steps):
        train_epoch(module, finetune_batches, optimizer, env=env, max_steps=steps, sync=False)

    measure = SearchValMeasure(val_batches, measurement="recalibrate", calibration=train_batches[:2], env=env)

    three = [Candidate(0, "sep_conv_3x3"), Candidate(0, "max_pool_3x3"), Candidate(0, "avg_pool_3x3")]
    record = {"rank": env.rank, "runs": {}}
    never = Rounds(batches=2, max_rounds=3, z=1e9)  # never separated: every round runs
    for name, candidates, baseline, rounds in (("3", three, False, None), ("3-baseline", three, True, None),
                                               ("2", three[1:], False, None), ("3-adaptive", three, False, never)):
        snapshot = Snapshot.capture(network, optimizer)
        ran = []
        result = perturb_val(network, candidates, snapshot=snapshot, finetune=finetune, measure=measure,
                             steps=2, env=env, shard=True, baseline=baseline, rounds=rounds,
                             record_digests=True, on_task=lambda index, label: ran.append(index))
        record["runs"][name] = {
            "ran": ran, "reference": result.reference, "accuracies": result.accuracies,
            "standard_errors": result.standard_errors, "loss_changes": result.loss_changes,
            "samples": result.samples, "rounds": result.rounds,
            "start_digests": result.start_digests, "snapshot": snapshot.digest(),
            "restored": snapshot.matches(network),
            # a loss that depends on every weight: the network must be exactly as before perturb-val
            "loss": F.cross_entropy(network.eval()(val_batches[0][0]), val_batches[0][1]).item(),
        }
    gathered = [record]
    if env.is_distributed:
        gathered = [None] * env.world_size
        dist.all_gather_object(gathered, record)
    if env.rank == 0:
        Path(args.out).write_text(json.dumps(gathered))
    shutdown_distributed(wait_for_others=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
