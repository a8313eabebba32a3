"""Time and peak memory of the search's steps, optionally against another git revision of this project.

    python bench/search_step.py                                   # the three rows, best of 3 (minutes on 2 cores)
    python bench/search_step.py --compare-ref main --repeats 3    # this working tree / main, interleaved pairs
    python bench/search_step.py --rows stage_a --steps 5 --threads 2

Rows (CIFAR-shaped input 3x32x32, 10 classes, C = --channels (16), random inputs from a fixed seed):
  darts    DARTS supernet: 8 cells, separate normal/reduction cells, the 8 candidates on all 14 edges,
           softmax-weighted; ONE first-order bilevel step = architecture step (Architect, alpha gradient on a
           val batch, Adam) + weight step (SGD, momentum 0.9, grad clip 5); batch --batch (64).
  darts_ckpt  the darts row with activation checkpointing per cell (network.checkpoint_cells); a revision
           without it measures its plain darts step (the memory it took before the lever existed).
  stage_a  PertNAS stage-A network: 5 cells, one shared cell; edge --edge holds the 7 ops + none, every other
           edge one op drawn from a fixed seed + none; one weight step (SGD); batch --batch (64).
  unit     one whole stage-A unit at the pertnas_cifar10 shape (C, 5 cells, batch --unit-batch 256,
           eval-mode BN with running statistics, no baseline fine-tuning) with fewer steps: train
           --unit-train-steps steps from a fresh network, then perturb-val of the 7 ops of the expanded edge
           (each: snapshot restore, --unit-finetune-steps fine-tune steps, accuracy on --unit-val-batches
           search-val batches) plus the reference accuracy; the time of the whole unit.

Every network is laid out as the revision's default config lays it out on the CPU (its
``RunConfig().channels_last``: channels_last from 2026-12; a revision without the key: contiguous), and the
process's CPU allocator is set up as the revision's run session sets it up (launch.session, where it has
``tune_cpu_allocator``), so each revision is measured as its CLIs would run.

Measurement: every (row, revision, repeat) runs in a FRESH child process, so peak RSS belongs to one
measurement alone: peak_rss_MiB is the child's ru_maxrss (getrusage) at the end, i.e. everything the process
held, torch and Python included, as ``/usr/bin/time -v`` reports; rss_increase_MiB is that peak minus the
RSS after building the network and its optimizers. Time of darts / stage_a: the median of --steps steps
after one warm-up step; of unit: the whole unit, once. Over --repeats children the best (smallest) of each
is kept.

--compare-ref REV checks REV out into a temporary ``git worktree`` and measures the same rows with REV's
code (the measuring code is this file in both cases; only the project modules it imports come from REV),
interleaved: for each repeat, this code then REV, then REV then this code on the next repeat. Ratios are
this code / REV (below 1: this code is faster or smaller). The worktree is removed at the end.

Not reproduced here: the side-by-side against the published pt.darts and PertNAS code (their code is not
part of this project and is not copied into it); the issue's table measured those from outside.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("darts", "darts_ckpt", "stage_a", "unit")


def _rss_now_bytes() -> int:
    """Current resident set size of this process (Linux /proc), 0 where unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    import os
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _batches(count: int, batch: int, seed: int):
    """``count`` (images (batch, 3, 32, 32), labels (batch,)) pairs drawn from a generator seeded by ``seed``."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 32, 32, generator=generator), torch.randint(0, 10, (batch,), generator=generator))
            for _ in range(count)]


def _stage_a_cell(edge: int, seed: int = 0):
    """The stage-A cell: edge ``edge`` holds SEARCH_OPS (7 ops + none), every other edge (op, 'none') with op
    drawn from the 7 ops by ``random.Random(seed)``."""
    from space.ops import NONE_OP, PRIMITIVES, SEARCH_OPS
    from space.search_network import NUM_EDGES
    generator = random.Random(f"search_step/{seed}")
    return tuple(tuple(SEARCH_OPS) if e == edge else (generator.choice(PRIMITIVES), NONE_OP) for e in range(NUM_EDGES))


def _as_the_project_runs(network):
    """``network`` in the memory format the revision's default config gives it on the CPU (module docstring)."""
    from launch.run_config import RunConfig
    from launch.train import to_channels_last
    return to_channels_last(network, "cpu", getattr(RunConfig(), "channels_last", None))


def _step_row(row: str, batch: int, steps: int, edge: int, channels: int) -> dict:
    """darts / darts_ckpt / stage_a: build, one warm-up step, then ``steps`` timed steps (module docstring)."""
    import inspect

    import torch
    from launch.train import train_step
    from space.search_network import SearchNetwork, full_candidates
    from supernet.architect import Architect

    torch.manual_seed(0)
    extra = {}
    if row == "darts_ckpt" and "checkpoint_cells" in inspect.signature(SearchNetwork).parameters:
        extra["checkpoint_cells"] = True
    if row.startswith("darts"):
        network = SearchNetwork(3, 10, full_candidates(), full_candidates(), channels=channels, layers=8,
                                weighting="softmax", **extra)
    else:
        network = SearchNetwork(3, 10, _stage_a_cell(edge), None, channels=channels, layers=5)
    network = _as_the_project_runs(network)
    optimizer = torch.optim.SGD(network.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    architect = None
    if network.arch_parameters():
        arch_optimizer = torch.optim.Adam(network.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        architect = Architect(network, optimizer, arch_optimizer, second_order=False)
    train_batch, val_batch = _batches(2, batch, seed=1)
    network.train()

    def step() -> None:
        if architect is not None:
            architect.step(train_batch, val_batch)
        for alpha in network.arch_parameters():
            alpha.requires_grad_(False)
        train_step(network, *train_batch, optimizer, grad_clip=5.0)
        for alpha in network.arch_parameters():
            alpha.requires_grad_(True)

    rss_built = _rss_now_bytes()
    step()  # warm-up: momentum buffers, Adam state, allocator
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return {"time_s": statistics.median(times), "rss_built": rss_built, "checkpointed": bool(extra)}


def _unit_row(batch: int, edge: int, train_steps: int, finetune_steps: int, val_batches: int, channels: int) -> dict:
    """unit: a fresh stage-A network trained ``train_steps`` steps, then perturb-val of the edge's 7 ops."""
    import torch
    from launch.distributed import DistEnv
    from launch.train import train_epoch
    from perturb.measure import SearchValMeasure
    from perturb.scoring import Candidate, Rounds, perturb_val
    from perturb.snapshot import Snapshot
    from space.ops import PRIMITIVES
    from space.search_network import SearchNetwork

    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    train = _batches(train_steps, batch, seed=1)
    finetune = _batches(finetune_steps, batch, seed=2)
    val = _batches(val_batches, batch, seed=3)
    torch.manual_seed(0)
    rss_built = _rss_now_bytes()
    started = time.perf_counter()
    network = _as_the_project_runs(SearchNetwork(3, 10, _stage_a_cell(edge), None, channels=channels, layers=5))
    # pertnas_cifar10: SGD(lr 0.2176 / 2.5, momentum 0.9, wd 3e-4), no clipping; fine-tuning continues it
    optimizer = torch.optim.SGD(network.parameters(), lr=0.2176 / 2.5, momentum=0.9, weight_decay=3e-4)
    train_epoch(network, train, optimizer, env=env, desc="train", sync=False, grad_clip=None)
    for group in optimizer.param_groups:
        group["lr"] = 0.001  # the end-of-training rate of the cosine schedule

    def tune(module, count: int) -> None:
        train_epoch(module, finetune, optimizer, env=env, max_steps=count, desc="fine-tune", sync=False,
                    grad_clip=None)

    measure = SearchValMeasure(val, measurement="running", env=env)
    result = perturb_val(network, [Candidate(edge, op) for op in PRIMITIVES], snapshot=Snapshot.capture(network, optimizer),
                         finetune=tune, measure=measure, steps=finetune_steps, env=env, shard=False,
                         rounds=Rounds(batches=val_batches, keep=1))
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "rss_built": rss_built, "scores": result.scores}


def measure_child(args: argparse.Namespace) -> dict:
    """One measurement in this (child) process, importing the project from ``args.code_root``."""
    sys.path.insert(0, str(Path(args.code_root).resolve()))
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from launch import session
    if hasattr(session, "tune_cpu_allocator"):
        session.tune_cpu_allocator(torch.device("cpu"))
    if args.child == "unit":
        result = _unit_row(args.unit_batch, args.edge, args.unit_train_steps, args.unit_finetune_steps,
                           args.unit_val_batches, args.channels)
    else:
        result = _step_row(args.child, args.batch, args.steps, args.edge, args.channels)
    peak = _peak_rss_bytes()
    result["peak_rss_MiB"] = peak / 2**20
    result["rss_increase_MiB"] = (peak - result.pop("rss_built")) / 2**20
    return result


def _child_command(args: argparse.Namespace, row: str, code_root: Path) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", row, "--code-root", str(code_root),
               "--batch", str(args.batch), "--steps", str(args.steps), "--edge", str(args.edge),
               "--channels", str(args.channels),
               "--unit-batch", str(args.unit_batch), "--unit-train-steps", str(args.unit_train_steps),
               "--unit-finetune-steps", str(args.unit_finetune_steps),
               "--unit-val-batches", str(args.unit_val_batches)]
    return command + (["--threads", str(args.threads)] if args.threads else [])


def run_child(args: argparse.Namespace, row: str, code_root: Path) -> dict:
    result = subprocess.run(_child_command(args, row, code_root), capture_output=True, text=True, cwd=code_root)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {row} with the code in {code_root} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _add_worktree(rev: str, parent: Path) -> Path:
    from common.errors import UserInputError
    path = parent / "ref"
    result = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise UserInputError(f"--compare-ref {rev!r}: git worktree add failed: {result.stderr.strip()}")
    return path


def _remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", "--force", str(path)], capture_output=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def compare(args: argparse.Namespace, roots: dict[str, Path]) -> dict[str, dict[str, list[dict]]]:
    """{row: {label: [result per repeat]}}, the labels' children interleaved and alternating in order."""
    results = {row: {label: [] for label in roots} for row in args.rows}
    labels = list(roots)
    for repeat in range(args.repeats):
        order = labels if repeat % 2 == 0 else labels[::-1]
        for row in args.rows:
            for label in order:
                result = run_child(args, row, roots[label])
                results[row][label].append(result)
                print(f"  repeat {repeat + 1} {row:<8} {label:<6} time {result['time_s']:8.3f} s  "
                      f"peak RSS {result['peak_rss_MiB']:8.0f} MiB", file=sys.stderr, flush=True)
    return results


def report(args: argparse.Namespace, results: dict, ref: str | None) -> None:
    """The table (best of the repeats) and, with a reference, the ratios this code / REV."""
    columns = ("time_s", "peak_rss_MiB", "rss_increase_MiB")
    print(f"C {args.channels}, batch {args.batch} (unit: {args.unit_batch}, {args.unit_train_steps} train + 7 x "
          f"{args.unit_finetune_steps} fine-tune steps, {args.unit_val_batches} val batches), threads "
          f"{args.threads or 'default'}, best of {args.repeats}")
    print(f"{'row':<12}{'code':<7}" + "".join(f"{c:>18}" for c in columns))
    best = {}
    for row, by_label in results.items():
        for label, runs in by_label.items():
            best[row, label] = {c: min(r[c] for r in runs) for c in columns}
            print(f"{row:<12}{label:<7}" + "".join(f"{best[row, label][c]:>18.3f}" for c in columns))
    if ref is None:
        return
    for row in results:
        this, other = best[row, "this"], best[row, "ref"]
        plain = f" ({ref} has no checkpointing: against its plain step)" if row == "darts_ckpt" and not any(
            r.get("checkpointed") for r in results[row]["ref"]) else ""
        print(f"ratio {row} (this / {ref}): time x{this['time_s'] / other['time_s']:.3f}, "
              f"peak RSS x{this['peak_rss_MiB'] / other['peak_rss_MiB']:.3f}{plain}")


def parse_args(argv=None, parser_class=argparse.ArgumentParser) -> argparse.Namespace:
    parser = parser_class(description=__doc__.split("\n\n")[0] + " (see the module docstring).")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows of {ROWS} (default all)")
    parser.add_argument("--batch", type=int, default=64, help="images per step of darts and stage_a (default 64)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of darts / stage_a after a warm-up (3)")
    parser.add_argument("--repeats", type=int, default=3, help="children per row and revision; best kept (3)")
    parser.add_argument("--channels", type=int, default=16, help="C of every row (default 16; smaller for smoke tests)")
    parser.add_argument("--edge", type=int, default=0, help="the expanded edge of stage_a / unit (0)")
    parser.add_argument("--unit-batch", type=int, default=256, help="unit: images per batch (256, pertnas_cifar10)")
    parser.add_argument("--unit-train-steps", type=int, default=4, help="unit: training steps (4)")
    parser.add_argument("--unit-finetune-steps", type=int, default=2, help="unit: fine-tune steps per candidate (2)")
    parser.add_argument("--unit-val-batches", type=int, default=2, help="unit: search-val batches per accuracy (2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per child (default: torch's)")
    parser.add_argument("--compare-ref", metavar="REV", default=None,
                        help="also measure git revision REV (a temporary worktree) and print this / REV ratios")
    parser.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--code-root", default=str(ROOT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = [row for row in args.rows if row not in ROWS]
    if unknown or not args.rows:
        parser.error(f"--rows must name some of {', '.join(ROWS)}, got {unknown or 'nothing'}")
    for name in ("batch", "channels", "steps", "repeats", "unit_batch", "unit_train_steps", "unit_val_batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.channels % 2:
        parser.error("--channels must be even (FactorizedReduce halves it)")
    if args.unit_finetune_steps < 0 or not 0 <= args.edge < 14 or (args.threads is not None and args.threads < 1):
        parser.error("need --unit-finetune-steps >= 0, --edge in 0..13 and --threads >= 1")
    return args


def main(argv=None) -> None:
    from common.errors import ArgumentParser
    args = parse_args(argv, ArgumentParser)
    import os
    import signal
    # a SIGTERM (timeout, kill) unwinds through the finally below, so the temporary worktree is removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="search_step_") as scratch:
        roots = {"this": ROOT}
        try:
            if args.compare_ref:
                roots["ref"] = _add_worktree(args.compare_ref, Path(scratch))
            results = compare(args, roots)
        finally:
            if args.compare_ref:  # also when interrupted inside ``git worktree add`` (then still locked)
                _remove_worktree(Path(scratch) / "ref")
    report(args, results, args.compare_ref)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at end")


if __name__ == "__main__":
    if "--child" in sys.argv:  # a child imports nothing of the project before measure_child puts --code-root first
        print(json.dumps(measure_child(parse_args())))
    else:
        sys.path.insert(0, str(ROOT))
        from common.errors import cli_entry
        cli_entry(main)()
