"""Real processes: torchrun on gloo (2 workers, and 2 simulated nodes), plain python, resume, SIGKILL.

All jobs run tests/workers/launch_worker.py, a tiny MLP (with dropout, so the RNG state matters) trained
by SGD with momentum and a cosine schedule, checkpointing every 2 steps.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "workers" / "launch_worker.py"
TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    env.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)  # exercise torchrun's default shared store
    return env


def run(command: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, f"{command} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-5000:]}"
    return completed


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def worker_args(run_dir: Path, *extra: str) -> list[str]:
    return [str(WORKER), "--set", f"run_dir={run_dir}", "--set", "train.steps=10", *extra]


def load_result(run_dir: Path) -> dict:
    return torch.load(run_dir / "result.pt", weights_only=True)


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"weights differ in {name}"


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> dict:
    """One unbroken 2-process job on gloo through launch/local.sh (torchrun --standalone)."""
    run_dir = tmp_path_factory.mktemp("two_process")
    run(["bash", str(REPO / "launch" / "local.sh"), "-n", "2", "-r", "0", *worker_args(run_dir)])
    return load_result(run_dir)


def test_two_process_torchrun_gathers_and_trains_under_ddp(two_process_run):
    report = two_process_run["report"]
    # (rank, world_size, local_rank, restart count) of each rank, gathered in rank order.
    assert report["identity"] == [[0, 2, 0, 0], [1, 2, 1, 0]]
    assert report["ragged"] == [[0], [0, 1]]  # rank r contributed arange(r + 1)
    assert report["mean_of_ranks"] == pytest.approx(0.5)
    assert report["broadcast_from_0"] == [5.0, 5.0]
    # broadcast_tensors: three tensors of two dtypes, rank 1's values everywhere, dtypes kept
    assert report["several_from_1"] == [[1.0] * 6 + [8.0, 1.5]] * 2
    assert report["several_dtypes"] == ["torch.float32", "torch.int64", "torch.float32"]
    assert report["weights_equal_on_all_ranks"]  # DDP kept the replicas identical
    assert report["eval_count"] == 64  # each rank evaluated half; counts summed across ranks
    assert report["local_eval_counts"] == [32, 32]  # sync=False: each rank's own half, no collective
    assert two_process_run["resumed_from"] == 0


def test_two_node_simulation_with_c10d_rendezvous(tmp_path, two_process_run):
    """Two torchrun agents (--nnodes=2) meet through c10d on 127.0.0.1; same job, same weights."""
    port = free_port()
    run_dir = tmp_path / "two_nodes"
    agents = []
    for node_rank in (0, 1):
        command = torchrun(
            "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node_rank}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=launch-test", f"--rdzv_conf=is_host={int(node_rank == 0)}",
            "--local-addr=127.0.0.1", *worker_args(run_dir),
        )
        agents.append(subprocess.Popen(command, cwd=REPO, env=job_env(), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for agent in agents:
            outputs.append(agent.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    assert [agent.returncode for agent in agents] == [0, 0], "\n".join(output[-3000:] for output in outputs)
    result = load_result(run_dir)
    assert result["report"]["identity"] == [[0, 2, 0, 0], [1, 2, 0, 0]]  # one process per "node": local rank 0
    assert result["report"]["weights_equal_on_all_ranks"]
    assert_same_weights(result["model"], two_process_run["model"])


def test_plain_python_is_a_world_of_one_and_resume_is_exact(tmp_path):
    unbroken, interrupted = tmp_path / "unbroken", tmp_path / "interrupted"
    run([sys.executable, *worker_args(unbroken)])
    run([sys.executable, *worker_args(interrupted, "--set", "fault.stop_after=4")])
    assert not (interrupted / "result.pt").exists()
    assert sorted(path.name for path in (interrupted / "checkpoints").iterdir())[-1] == "ckpt_000000004.pt"
    run([sys.executable, *worker_args(interrupted)])

    first, resumed = load_result(unbroken), load_result(interrupted)
    assert first["report"]["identity"] == [[0, 1, 0, 0]]
    assert first["report"]["eval_count"] == 64
    assert resumed["resumed_from"] == 4
    assert_same_weights(first["model"], resumed["model"])
    # The metrics log kept the first process's lines and the resumed ones: steps 1-4 then 5-10.
    records = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == list(range(1, 11))


def test_sigkilled_worker_is_restarted_by_torchrun_and_resumes(tmp_path, two_process_run):
    run_dir, marker = tmp_path / "killed", tmp_path / "killed.marker"
    run(torchrun(
        "--standalone", "--nproc_per_node=2", "--max-restarts=1", "--monitor-interval=0.2",
        *worker_args(run_dir, "--set", "fault.kill_at_step=5", "--set", "fault.kill_rank=1",
                     "--set", f"fault.marker={marker}"),
    ))
    assert marker.exists(), "the worker never killed itself"
    result = load_result(run_dir)
    assert result["resumed_from"] == 4  # the checkpoint of step 4, the last before the kill
    assert [row[3] for row in result["report"]["identity"]] == [1, 1]  # both ranks are on restart 1
    assert_same_weights(result["model"], two_process_run["model"])


def load_worker_module():
    spec = importlib.util.spec_from_file_location("launch_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("override", "key"),
    [("train.stepz=3", "train.stepz"), ("train.steps=many", "train.steps"), ("train.lr=-1", "train.lr"),
     ("fault.kill_rank=[1]", "fault.kill_rank")],
)
def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, capsys, override, key):
    """The worker's cli_entry-wrapped main, called in this process (the exit path is the same)."""
    worker = load_worker_module()
    with pytest.raises(SystemExit) as exit_info:
        worker.main(["--set", f"run_dir={tmp_path / 'run'}", "--set", override])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"'{key}'" in lines[0], lines
    assert not (tmp_path / "run").exists()  # nothing was written for a config that never loaded


def test_bad_yaml_file_exits_2_in_a_real_process(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  stepz: 4\n")
    completed = subprocess.run([sys.executable, str(WORKER), "--config", str(config)],
                               cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "error: config key 'train.stepz' is unknown (did you mean 'train.steps'?)"
    ]
