"""Identical batches on the FFCV backend, with real torchrun processes (gloo).

The FFCV loader decodes only; flip, translate and cutout are the project's seeded torch ops (see
data/ffcv_loader.py), so every rank's member batches and a rerun's batches are identical:
- perturb-val of one network (trained alone on every rank, as a stage-A member) sharded over 2 ranks
  gives exactly the one-rank scores (tests/workers/ffcv_perturb.py);
- two unbroken 2-rank runs of configs/quickstart.yaml on digits .beton files (written by
  data/write_ffcv.py, budgets shrunk with --set) write the same scores.json (every member's matrix, every
  perturb-val accuracy, every decision) and the same genotype.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from space.genotype import Genotype

pytest.importorskip("ffcv", reason="ffcv is not installed (see scripts/install_ffcv.sh)")

ROOT = Path(__file__).resolve().parents[1]
SHRINK = ["data.backend=ffcv", "data.num_workers=1", "data.train_subset=480", "data.flip=true", "data.cutout=2",
          "network.channels=4", "network.layers=1", "search.stage_a.epochs=1", "search.stage_b.epochs=1",
          "pictures=false"]
TIMING_WORDS = ("seconds", "time", "eta", "elapsed")


def search(save: Path, note: str, beton_dir: Path) -> Path:
    """One ``torchrun --standalone --nproc_per_node=2 search_evolutionary.py --config configs/quickstart.yaml``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--monitor-interval=0.2", "search_evolutionary.py", "--config", "configs/quickstart.yaml",
               "--save", str(save), "--note", note, "--set", f"data.beton_dir={beton_dir}"]
    for item in SHRINK:
        command += ["--set", item]
    # a fresh rendezvous store per run (see tests/test_search_evolutionary_torchrun.py), one thread per rank
    env = dict(os.environ, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return save / note


def without_timings(value):
    """``value`` with every dict entry whose key names a duration removed (at any depth)."""
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items()
                if not any(word in key.lower() for word in TIMING_WORDS)}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


@pytest.fixture(scope="module")
def betons(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("betons")
    written = subprocess.run([sys.executable, "data/write_ffcv.py", "--dataset", "digits", "--out", str(out),
                              "--num-workers", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert written.returncode == 0, written.stderr
    return out


def perturb_val_on(nproc: int, betons: Path, folder: Path) -> list[dict]:
    out = folder / f"ranks{nproc}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "tests/workers/ffcv_perturb.py", "--out", str(out), "--beton-dir", str(betons),
               "--run-dir", str(folder / f"run{nproc}")]
    env = dict(os.environ, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_sharded_perturb_val_on_ffcv_equals_one_rank(betons, tmp_path):
    (alone,) = perturb_val_on(1, betons, tmp_path)
    ranks = perturb_val_on(2, betons, tmp_path)
    for rank in ranks:  # the same augmented batches, so the same trained network and the same scores
        assert (rank["batch"], rank["trained"]) == (alone["batch"], alone["trained"])
        assert rank["reference"] == alone["reference"] and rank["accuracies"] == alone["accuracies"]
    assert alone["accuracies"] != [alone["reference"]] * 3  # removal changes accuracy: the test can fail


def test_two_ffcv_runs_of_one_seed_give_the_same_scores_and_genotype(betons, tmp_path):
    first, second = (search(tmp_path / "runs", note, betons) for note in ("first", "second"))
    for run in (first, second):
        config = json.loads((run / "summary.json").read_text())["config"]
        assert config["data"]["backend"] == "ffcv" and config["data"]["cutout"] == 2  # augmented, on FFCV
    scores = [without_timings(json.loads((run / "scores.json").read_text())) for run in (first, second)]
    assert sorted(scores[0]["members"]) == ["0", "1"] and len(scores[0]["decisions"]) == 1 + 14 + 3
    assert scores[0] == scores[1]
    assert Genotype.from_json(first / "genotype.json") == Genotype.from_json(second / "genotype.json")
