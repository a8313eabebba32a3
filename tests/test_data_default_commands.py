"""The design card's commands as users type them, each in a fresh directory:

    python data/write_ffcv.py                                    # CIFAR-10: ./data -> ./betons
    torchrun --nproc_per_node=4 search_evolutionary.py --npop 4 --distributed    # no --config: reads ./betons

Without the sources or the .beton files each says in one line what it needs (exit status 2) and writes
nothing; with a tiny planted CIFAR-10 (the extracted batches' layout; its MD5s stand in for the published
ones, which the readers check) the first writes ./betons and the second, shrunk with --set, searches on it.
"""
import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.synthetic_cifar import synthetic_cifar10
from data import readers, write_ffcv
from data.loaders import DataConfig, build_loaders
from launch.config import load_config
from perturb.config import EvolutionConfig
from search_evolutionary import build_parser, config_from_args
from space.genotype import Genotype

pytest.importorskip("ffcv", reason="ffcv is not installed (see scripts/install_ffcv.sh)")

ROOT = Path(__file__).resolve().parents[1]
WRITE = str(ROOT / "data" / "write_ffcv.py")
SEARCH = str(ROOT / "search_evolutionary.py")
# the search's budgets shrunk to seconds (the data flags stay the defaults': cifar10, ffcv, ./betons)
SHRINK = ["network.channels=4", "network.layers=1", "data.eval_batch_size=16", "data.num_workers=1",
          "search.finetune_steps=1", "search.val_batches=1", "threads=1", "pictures=false",
          *(f"search.stage_{s}.epochs=1" for s in "abcd"), *(f"search.stage_{s}.finetune_extra=0" for s in "abcd")]


def run(cwd: Path, *command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *command], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_write_ffcv_without_arguments_or_sources_says_what_it_needs(tmp_path):
    line = one_error_line(run(tmp_path, WRITE))
    assert "cifar-10-python.tar.gz" in line and str(tmp_path / "data") in line and "--download" in line
    assert list(tmp_path.iterdir()) == []  # not even an empty ./betons


def test_search_without_config_or_betons_says_what_to_run(tmp_path):
    line = one_error_line(run(tmp_path, SEARCH, "--npop", "4", "--distributed"))
    assert "betons/cifar10_metadata.json not found" in line and "python data/write_ffcv.py" in line
    assert list(tmp_path.iterdir()) == []  # no run directory was started


def test_default_config_reads_cifar10_from_betons_and_flags_change_only_their_key():
    """No --config: CIFAR-10 from ./betons on FFCV. A reference flag or --set on one key of a section keeps
    the section's other defaults (they used to fall back to a bare DataConfig(): digits, backend auto)."""
    default = load_config(EvolutionConfig, None).data
    assert (default.dataset, default.backend, default.beton_dir, default.batch_size) == ("cifar10", "ffcv", "betons",
                                                                                         256)
    flags = config_from_args(build_parser().parse_args(["--npop", "4", "--distributed", "--batch_size", "128",
                                                        "--set", "search.stage_b.epochs=2"]))
    assert (flags.data.dataset, flags.data.backend, flags.data.beton_dir) == ("cifar10", "ffcv", "betons")
    assert flags.data.batch_size == 128 and flags.search.npop == 4
    stage_b = flags.search.stage_b  # the reference's stage B divides the learning rate by 3, not StageConfig's 2.5
    assert (stage_b.epochs, stage_b.lr_divisor) == (2, 3.0)
    assert load_config(EvolutionConfig, None, ["search.stage_a.epochs=1"]).search.finetune_budget(
        flags.search.stage_a) == 70  # K = 50 + 20 kept


def plant_cifar10(folder: Path, monkeypatch) -> dict:
    """A tiny CIFAR-10 in ``folder/data/cifar-10-batches-py/`` (40 + 10 synthetic images, the real layout),
    and its files' MD5s standing in for the published ones (the readers refuse anything else)."""
    extracted = folder / "data" / "cifar-10-batches-py"
    extracted.mkdir(parents=True)
    splits = synthetic_cifar10(train_count=40, test_count=10)

    def batch(dataset, rows):
        return {b"labels": [int(label) for label in dataset.labels[rows]],
                b"data": dataset.images[rows].transpose(0, 3, 1, 2).reshape(len(dataset.labels[rows]), -1)}

    members = {f"data_batch_{i + 1}": batch(splits["train"], slice(8 * i, 8 * i + 8)) for i in range(5)}
    members["test_batch"] = batch(splits["test"], slice(None))
    members["batches.meta"] = {b"label_names": [name.encode() for name in splits["train"].classes]}
    for name, record in members.items():
        (extracted / name).write_bytes(pickle.dumps(record, protocol=2))
    sums = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in extracted.iterdir()}
    monkeypatch.setitem(readers.CIFAR_SOURCES, "cifar10",
                        dataclasses.replace(readers.CIFAR_SOURCES["cifar10"], member_md5=sums))
    return splits


def test_write_ffcv_then_search_without_config_in_a_planted_directory(tmp_path, monkeypatch):
    splits = plant_cifar10(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    write_ffcv.main([])  # as typed: no arguments
    meta = json.loads((tmp_path / "betons" / "cifar10_metadata.json").read_text())
    assert meta["info"]["train_count"] == 40 and meta["info"]["test_count"] == 10
    assert meta["image_shape"] == [32, 32, 3] and sorted(meta["files"]) == ["test", "train"]
    assert set(meta["sources"]) == {f"cifar-10-batches-py/{name}" for name in
                                    [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]}
    loaded = build_loaders(DataConfig(dataset="cifar10", beton_dir="betons", backend="ffcv", batch_size=8,
                                      num_workers=1), device=torch.device("cpu"))
    assert loaded.info.train_count == len(splits["train"].labels)

    sets = [arg for item in SHRINK for arg in ("--set", item)]
    searched = run(tmp_path, SEARCH, "--npop", "1", "--distributed", "--batch_size", "8", *sets)
    assert searched.returncode == 0, searched.stderr[-3000:]
    run_dir = tmp_path / "runs" / "search_evolutionary" / "search"
    Genotype.from_json(run_dir / "genotype.json")
    data = json.loads((run_dir / "summary.json").read_text())["config"]["data"]
    assert (data["dataset"], data["backend"], data["beton_dir"], data["batch_size"]) == ("cifar10", "ffcv", "betons", 8)
