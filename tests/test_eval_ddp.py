"""2-process DDP (real torchrun, gloo) follows the same loss curve as one process with the same global batch.

Rank r of 2 takes every other sample of the epoch's shuffled order, so the two ranks' batches of 32 together
are exactly the single process's batch of 64, and DDP averages the two half-batch gradients into the
full-batch gradient. What differs is batch norm: each rank normalises with the statistics of its own 32
samples (SyncBatchNorm, the `sync_batchnorm` option, needs CUDA), so the curves agree to a tolerance rather
than exactly. Augmentation, drop path and the auxiliary head's randomness are off; there is no dropout. The
tolerance is checked to be meaningful: a run with another seed (other initial weights and data order)
differs by more.
"""
import json
import os
import subprocess
import sys

from tests.workers.eval_synthetic import REPO_ROOT, TINY, free_port, write_cifar_like_folder

QUICK = REPO_ROOT / "configs" / "eval_quick.yaml"
CURVE_TOLERANCE = 0.08  # relative, per epoch (measured: 0.02%, 2.6%, 4.6% over 3 epochs)


def _run(folder, run_dir, processes, batch_size, seed=0):
    sets = [*TINY, "data.dataset=imagefolder", "data.image_size=32", "data.augment=false",
            "holdout_validation=false", "network.drop_path_prob=0.0", "network.auxiliary_weight=0.4",
            "epochs=3", f"data.batch_size={batch_size}", f"seed={seed}"]
    args = [str(REPO_ROOT / "train_eval.py"), "DARTS_V2", "--config", str(QUICK), "--run-dir", str(run_dir),
            "--data-dir", str(folder)] + [arg for item in sets for arg in ("--set", item)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   f"--master_port={free_port()}", *args]
    else:
        command = [sys.executable, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    report = json.loads((run_dir / "report.json").read_text())
    return [line["train/loss"] for line in lines if "train/loss" in line], report


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    folder = write_cifar_like_folder(tmp_path / "data", train_per_class=13, noise=120)
    single, single_report = _run(folder, tmp_path / "single", processes=1, batch_size=64)
    ddp, ddp_report = _run(folder, tmp_path / "ddp", processes=2, batch_size=64)  # the global batch: 32 a rank
    other_seed, _ = _run(folder, tmp_path / "other", processes=1, batch_size=64, seed=1)

    assert ddp_report["world_size"] == 2 and ddp_report["global_batch_size"] == 64
    assert single_report["steps_per_epoch"] == ddp_report["steps_per_epoch"] == 2  # 130 images / 64
    assert ddp_report["test"]["count"] == single_report["test"]["count"] == 30  # every test image once
    assert len(single) == len(ddp) == 3
    assert single[-1] < single[0]  # the curve actually moves
    gaps = [abs(a - b) / a for a, b in zip(single, ddp)]
    assert max(gaps) < CURVE_TOLERANCE, (single, ddp)
    other_gaps = [abs(a - b) / a for a, b in zip(single, other_seed)]
    assert sum(other_gaps) > sum(gaps), (single, ddp, other_seed)  # the tolerance tells runs apart
