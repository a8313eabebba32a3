"""perturb_val sharded over REAL torchrun ranks (gloo): who runs which task, and exactly the one-rank scores.

tests/workers/perturb_sharding.py scores candidates on a trained network: 3 candidates (rank 0 runs two,
so rank 1 measures the whole reference), 3 with a fine-tuned baseline (the reference is then an ordinary
task), 2 candidates (one each; both ranks measure a part of the reference). The same worker run as one
process gives the values every sharded run must reproduce bit for bit.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perturb.scoring import TaskPlan

ROOT = Path(__file__).resolve().parents[1]


def run_worker(nproc: int, out: Path) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "tests/workers/perturb_sharding.py", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharding")
    return run_worker(1, folder / "one.json"), run_worker(2, folder / "two.json")


def test_task_plan():
    # 3 candidates on 2 ranks: rank 0 runs c1, c3; rank 1 runs c2, then the whole reference
    plan = TaskPlan.make(3, 2, split_reference=True)
    assert plan.reference_ranks == (1,) and plan.order(0) == [1, 3] and plan.order(1) == [2, 0]
    # W divides n: every rank measures a part of the reference, after its candidates
    plan = TaskPlan.make(4, 2, split_reference=True)
    assert plan.reference_ranks == (0, 1) and plan.order(0) == [1, 3, 0] and plan.order(1) == [2, 4, 0]
    # fewer candidates than ranks: the idle ranks measure the reference
    plan = TaskPlan.make(2, 4, split_reference=True)
    assert plan.reference_ranks == (2, 3) and [plan.order(r) for r in range(4)] == [[1], [2], [0], [0]]
    # no split: tasks 0..n round robin, the reference first
    plan = TaskPlan.make(3, 2, split_reference=False)
    assert plan.reference_ranks == () and plan.order(0) == [0, 2] and plan.order(1) == [1, 3]


def test_each_rank_runs_its_planned_tasks(runs):
    (alone,), (rank0, rank1) = runs
    assert all(run["ran"] == list(range(len(run["accuracies"]) + 1)) for run in alone["runs"].values())
    assert rank0["runs"]["3"]["ran"] == [1, 3] and rank1["runs"]["3"]["ran"] == [2, 0]
    assert rank0["runs"]["3-baseline"]["ran"] == [0, 2] and rank1["runs"]["3-baseline"]["ran"] == [1, 3]
    assert rank0["runs"]["2"]["ran"] == [1, 0] and rank1["runs"]["2"]["ran"] == [2, 0]
    assert rank0["runs"]["3-adaptive"]["ran"] == [1, 3] and rank1["runs"]["3-adaptive"]["ran"] == [2, 0]


@pytest.mark.parametrize("name", ["3", "3-baseline", "2", "3-adaptive"])
def test_sharded_scores_equal_the_one_rank_scores_bit_for_bit(runs, name):
    (alone,), ranks = runs
    expected = alone["runs"][name]
    for rank in ranks:
        got = rank["runs"][name]
        assert got["reference"] == expected["reference"]
        assert got["accuracies"] == expected["accuracies"]
        assert got["standard_errors"] == expected["standard_errors"] and got["loss_changes"] == expected["loss_changes"]
        assert (got["samples"], got["rounds"]) == (expected["samples"], expected["rounds"])
        tasks = len(expected["accuracies"]) + 1
        assert got["start_digests"] == [expected["snapshot"]] * tasks  # every task started from the snapshot
        assert got["restored"] and got["loss"] == expected["loss"]
    assert expected["accuracies"] != [expected["reference"]] * len(expected["accuracies"])  # removal matters
    assert expected["samples"] == 200 and expected["rounds"] == (3 if name == "3-adaptive" else 1)
