"""The seed summary (evaluation/report.py): mean and sample std of the final test accuracy."""
import json
import statistics

from common.atomic import write_json_atomically
from evaluation.report import summarize_seeds


def _report(seed, final, best=None):
    return {"genotype": "G", "dataset": "cifar10", "epochs": 600, "params_m": 3.3, "multiply_adds_m": 528.0,
            "test": {"final_top1": final, "best_on_validation_top1": best}, "wall_time_s": 10.0,
            "device_hours": 0.5, "run_dir": f"runs/seed_{seed}"}


def test_summary_is_mean_and_sample_std_of_the_final_accuracy(tmp_path):
    finals = [97.0, 97.3, 96.8]
    summary = summarize_seeds({seed: _report(seed, value) for seed, value in enumerate(finals)})
    assert summary["seeds"] == [0, 1, 2]
    assert abs(summary["final_test_top1"]["mean"] - statistics.fmean(finals)) < 1e-9
    assert abs(summary["final_test_top1"]["std"] - statistics.stdev(finals)) < 1e-9
    assert abs(summary["final_test_error"]["mean"] - (100 - statistics.fmean(finals))) < 1e-9
    assert summary["best_on_validation_test_top1"] is None
    assert summary["device_hours"] == 1.5
    assert "+-" in summary["headline"]
    path = write_json_atomically(tmp_path / "summary.json", summary)
    assert json.loads(path.read_text())["final_test_top1"]["n"] == 3


def test_one_seed_has_zero_std():
    summary = summarize_seeds({5: _report(5, 90.0, best=91.0)})
    assert summary["final_test_top1"]["std"] == 0.0
    assert summary["best_on_validation_test_top1"]["mean"] == 91.0
