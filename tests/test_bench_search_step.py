"""bench/search_step.py at tiny shapes: every row is measured in its own child process, against a git
revision checked out into a temporary worktree, and the ratios this code / REV are printed."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "bench" / "search_step.py")


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env)


def worktrees() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout


def test_compare_ref_prints_the_four_ratios_and_removes_its_worktree():
    before = worktrees()
    result = run("--channels", "2", "--batch", "2", "--steps", "1", "--repeats", "1", "--unit-batch", "4",
                 "--unit-train-steps", "1", "--unit-finetune-steps", "1", "--unit-val-batches", "1", "--threads", "1",
                 "--compare-ref", "HEAD")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for row in ("darts", "darts_ckpt", "stage_a", "unit"):
        ratio = re.search(rf"^ratio {row} \(this / HEAD\): time x([0-9.]+), peak RSS x([0-9.]+)", out, re.M)
        assert ratio, out
        assert float(ratio.group(1)) > 0 and 0.5 < float(ratio.group(2)) < 2.0  # same code: similar memory
        for code in ("this", "ref"):
            assert re.search(rf"^{row}\s+{code}\s+[0-9.]+\s+[0-9.]+\s+-?[0-9.]+$", out, re.M), out
    # each measurement ran in its own child: one progress line per (row, code)
    assert len(re.findall(r"repeat 1 \S+\s+(this|ref)\s+time", result.stderr)) == 8
    assert not [line for line in set(worktrees().splitlines()) - set(before.splitlines()) if "search_step_" in line]


def test_bad_arguments_are_one_line_and_status_2():
    for args in (["--rows", "nope"], ["--channels", "3"], ["--compare-ref", "no-such-revision-xyz", "--rows", "stage_a"]):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:"), result.stderr


def test_a_terminated_run_removes_its_worktree():
    import signal
    import time
    before = set(worktrees().splitlines())
    process = subprocess.Popen([sys.executable, SCRIPT, "--rows", "stage_a", "--channels", "2", "--batch", "2",
                                "--steps", "50", "--repeats", "5", "--threads", "1", "--compare-ref", "HEAD"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    ours = set()
    while not ours and time.time() < deadline:
        time.sleep(0.5)
        ours = {line.split()[0] for line in set(worktrees().splitlines()) - before if "search_step_" in line}
    assert ours, "the run made no worktree"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert not ours & {line.split()[0] for line in worktrees().splitlines()}
    assert not any(Path(path).exists() for path in ours)
