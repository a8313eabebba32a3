"""What the evolutionary search costs: 1 rank versus N ranks, and a stage-A network versus a DARTS supernet.

    python bench/search_cost.py                 # both parts (about 5 minutes on 2 CPU cores)
    python bench/search_cost.py --repeats 3     # time each world size 3 times, compare the best (15 minutes)
    python bench/search_cost.py --skip-time     # memory only (seconds)

Time: the same small search (npop=2, MNIST subset from ../shared, else scikit-learn digits) is run with
``torchrun --standalone --nproc_per_node=1`` and ``--nproc_per_node=N`` (one torch thread per rank in
both, like one GPU per rank); the per-stage wall times come from each run's summary.json. Stage A runs
each rank's own members in parallel; stages B-D train one network with DDP (each rank a 1/N share of
every batch) and shard perturb-val candidates across ranks (the reference accuracy is measured by all
ranks together). Ratios = time on 1 rank / time on N ranks; the B-D rows below the stages split rank 0's
time into training and perturb-val (the rest is building networks, checkpoints and waiting).

Memory: peak training memory of one forward + backward of a stage-A network (one edge expanded to all 8
candidates, the 13 others one op each) versus the DARTS supernet (all 8 candidates on all 14 edges), same
C, layers, input and batch. Two measures, each in a fresh subprocess:
  - activations: bytes of the tensors autograd saves for backward (torch.autograd.graph.saved_tensors_hooks,
    each storage counted once): the memory that grows with the network's width and the batch;
  - peak RSS growth: resident set size peak (getrusage ru_maxrss) after forward+backward minus before
    (includes gradients and allocator slack; noisier);
  - on CUDA also torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "datasets" / "mnist"

# The protocol's shape at a small scale: K grows from stage A to D as in the reference (here 1, 4, 6 steps),
# every accuracy is measured on 2 search-val batches, and each decision of B-D retrains for a few epochs.
TIME_CONFIG = """
seed: 1
threads: 1
pictures: false
data: {{dataset: {dataset}, data_dir: {data_dir}, backend: memory, batch_size: 64, eval_batch_size: 128,
        train_subset: {subset}, translate: 1}}
network: {{channels: 4, layers: 1}}
optim: {{finetune_lr: 0.01}}
search:
  npop: 2
  finetune_steps: 1
  val_batches: 2
  stage_a: {{epochs: 1, finetune_extra: 0}}
  stage_b: {{epochs: 4, finetune_extra: 0}}
  stage_c: {{epochs: 2, finetune_extra: 3}}
  stage_d: {{epochs: 2, finetune_extra: 5}}
"""


def run_search(config: Path, save: Path, note: str, nproc: int) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(ROOT / "search_evolutionary.py"), "--config", str(config), "--save", str(save), "--note", note]
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"search on {nproc} rank(s) failed:\n{result.stderr[-3000:]}")
    summary = json.loads((save / note / "summary.json").read_text())
    summary["process_wall_s"] = time.time() - started
    summary["decision_records"] = json.loads((save / note / "scores.json").read_text())["decisions"]
    return summary


def stage_times(summary: dict) -> dict[str, float]:
    """Wall seconds of stage A, of B-D and of each of B, C, D, and rank 0's B-D training / perturb-val seconds."""
    stages, phases = summary["stage_seconds"], summary["phase_seconds"]
    times = {stage: stages[stage] for stage in "ABCD"}
    times["B-D"] = sum(stages[stage] for stage in "BCD")
    for phase in ("train", "score"):
        times[phase] = sum(phases.get(stage, {}).get(phase, 0.0) for stage in "BCD")
    return times


def time_part(nproc: int, keep: Path | None, repeats: int) -> None:
    if MNIST_DIR.is_dir():
        dataset, data_dir, subset = "mnist", str(MNIST_DIR), 512  # 256 search-train images: 4 steps per epoch,
        # 256 search-val images: the 2 batches of 128 every accuracy is measured on
    else:
        print(f"(no {MNIST_DIR}: using scikit-learn digits, whose 8x8 images make steps overhead-bound)")
        dataset, data_dir, subset = "digits", "null", 512
    runs: dict[int, list[dict]] = {1: [], nproc: []}
    with tempfile.TemporaryDirectory() as temp:
        save = keep or Path(temp)
        config = Path(temp) / "bench.yaml"
        config.write_text(TIME_CONFIG.format(dataset=dataset, data_dir=data_dir, subset=subset))
        print(f"time: {dataset} subset {subset}, C=4, 1 layer, npop=2, batch 64, K = 1/4/6 in A/C/D, "
              f"2 search-val batches; load average before: {os.getloadavg()[0]:.2f}")
        for repeat in range(repeats):  # interleaved, so that a slow spell of the machine hits both
            for ranks in (1, nproc):
                runs[ranks].append(run_search(config, save, f"ranks{ranks}_{repeat}", ranks))
            if repeats > 1:
                one, many = (stage_times(runs[ranks][-1]) for ranks in (1, nproc))
                print(f"  repeat {repeat + 1}: stages B-D {one['B-D']:.1f} s vs {many['B-D']:.1f} s = "
                      f"{one['B-D'] / many['B-D']:.2f}x, stage A {one['A'] / many['A']:.2f}x")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    # the best (shortest) of the repeats estimates what the code costs on a machine shared with others
    best = {ranks: {key: min(stage_times(run)[key] for run in runs[ranks]) for key in stage_times(runs[ranks][0])}
            for ranks in (1, nproc)}
    one, many = best[1], best[nproc]
    title = f"best of {repeats}" if repeats > 1 else ""
    print(f"{title:28s}{'1 rank':>10s}{f'{nproc} ranks':>10s}{'ratio':>8s}")
    rows = [("A", "stage A (npop=2) wall s"), ("B-D", "stages B-D wall s"), ("B", "  stage B"),
            ("C", "  stage C"), ("D", "  stage D"), ("train", "  B-D training (DDP)"),
            ("score", "  B-D perturb-val (sharded)")]
    for key, label in rows:
        print(f"{label:28s}{one[key]:10.1f}{many[key]:10.1f}{one[key] / many[key] if many[key] else math.nan:8.2f}")
    first_one, first_many = runs[1][0], runs[nproc][0]
    print(f"{'device-hours':28s}{first_one['device_hours']:10.4f}{first_many['device_hours']:10.4f}")
    # The B-D ratios compare equal work only where both runs took the same decisions (the kept ops set the
    # cost of every later step); DDP's per-rank BN batches can make them diverge. A rerun with the same
    # world size takes the same decisions.
    kept = [[d.get("kept") for d in run["decision_records"]] for run in (first_one, first_many)]
    same = sum(a == b for a, b in zip(*kept))
    print(f"decisions of B-D equal in both runs: {same} of {len(kept[0])}; genotypes equal: "
          f"{first_one['genotype']['normal'] == first_many['genotype']['normal']} (stage A is rank-independent; "
          "DDP stages see different BN batches)")


MEMORY_PROBE = r"""
import json, resource, sys, torch
import torch.nn.functional as F
from space.ops import SEARCH_OPS, PRIMITIVES
from space.search_network import NUM_EDGES, SearchNetwork
kind, channels, layers, batch, size = sys.argv[1], *map(int, sys.argv[2:6])
torch.manual_seed(0)
torch.set_num_threads(1)
if kind == "supernet":
    cell = [SEARCH_OPS] * NUM_EDGES
else:
    cell = [(PRIMITIVES[e % len(PRIMITIVES)],) for e in range(NUM_EDGES)]
    cell[0] = SEARCH_OPS
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
net = SearchNetwork(3, 10, cell, channels=channels, layers=layers).to(device)
images = torch.randn(batch, 3, size, size, device=device)
labels = torch.randint(0, 10, (batch,), device=device)
seen, saved = set(), [0]
def pack(tensor):
    storage = tensor.untyped_storage()
    key = (storage.data_ptr(), storage.device)
    if key not in seen:
        seen.add(key)
        saved[0] += storage.nbytes()
    return tensor
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(); base_cuda = torch.cuda.memory_allocated()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    loss = F.cross_entropy(net(images), labels)
loss.backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = {"saved_bytes": saved[0], "rss_growth_bytes": (peak - base) * 1024,
          "params": sum(p.numel() for p in net.parameters())}
if device.type == "cuda":
    result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - base_cuda
print(json.dumps(result))
"""


def memory_part(channels: int, layers: int, batch: int, size: int) -> None:
    results = {}
    for kind in ("stage_a", "supernet"):
        output = subprocess.run([sys.executable, "-c", MEMORY_PROBE, kind, str(channels), str(layers), str(batch),
                                 str(size)], cwd=ROOT, capture_output=True, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if output.returncode != 0:
            raise SystemExit(output.stderr[-2000:])
        results[kind] = json.loads(output.stdout.strip().splitlines()[-1])
    a, s = results["stage_a"], results["supernet"]
    print(f"memory: C={channels}, {layers} layers, batch {batch} of 3x{size}x{size}, one forward + backward")
    print(f"{'':28s}{'stage A':>12s}{'supernet':>12s}{'ratio':>8s}")
    print(f"{'parameters':28s}{a['params']:12d}{s['params']:12d}{a['params'] / s['params']:8.2f}")
    for key, label in (("saved_bytes", "saved activations MiB"), ("rss_growth_bytes", "peak RSS growth MiB"),
                       ("cuda_peak_bytes", "CUDA peak allocated MiB")):
        if key in a:
            print(f"{label:28s}{a[key] / 2**20:12.1f}{s[key] / 2**20:12.1f}{a[key] / s[key]:8.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks to compare with 1 (default 2)")
    parser.add_argument("--skip-time", action="store_true", help="skip the 1-vs-N-ranks searches")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory comparison")
    parser.add_argument("--keep", type=Path, default=None, help="keep the bench runs' directories here")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time: run each world size this many times, interleaved, and compare the shortest "
                             "times (default 1; use 3 on a machine shared with other work)")
    parser.add_argument("--channels", type=int, default=16, help="memory: C (default 16, the PertNAS search)")
    parser.add_argument("--layers", type=int, default=5, help="memory: cells (default 5)")
    parser.add_argument("--batch", type=int, default=32, help="memory: batch (default 32)")
    parser.add_argument("--size", type=int, default=32, help="memory: image side (default 32, CIFAR)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.nproc < 2:
        parser.error("--repeats must be at least 1 and --nproc at least 2")
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}")
    if not args.skip_memory:
        memory_part(args.channels, args.layers, args.batch, args.size)
    if not args.skip_time:
        time_part(args.nproc, args.keep, args.repeats)


if __name__ == "__main__":
    main()
