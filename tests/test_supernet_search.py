"""search_supernet.py end to end on tiny data: plain python, resume, 2-process torchrun, bad input."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "search_supernet.py"
TINY = [
    "epochs=3", "eval_batches=1", "threads=1",
    "data.dataset=digits", "data.backend=memory", "data.batch_size=16", "data.eval_batch_size=32",
    "data.train_subset=96", "data.translate=1",
    "network.channels=2", "network.layers=3",
    "weights.learning_rate=0.05", "arch.learning_rate=0.01",
    "projection.val_batches=1", "projection.tune_epoch_steps=1",
]


def run_cli(tmp_path: Path, note: str, *extra: str, torchrun: int = 0, timeout: int = 300):
    args = [str(CLI), "--save", str(tmp_path), "--note", note]
    for item in TINY + list(extra):
        args += ["--set", item]
    if torchrun:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}",
                   f"--master_port={port}", "--master_addr=127.0.0.1"] + args
    else:
        command = [sys.executable] + args
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def alpha_digests(log_file: Path) -> list[str]:
    return re.findall(r"alphas digest ([0-9a-f]+)", log_file.read_text())


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("supernet")
    result = run_cli(tmp_path, "unbroken")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "unbroken"


def test_tiny_darts_search_completes_with_all_outputs(unbroken_run):
    genotype = json.loads((unbroken_run / "genotype.json").read_text())
    assert len(genotype["normal"]) == 8 and len(genotype["reduce"]) == 8
    assert all(op != "none" for op, _ in genotype["normal"] + genotype["reduce"])
    alphas = json.loads((unbroken_run / "alphas.json").read_text())
    assert set(alphas["cells"]) == {"normal", "reduce"}
    assert len(alphas["cells"]["normal"]["softmax"]) == 14
    for epoch in (1, 2, 3):
        assert (unbroken_run / "heatmaps" / f"epoch_{epoch:03d}.png").is_file()
        assert (unbroken_run / "cells" / f"epoch_{epoch:03d}.png").is_file()
    from PIL import Image

    with Image.open(unbroken_run / "cells" / "progress.gif") as gif:
        assert gif.n_frames == 3
    metrics = [json.loads(line) for line in (unbroken_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all("search/val_top1" in m and "alpha/entropy_normal" in m for m in metrics)
    assert list((unbroken_run / "tensorboard").iterdir())
    assert len(set(alpha_digests(unbroken_run / "log.txt"))) == 3  # the alphas move every epoch


def test_resume_after_interruption_gives_the_same_result(unbroken_run, tmp_path):
    first = run_cli(tmp_path, "broken", "stop_after_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (tmp_path / "broken" / "genotype.json").exists()
    second = run_cli(tmp_path, "broken")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from checkpoint 1" in (tmp_path / "broken" / "log.txt").read_text()
    resumed, unbroken = (json.loads((d / "genotype.json").read_text()) for d in (tmp_path / "broken", unbroken_run))
    assert {**resumed, "name": None} == {**unbroken, "name": None}
    assert alpha_digests(tmp_path / "broken" / "log.txt") == alpha_digests(unbroken_run / "log.txt")


def test_checkpoint_cells_switched_on_at_a_resume_changes_nothing(unbroken_run, tmp_path):
    """Activation checkpointing is bit-identical end to end, and a run resumes with it switched on (it is not
    part of the fingerprint): what a user does after running out of memory."""
    first = run_cli(tmp_path, "switched", "stop_after_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(tmp_path, "switched", "network.checkpoint_cells=true")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from checkpoint 1" in (tmp_path / "switched" / "log.txt").read_text()
    assert alpha_digests(tmp_path / "switched" / "log.txt") == alpha_digests(unbroken_run / "log.txt")
    switched, unbroken = (json.loads((d / "genotype.json").read_text()) for d in (tmp_path / "switched", unbroken_run))
    assert {**switched, "name": None} == {**unbroken, "name": None}


def test_two_process_torchrun_keeps_alphas_identical_and_projects(tmp_path):
    result = run_cli(tmp_path, "ddp", "method=darts_pt", "epochs=2", "network.shared_cell=true",
                     "data.train_subset=128", "data.batch_size=32", torchrun=2, timeout=600)  # 16 a rank
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "ddp"
    rank0, rank1 = run_dir / "log.txt", run_dir / "log.rank1.txt"
    assert len(alpha_digests(rank0)) == 2
    assert alpha_digests(rank0) == alpha_digests(rank1)
    decisions = lambda path: re.findall(r"projection \d+/\d+: .*", path.read_text())
    assert len(decisions(rank0)) == 14 + 3 and decisions(rank0) == decisions(rank1)
    genotype = json.loads((run_dir / "genotype.json").read_text())
    assert "reduce" not in genotype  # one shared cell
    projection = json.loads((run_dir / "projection.json").read_text())
    kept_ops = {(r["edge"]): r["kept"] for r in projection["records"] if r["kind"] == "op"}
    for op, source in genotype["normal"]:
        assert op in kept_ops.values()
    summary = json.loads((run_dir / "summary.json").read_text())
    # data.batch_size is the global batch: 64 search-train images (half of 128) in batches of 32 summed over
    # the 2 ranks (16 a rank) are 2 steps an epoch (1 if each rank loaded 32, 4 if the batch were split twice)
    assert summary["global_batch_size"] == 32 and summary["steps_per_epoch"] == 2


@pytest.mark.parametrize("override,needle", [
    ("network.channels=3", "network.channels"),
    ("method=dartz", "method"),
    ("network.ops=[none]", "network.ops"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, override, needle):
    result = run_cli(tmp_path, "bad", override, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr


PERTNAS_TINY = [
    "method=pertnas", "pertnas.op_cap=3", "pertnas.network.channels=2", "pertnas.network.layers=3",
    "pertnas.supernet.epochs=1", "pertnas.supernet.finetune_extra=0", "pertnas.search.finetune_steps=1",
    "pertnas.search.val_batches=1", "pertnas.search.stage_b.epochs=1", "pertnas.search.stage_c.epochs=1",
    "pertnas.search.stage_d.epochs=1",
]


def test_pertnas_supernet_variant_scores_capped_ops_then_runs_stages_b_to_d(tmp_path):
    result = run_cli(tmp_path, "pertnas", *PERTNAS_TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "pertnas"
    genotype = json.loads((run_dir / "genotype.json").read_text())
    assert "reduce" not in genotype  # one shared cell, as PertNAS
    assert len(genotype["normal"]) == 8
    for node in range(4):  # stage D: two distinct inputs per node, no 'none'
        (op_a, in_a), (op_b, in_b) = genotype["normal"][2 * node], genotype["normal"][2 * node + 1]
        assert in_a != in_b and "none" not in (op_a, op_b)
    scores = json.loads((run_dir / "scores.json").read_text())
    text = json.dumps(scores)
    # op_cap=3: each edge's supernet holds 3 ops, so 4 of the 7 entries of every row are absent (null)
    matrix = next(value for key, value in scores.items() if isinstance(value, list) and len(value) == 14)
    assert all(sum(entry is not None for entry in row) == 3 for row in matrix), text[:500]
