"""bench/perturb_noise.py --layouts at a tiny budget on digits: every unit is scored in both memory formats
from the same seeds and once more with other seeds, and the two comparisons are reported."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layouts_compares_channels_last_with_contiguous_beside_the_noise(tmp_path):
    out = tmp_path / "layouts.json"
    command = [sys.executable, "bench/perturb_noise.py", "--layouts", "--dataset", "digits", "--units", "1",
               "--epochs", "1", "--finetune-steps", "1", "--val-batches", "1", "--threads", "1",
               "--measurements", "recalibrate", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "channels_last vs contiguous (same seeds)" in result.stdout
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert set(row["scores"]) == {"channels_last#1", "channels_last#2", "contiguous#1"}
    assert all(len(scores) == 7 for scores in row["scores"].values())  # the 7 ops of the expanded edge
    for what in ("layout", "noise"):
        summary = report["summary"][what]
        assert -1.0 <= summary["spearman"] <= 1.0 and summary["abs_diff"] >= 0.0
        assert summary["same_top"] in (0.0, 1.0)
