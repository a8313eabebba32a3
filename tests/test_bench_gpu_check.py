"""bench/gpu_check.sh's Python part (bench/gpu_stage_a.py) in --cpu-smoke mode, and its projection formula.

The script itself needs a CUDA GPU for its real figures; here its data preparation, its measurements (every
speed switch, torch.compile with aot_eager), the loader feed, the projection and the table run at tiny shapes.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch.config import load_config
from perturb.config import EvolutionConfig

pytest.importorskip("ffcv", reason="ffcv is not installed (see scripts/install_ffcv.sh)")

from bench import gpu_stage_a  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "bench" / "gpu_stage_a.py")


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_smoke_mode_measures_every_part_and_prints_one_table(tmp_path):
    prepared = run("prepare", "--work", str(tmp_path), "--cpu-smoke").stdout.split()
    assert prepared == [str(tmp_path / "synthetic_betons"), "synthetic"]
    out = tmp_path / "figures.json"
    table = run("measure", "--betons", prepared[0], "--cpu-smoke", "--json", str(out)).stdout
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert [row[2:5] for row in rows] == ["(a)"] + ["(b)"] * 4 + ["(c)"] + ["(d)"] * 2
    assert "not run" in rows[0] and all("full unit" in row for row in rows[1:5])  # compile measured too
    assert "recompile per mask change" in rows[4] and "images/s" in rows[5] and "GPU-hours" in rows[6]
    figures = json.loads(out.read_text())
    for name, times in figures["stage_a"].items():
        assert all(math.isfinite(value) and value > 0 for value in times.values()), name
    assert figures["loader"]["images_per_s"] > 0 and figures["loader"]["epoch_images"] > 0
    one, four = figures["projection"]
    assert one["gpu_hours"] == pytest.approx(one["wall_h"]) and four["gpu_hours"] == pytest.approx(4 * four["wall_h"])
    assert four["stage_s"]["A"] == pytest.approx(one["stage_s"]["A"] / 4)  # npop 4: one member per GPU
    assert four["wall_h"] < one["wall_h"]


def test_unit_formula_and_search_flags():
    protocol = load_config(EvolutionConfig, ROOT / "configs" / "pertnas_cifar10.yaml")
    numbers = gpu_stage_a.Protocol.of(protocol)  # 45k search-train images, all 5k search-val ones per accuracy
    assert (numbers.npop, numbers.S, numbers.M, numbers.n) == (4, 45000 // 256, math.ceil(5000 / 256), 7)
    assert numbers.K == {"A": 71, "B": 50, "C": 131, "D": 181} and set(numbers.E.values()) == {5}
    times = {"train_s": 0.02, "eval_s": 0.01, "restore_s": 0.001, "mask_change_s": 3.0}
    # U = E*S*t + n*(K*t + M*e + r + c) + (M*e + r)
    expected = 5 * 175 * 0.02 + 7 * (71 * 0.02 + 20 * 0.01 + 0.001 + 3.0) + (20 * 0.01 + 0.001)
    assert gpu_stage_a.unit_seconds(times, numbers) == pytest.approx(expected)
    for smoke in (False, True):  # part (a)'s flags are valid keys of the preset and give 14 stage-A units
        config = load_config(EvolutionConfig, ROOT / "configs" / "pertnas_cifar10.yaml", gpu_stage_a.search_sets(smoke))
        assert config.search.npop == 1 and config.search.finetune_budget(config.search.stage_a) == 4
        assert (config.network.channels, config.network.layers) == ((4, 2) if smoke else (16, 5))
        assert config.data.batch_size == (16 if smoke else 256)
    syntax = subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
