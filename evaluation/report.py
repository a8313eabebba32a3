"""The report of a retraining run (report.json) and the summary over seeds (summary.json).

What the numbers mean (REFERENCE section 5: report the FINAL epoch, mean and std over seeds, on a split
never used for selection):

- ``test.final_top1``: test accuracy of the model after the last epoch: the number to compare with papers.
- ``validation.best_top1`` / ``best_epoch``: the best epoch picked on the held-out validation split (a part of
  the TRAINING set); ``test.best_on_validation_top1`` is that checkpoint's test accuracy. Without a held-out
  split these are null: the test split is never used to pick anything.
- ``params_m``: parameters in millions, auxiliary head excluded; ``multiply_adds_m``: multiply-accumulates
  of one forward pass in millions (evaluation.complexity).
- ``wall_time_s``: training + evaluation time summed over resumed sessions; ``device_hours`` =
  wall_time_s * number of processes (GPUs, or CPU processes) / 3600.
"""
from __future__ import annotations

import math
import statistics

REPORT_FILE = "report.json"
SUMMARY_FILE = "summary.json"


def _mean_std(values: list[float]) -> dict:
    """``{"mean", "std", "n", "values"}``; std is the sample standard deviation (n - 1), 0 for one value."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if not finite:
        return {"mean": None, "std": None, "n": 0, "values": values}
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": statistics.fmean(finite), "std": std, "n": len(finite), "values": values}


def summarize_seeds(reports: dict[int, dict]) -> dict:
    """Mean and sample std over seeds of the final test accuracy and error (and of the best-on-val ones).

    ``reports`` maps seed -> report.json content. Percentages as in the reports.
    """
    seeds = sorted(reports)
    final = [reports[seed]["test"]["final_top1"] for seed in seeds]
    best = [reports[seed]["test"].get("best_on_validation_top1") for seed in seeds]
    first = reports[seeds[0]]
    summary = {
        "genotype": first["genotype"],
        "dataset": first["dataset"],
        "seeds": seeds,
        "epochs": first["epochs"],
        "params_m": first["params_m"],
        "multiply_adds_m": first["multiply_adds_m"],
        "final_test_top1": _mean_std(final),
        "final_test_error": _mean_std([100.0 - value for value in final]),
        "best_on_validation_test_top1": _mean_std(best) if any(v is not None for v in best) else None,
        "wall_time_s": sum(reports[seed]["wall_time_s"] for seed in seeds),
        "device_hours": sum(reports[seed]["device_hours"] for seed in seeds),
        "runs": {str(seed): reports[seed]["run_dir"] for seed in seeds},
    }
    top1 = summary["final_test_top1"]
    error = summary["final_test_error"]
    summary["headline"] = (f"{first['genotype']} on {first['dataset']}: final test error "
                           f"{error['mean']:.2f} +- {error['std']:.2f}% (top-1 {top1['mean']:.2f}%) over "
                           f"{top1['n']} seeds, {first['params_m']:.2f}M params, {first['epochs']} epochs")
    return summary
