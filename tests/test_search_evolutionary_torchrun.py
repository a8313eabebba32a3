"""search_evolutionary.py end to end with REAL torchrun processes on gloo, on a tiny digits config.

One unbroken 2-rank run is the reference: runs of the same seed whose rank 1 is SIGKILLed mid stage A, or
right after a checkpoint of stage B, C or D (torchrun --max-restarts=1), must resume and end with the same
genotype; two "nodes" with their own run directories (no shared filesystem) must too; a rank whose members
take longer than the process group's timeout must not abort the job; npop=4 on 2 ranks must complete;
every perturb-val task must have started from identical weights (weight digests, all ranks); with weight
inheritance one network, built in stage B, must carry every later decision as masks.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launch.checkpoint import CheckpointManager
from launch.distributed import DistEnv
from perturb.selection import node_visit_order
from space.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]

TINY = """
seed: 5
threads: 1
data: {dataset: digits, backend: memory, batch_size: 32, eval_batch_size: 64, train_subset: 240, translate: 1}
network: {channels: 4, layers: 1}
optim: {finetune_lr: 0.01}
search:
  npop: 2
  finetune_steps: 1
  val_batches: 1
  record_digests: true
  stage_a: {epochs: 1, finetune_extra: 0}
  stage_b: {epochs: 1, finetune_extra: 0}
  stage_c: {epochs: 1, finetune_extra: 0}
  stage_d: {epochs: 1, finetune_extra: 0}
"""


def torchrun(config: Path, save: Path, note: str, *sets: str, nproc: int = 2, max_restarts: int = 0):
    # --standalone: a c10d rendezvous on a free port; with a fresh store for every restart attempt (as in
    # launch/local.sh, pytorch#135712) a restarted worker never reads its peer's address from the last attempt
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--max-restarts={max_restarts}", "--monitor-interval=0.2", "search_evolutionary.py",
               "--config", str(config), "--save", str(save), "--note", note, "--distributed"]
    for item in sets:
        command += ["--set", item]
    env = dict(os.environ, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env)
    (save / f"{note}.stderr.txt").write_text(result.stderr)
    errors = [line for line in result.stderr.splitlines() if "Error" in line or "error:" in line]
    assert result.returncode == 0, "\n".join(errors[-20:]) + "\n" + result.stderr[-2000:]
    return save / note


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def unbroken_run(tiny_config, tmp_path_factory):
    return torchrun(tiny_config, tmp_path_factory.mktemp("runs"), "unbroken")


def all_start_digests(scores: dict) -> list[list[str]]:
    groups = [unit["start_digests"] for unit in scores["stage_a_units"].values()]
    groups += [d["start_digests"] for d in scores["decisions"] if d.get("start_digests")]
    return groups


def test_two_ranks_npop2_gives_a_valid_genotype_and_equal_candidate_starts(unbroken_run):
    genotype = Genotype.from_json(unbroken_run / "genotype.json")  # validates: 2 inputs per node, no none
    assert genotype.is_shared
    scores = json.loads((unbroken_run / "scores.json").read_text())
    assert len(scores["members"]) == 2 and len(scores["average"]) == 14
    assert all(len(row) == len(scores["ops"]) for row in scores["average"])
    groups = all_start_digests(scores)
    assert len(groups) == 2 * 14 + 14 + 3 - sum(1 for d in scores["decisions"] if d["stage"] == "C"
                                               and len(d["ops"]) < 2)
    for digests in groups:  # reference + every candidate, on whichever rank ran it, from the same weights
        assert digests and all(len(d) == 64 for d in digests) and len(set(digests)) == 1
    summary = json.loads((unbroken_run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["device_hours"] > 0
    # rank 0's time per stage split into training and perturb-val: both positive where the stage has them
    phases = summary["phase_seconds"]
    assert all(phases[stage]["train"] > 0 for stage in "ABCD") and phases["B"]["score"] == 0.0
    assert all(phases[stage]["score"] > 0 for stage in "ACD")
    assert all(phases[s]["train"] + phases[s]["score"] <= summary["stage_seconds"][s] for s in "BCD")
    assert (unbroken_run / "tensorboard").is_dir() and list((unbroken_run / "checkpoints").glob("ckpt_*.pt"))


def test_rank_killed_mid_stage_a_resumes_to_the_same_genotype(unbroken_run, tiny_config, tmp_path):
    marker = tmp_path / "killed"
    run = torchrun(tiny_config, tmp_path, "crashed", "debug.crash_after_units=3", "debug.crash_rank=1",
                   f"debug.crash_marker={marker}", max_restarts=1)
    assert marker.read_text().startswith("killed after 3 units")  # the kill happened, mid stage A
    assert "member 1 resumes with 3 of 14 edges scored" in (run / "log.rank1.txt").read_text()
    assert Genotype.from_json(run / "genotype.json") == Genotype.from_json(unbroken_run / "genotype.json")
    crashed = json.loads((run / "scores.json").read_text())
    unbroken = json.loads((unbroken_run / "scores.json").read_text())
    assert crashed["average"] == unbroken["average"] and crashed["decisions"] == unbroken["decisions"]


def test_npop4_on_two_ranks_runs_two_rounds(tiny_config, tmp_path):
    run = torchrun(tiny_config, tmp_path, "npop4", "search.npop=4", "search.record_digests=false",
                   "search.stage_b.epochs=0", "search.stage_c.epochs=0", "search.stage_d.epochs=0",
                   "search.shuffle_nodes=true")
    Genotype.from_json(run / "genotype.json")
    scores = json.loads((run / "scores.json").read_text())
    visited = [d["node"] for d in scores["decisions"] if d["stage"] == "D"]
    assert visited == node_visit_order([3, 4, 5], seed=5, shuffle=True)  # the seeded order, on both ranks
    assert sorted(scores["members"]) == ["0", "1", "2", "3"]
    rows = [scores["members"][m][e] for m in "0123" for e in range(14)]
    assert all(all(value is not None for value in row) for row in rows)


def test_weight_inheritance_continues_one_network_through_stages_c_and_d(tiny_config, tmp_path):
    run = torchrun(tiny_config, tmp_path, "inherit", "search.weight_inheritance=true", "search.baseline=true",
                   "search.stage_c.inherit_epochs=1", "search.stage_d.inherit_epochs=1")
    Genotype.from_json(run / "genotype.json")
    scores = json.loads((run / "scores.json").read_text())
    for digests in all_start_digests(scores):  # baseline + candidates: still all from one snapshot
        assert len(set(digests)) == 1
    # The checkpoint before the last decision (after node 4) holds the trained network: built once in stage B
    # (its construction cell is B's), every decision since applied as masks on it.
    manager = CheckpointManager(run, DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"),
                                             backend=None))
    (_, newest), (_, before) = manager.list_checkpoints()[:2]
    saved = manager.load(before, restore_rng=False)
    trained, cell = saved["trained"], saved["search"]["cell"]
    assert trained["cell"] == scores["decisions"][0]["cell"]  # stage B's cell: no fresh network since
    active = [[op for op, on in zip(ops, mask) if on and op != "none"]
              for ops, mask in zip(trained["cell"], trained["masks"]["0"])]
    assert active == [[op for op in ops if op != "none"] for ops in cell]
    assert sum(1 for ops in active if ops) == 14 - 3  # nodes 3 (3 inputs) and 4 (4 inputs) keep 2 each


@pytest.mark.parametrize("step, stage", [(2, "B"), (9, "C"), (18, "D")])
def test_rank_killed_after_a_checkpoint_of_stage_b_c_or_d_resumes_to_the_same_genotype(
        unbroken_run, tiny_config, tmp_path, step, stage):
    marker = tmp_path / "killed"
    run = torchrun(tiny_config, tmp_path, f"crash{stage}", f"debug.crash_at_step={step}", "debug.crash_rank=1",
                   f"debug.crash_marker={marker}", max_restarts=1)
    assert marker.read_text().startswith(f"killed after the checkpoint of decision {step}")
    assert f"resumed from checkpoint step {step} (stage " in (run / "log.txt").read_text()
    assert Genotype.from_json(run / "genotype.json") == Genotype.from_json(unbroken_run / "genotype.json")
    crashed = json.loads((run / "scores.json").read_text())
    assert crashed["decisions"] == json.loads((unbroken_run / "scores.json").read_text())["decisions"]


def two_nodes(folders: list[Path], config: Path, note: str) -> None:
    """One torchrun agent (one rank) per folder, meeting through c10d: two "nodes" without a shared
    filesystem, each with a relative save path inside its own folder."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agents = []
    env = dict(os.environ, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1", OMP_NUM_THREADS="1")
    for node_rank, folder in enumerate(folders):
        folder.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                   f"--node_rank={node_rank}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                   f"--rdzv_id={note}", f"--rdzv_conf=is_host={int(node_rank == 0)}", "--local-addr=127.0.0.1",
                   str(ROOT / "search_evolutionary.py"), "--config", str(config), "--save", "runs", "--note", note]
        agents.append(subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        outputs = [agent.communicate(timeout=400)[0] for agent in agents]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    assert [agent.returncode for agent in agents] == [0, 0], "\n".join(o[-3000:] for o in outputs)


def test_two_nodes_with_their_own_run_directories_give_the_shared_directory_genotype(unbroken_run, tiny_config,
                                                                                     tmp_path):
    """No shared filesystem: each rank writes its stage-A files into its own run directory and the scores
    travel over the process group; a rerun resumes both ranks from rank 0's checkpoint (broadcast)."""
    folders = [tmp_path / "node0", tmp_path / "node1"]
    two_nodes(folders, tiny_config, "own")
    node0, node1 = (folder / "runs" / "own" for folder in folders)
    assert sorted(p.name for p in (node0 / "stage_a").glob("member_*")) == ["member_0.json"]  # rank 0's member only
    assert sorted(p.name for p in (node1 / "stage_a").glob("member_*")) == ["member_1.json"]
    assert not list((node1 / "checkpoints").glob("ckpt_*"))  # rank 0 writes the checkpoints
    assert Genotype.from_json(node0 / "genotype.json") == Genotype.from_json(unbroken_run / "genotype.json")
    own = json.loads((node0 / "scores.json").read_text())
    assert own["average"] == json.loads((unbroken_run / "scores.json").read_text())["average"]
    last = json.loads((node0 / "summary.json").read_text())["decisions"]
    two_nodes(folders, tiny_config, "own")  # both ranks resume from the checkpoint on node 0's disk
    assert f"resumed from checkpoint step {last} (stage done)" in (node1 / "log.rank1.txt").read_text()
    assert Genotype.from_json(node0 / "genotype.json") == Genotype.from_json(unbroken_run / "genotype.json")


def test_a_rank_slower_than_the_collective_timeout_does_not_abort_the_job(unbroken_run, tiny_config, tmp_path):
    """The process group's timeout is 6 s; rank 1 sleeps 1 s after each of its 14 stage-A units, so rank 0
    waits about 14 s for it at the end of stage A: outside any collective, so the job completes."""
    run = torchrun(tiny_config, tmp_path, "slow", "dist_timeout_s=6", "debug.slow_rank=1", "debug.slow_unit_s=1")
    assert Genotype.from_json(run / "genotype.json") == Genotype.from_json(unbroken_run / "genotype.json")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["progress"]["A"] == {
        "done": 14, "total": 14, "seconds_per_unit": summary["progress"]["A"]["seconds_per_unit"], "eta_s": 0.0}
    assert summary["progress"]["C"]["done"] == 14 and summary["progress"]["D"]["done"] == 3


def test_stages_c_and_d_keep_the_argmin_and_the_population_average_is_the_members_mean(unbroken_run):
    """End to end, from scores.json: C keeps argmin(scores) (lower index on ties), D the 2 most important
    edges, and the population matrix is the mean of the members' matrices."""
    scores = json.loads((unbroken_run / "scores.json").read_text())
    members = torch.tensor([scores["members"][m] for m in sorted(scores["members"])], dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(scores["average"], dtype=torch.float64), members.mean(dim=0))
    decided = 0
    for decision in scores["decisions"]:
        if decision["stage"] == "C" and decision.get("scores"):
            best = min(range(len(decision["scores"])), key=lambda i: (decision["scores"][i], i))
            assert decision["kept"] == decision["ops"][best]
            decided += 1
        elif decision["stage"] == "D":
            order = sorted(range(len(decision["edges"])), key=lambda i: (decision["scores"][i], i))
            assert decision["kept"] == sorted(decision["edges"][i] for i in order[:2])
            decided += 1
    assert decided >= 3
