"""train_eval.py end to end on the CPU: tiny runs write the report, seeds are summarised, a rerun resumes
exactly, and bad input exits 2 with one line."""
import json
import subprocess
import sys

import pytest
import torch

import train_eval
from launch.checkpoint import CheckpointManager
from launch.distributed import DistEnv
from tests.workers.eval_synthetic import MNIST_DIR, REPO_ROOT, TINY, write_cifar_like_folder

QUICK = REPO_ROOT / "configs" / "eval_quick.yaml"


def _sets(*items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    return write_cifar_like_folder(tmp_path_factory.mktemp("cifar_like"))


def _cifar_args(folder, run_dir, *extra):
    return ["DARTS_V2", "--config", str(QUICK), "--run-dir", str(run_dir), "--data-dir", str(folder),
            *_sets(*TINY, "data.dataset=imagefolder", "data.image_size=32", "data.search_portion=0.75",
                   "data.cutout=8", "data.flip=true", "network.auxiliary_weight=0.4",
                   "network.drop_path_prob=0.2", *extra)]


def test_tiny_run_on_cifar_shaped_data_writes_the_report(cifar_like, tmp_path):
    run_dir = tmp_path / "run"
    assert train_eval.main(_cifar_args(cifar_like, run_dir, "epochs=2", "autoaugment=true")) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["genotype"] == "DARTS_V2" and report["dataset"] == "imagefolder"
    assert report["epochs"] == 2 and report["params_m"] > 0 and report["multiply_adds_m"] > 0
    assert report["validation"]["held_out"] and report["validation"]["count"] == 20  # 25% of 80 images
    assert report["validation"]["best_epoch"] in (1, 2)
    assert report["test"]["count"] == 30  # the whole test split, once
    assert 0 <= report["test"]["final_top1"] <= 100
    assert report["test"]["best_on_validation_top1"] is not None
    assert report["device_hours"] == pytest.approx(report["wall_time_s"] / 3600)
    assert report["config"]["autoaugment"] is True
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "train/loss" in line] == [1, 2]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt_000000001.pt", "ckpt_000000002.pt"]


def test_interrupted_then_resumed_run_ends_with_the_same_weights(cifar_like, tmp_path):
    extra = ("epochs=3", "autoaugment=true")  # augmentation and drop path on: the RNG state must resume too
    assert train_eval.main(_cifar_args(cifar_like, tmp_path / "whole", *extra)) == 0
    args = _cifar_args(cifar_like, tmp_path / "pieces", *extra)
    assert train_eval.main(args + ["--stop-after-epochs", "1"]) == 0
    assert not (tmp_path / "pieces" / "report.json").exists()
    assert train_eval.main(args + ["--stop-after-epochs", "1"]) == 0
    assert train_eval.main(args) == 0
    env = DistEnv(0, 1, 0, torch.device("cpu"), None)
    whole = CheckpointManager(tmp_path / "whole", env).load_latest(restore_rng=False)
    pieces = CheckpointManager(tmp_path / "pieces", env).load_latest(restore_rng=False)
    assert whole["progress"]["epoch"] == pieces["progress"]["epoch"] == 3
    assert whole["model"].keys() == pieces["model"].keys()
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, pieces["model"][name]), name
    assert [h["train_loss"] for h in whole["progress"]["history"]] == [h["train_loss"] for h in pieces["progress"]["history"]]
    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("whole", "pieces")]
    assert reports[0]["test"] == reports[1]["test"]


def test_seeds_get_their_own_runs_and_a_summary(cifar_like, tmp_path):
    args = _cifar_args(cifar_like, tmp_path, "epochs=1", "max_steps_per_epoch=2", "holdout_validation=false")
    assert train_eval.main(args + ["--seeds", "0", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    finals = [json.loads((tmp_path / f"seed_{s}" / "report.json").read_text())["test"]["final_top1"] for s in (0, 1)]
    assert summary["seeds"] == [0, 1] and summary["final_test_top1"]["values"] == finals
    assert summary["final_test_top1"]["mean"] == pytest.approx(sum(finals) / 2)
    assert summary["best_on_validation_test_top1"] is None  # no held-out split: nothing was selected


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST not found at {MNIST_DIR} (only on the project's workplace, not in a fresh clone)")
def test_tiny_run_on_mnist_writes_the_report(tmp_path):
    args = ["DARTS_V2", "--config", str(QUICK), "--run-dir", str(tmp_path), "--data-dir", str(MNIST_DIR),
            *_sets(*TINY, "epochs=1", "data.train_subset=600", "data.eval_batch_size=1000")]
    assert train_eval.main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dataset"] == "mnist" and report["test"]["count"] == 10000
    assert report["validation"]["count"] == 60
    assert report["test"]["final_top1"] > 10.0  # better than chance after 33 steps


def test_a_bad_genotype_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": [["sep_conv_3x3", 0], ["conv_9x9", 1]]}')
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train_eval.py"), str(bad), "--config", str(QUICK),
                             "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.json" in lines[0]
    assert not (tmp_path / "run").exists()  # nothing started
