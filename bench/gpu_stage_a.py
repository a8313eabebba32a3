"""The Python part of bench/gpu_check.sh: its data, part (a)'s search flags, parts (b)-(d) and the one table.

    python bench/gpu_stage_a.py prepare --work DIR [--cpu-smoke]   # prints "BETON_DIR LABEL"
    python bench/gpu_stage_a.py search-args [--cpu-smoke]          # the --set flags of part (a)'s search
    python bench/gpu_stage_a.py measure --betons DIR [--search-run RUN_DIR] [--cpu-smoke] [--skip-compile]

prepare: the CIFAR-10 .beton files: ./betons if it holds them, else written from ./data, else a synthetic
CIFAR-shaped set (bench/synthetic_cifar.py, 50,000 + 10,000 images of 32x32x3) written into DIR/synthetic_betons.
--cpu-smoke always writes a small synthetic set (256 + 32 images).

measure, on the device the machine has (CUDA when present), at the paper's stage-A shape (C=16, 5 cells,
batch 256, 32x32x3; --cpu-smoke: C=4, 2 cells, batch 32):

(b) a stage-A network (one edge expanded to the 7 ops + none, the other 13 edges one op each) per speed
    switch: fp32; bf16 autocast; bf16 + channels_last (the search's CUDA default); bf16 + channels_last +
    torch.compile (inductor; --cpu-smoke: aot_eager). Measured: a train step t and an evaluation batch e
    (steady state, preloaded batches), a snapshot restore r, and with compile the first step and the first
    evaluation after a mask change (each perturb-val candidate is a new mask set, which recompiles). The
    compile variant runs last, in a subprocess limited to what is left of --budget-s: compiling a 5-cell
    network can take minutes, and the table then says it did not finish.
    One stage-A unit of the full protocol (configs/pertnas_cifar10.yaml: E epochs of S steps, n candidates,
    K fine-tune steps, M search-val batches per accuracy; :class:`Protocol`) is projected as
        U = E*S*t + n*(K*t + M*e + r + c) + (M*e + r)         (c: the recompile per candidate, 0 without compile)
(c) the FFCV loader feeding the device (augmented search-train loader, flip + translate 2 + cutout 8):
    images/s over an epoch after a warm-up epoch, and train-step time pulling batches from the loader
    against the same number of steps on batches preloaded on the device.
(d) projected wall time and GPU-hours of the full protocol on 1 and 4 GPUs (the formula is printed with
    the table), from the measured times of the stage-A network and of stage B's (2 ops + none per edge)
    and a discrete cell's networks, under the search's default switches.
(a) is the 1-rank search bench/gpu_check.sh runs with torchrun before this; --search-run reads its
    summary.json into the table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.synthetic_cifar import write_synthetic_betons  # noqa: E402
from data.batch_stream import BatchStream  # noqa: E402
from data.beton import metadata_path, read_metadata, verify_betons, write_dataset  # noqa: E402
from data.errors import DataError  # noqa: E402
from data.loaders import DataConfig, build_loaders  # noqa: E402
from launch.config import load_config  # noqa: E402
from launch.distributed import DistEnv  # noqa: E402
from common.errors import cli_entry  # noqa: E402
from launch.train import evaluate, maybe_compile, to_channels_last, train_step  # noqa: E402
from perturb.config import EvolutionConfig, OptimConfig  # noqa: E402
from perturb.selection import coarse_select, expand_edge, random_cell  # noqa: E402
from perturb.snapshot import Snapshot  # noqa: E402
from perturb.training import make_optimizer  # noqa: E402
from space.ops import NONE_OP, PRIMITIVES  # noqa: E402
from space.search_network import NUM_EDGES, SearchNetwork  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "configs" / "pertnas_cifar10.yaml"
EXPANDED_EDGE = 5  # the stage-A unit measured: edge 5 expanded (node 4's first edge)


@dataclass(frozen=True)
class Shape:
    """Sizes of one mode of the check (the paper's, or the CPU smoke test's)."""

    channels: int
    layers: int
    batch: int
    train_images: int      # synthetic training set
    test_images: int
    warmup: int            # untimed steps after the first
    steps: int             # timed steps per measurement
    eval_batches: int      # timed evaluation batches
    search_subset: int     # part (a): training images of the shrunk search
    loader_workers: int


PAPER = Shape(channels=16, layers=5, batch=256, train_images=50000, test_images=10000, warmup=5, steps=20,
              eval_batches=10, search_subset=4096, loader_workers=8)
SMOKE = Shape(channels=4, layers=2, batch=16, train_images=256, test_images=32, warmup=0, steps=1,
              eval_batches=1, search_subset=128, loader_workers=1)


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    channels_last: bool
    compile: bool


VARIANTS = (Variant("fp32", "fp32", False, False), Variant("bf16", "bf16", False, False),
            Variant("bf16 + channels_last", "bf16", True, False),
            Variant("bf16 + channels_last + compile", "bf16", True, True))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- prepare / search-args ---------------------------------------------------------------------------
def prepare(work: Path, smoke: bool) -> tuple[Path, str]:
    """The .beton folder to use and what it holds ('cifar10' or 'synthetic')."""
    shape = SMOKE if smoke else PAPER
    if not smoke:
        try:
            verify_betons(ROOT / "betons", "cifar10")
            synthetic = read_metadata(ROOT / "betons", "cifar10")["settings"].get("synthetic")
            return ROOT / "betons", "synthetic" if synthetic else "cifar10"
        except DataError:
            pass
        try:
            write_dataset("cifar10", ROOT / "data", work / "betons", log=log)
            return work / "betons", "cifar10"
        except DataError as error:
            log(f"no CIFAR-10 ({error}): writing a synthetic CIFAR-shaped set")
    out = work / "synthetic_betons"
    if not metadata_path(out, "cifar10").is_file():
        write_synthetic_betons(out, shape.train_images, shape.test_images, log=log)
    return out, "synthetic"


def search_sets(smoke: bool) -> list[str]:
    """Part (a): the preset shrunk to one member (14 stage-A units), one epoch per training, K = 4."""
    shape = SMOKE if smoke else PAPER
    sets = ["search.npop=1", f"data.train_subset={shape.search_subset}", f"data.num_workers={shape.loader_workers}",
            "search.finetune_steps=0", "search.val_batches=0", "pictures=false"]
    for stage, extra in zip("abcd", (4, 0, 4, 4)):
        sets += [f"search.stage_{stage}.epochs=1", f"search.stage_{stage}.finetune_extra={extra}"]
    if smoke:
        sets += [f"network.channels={shape.channels}", f"network.layers={shape.layers}",
                 f"data.batch_size={shape.batch}", f"data.eval_batch_size={2 * shape.batch}", "threads=1"]
    return sets


# ---- timing --------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(function: Callable[[], object], calls: int, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    for _ in range(calls):
        function()
    synchronize(device)
    return (time.perf_counter() - started) / max(calls, 1)


def network_for(cell, shape: Shape, device: torch.device, seed: int = 0) -> SearchNetwork:
    torch.manual_seed(seed)
    return SearchNetwork(3, 10, cell, channels=shape.channels, layers=shape.layers).to(device)


def stage_a_cell():
    return expand_edge(random_cell(0, 0, PRIMITIVES), EXPANDED_EDGE, tuple(PRIMITIVES) + (NONE_OP,))


def discrete_cell():
    return random_cell(0, 0, PRIMITIVES)


def stage_b_cell():
    matrix = [[random.Random(f"{e}/{o}").random() for o in PRIMITIVES] for e in range(NUM_EDGES)]
    return coarse_select(matrix, k=2, ops=PRIMITIVES, keep_none=True)


def time_network(cell, variant: Variant, batches: list, shape: Shape, env: DistEnv, compile_backend: str = "inductor",
                 mask_change: bool = False) -> dict:
    """Train step t, evaluation batch e, snapshot restore r (seconds), first calls, and a mask change's cost."""
    device = env.device
    network = network_for(cell, shape, device)
    to_channels_last(network, device, variant.channels_last)
    model = maybe_compile(network, variant.compile, backend=compile_backend)
    optimizer = make_optimizer(network, 0.05, OptimConfig())
    stream = itertools.cycle(batches)
    evaluation = batches[:shape.eval_batches]

    def step():
        images, labels = next(stream)
        train_step(model, images, labels, optimizer, precision=variant.precision)

    def measure():
        evaluate(model, evaluation, env=env, sync=False, precision=variant.precision)

    network.train()
    result = {"first_train_s": seconds_per_call(step, 1, device)}
    seconds_per_call(step, shape.warmup, device)
    result["train_s"] = seconds_per_call(step, shape.steps, device)
    result["first_eval_s"] = seconds_per_call(measure, 1, device)
    result["eval_s"] = seconds_per_call(measure, 2, device) / len(evaluation)
    snapshot = Snapshot.capture(network, optimizer)
    result["restore_s"] = seconds_per_call(snapshot.restore, 3, device)
    if mask_change:  # perturb-val removes one candidate: the first step and evaluation on the new mask set
        network.set_active(EXPANDED_EDGE, PRIMITIVES[0], False)
        first_step = seconds_per_call(step, 1, device)
        first_eval = seconds_per_call(measure, 1, device) / len(evaluation)
        result["mask_change_s"] = max(0.0, first_step - result["train_s"]) + \
            max(0.0, first_eval - result["eval_s"]) * len(evaluation)
        snapshot.restore()
    return result


@dataclass(frozen=True)
class Protocol:
    """The numbers of the full protocol (configs/pertnas_cifar10.yaml) that its cost depends on.

    S: train steps per epoch (CIFAR-10's 50,000 training images, search_portion of them, full batches);
    M: search-val batches per accuracy (val_batches, or 0: the whole split); n: candidate ops per edge;
    K: fine-tune steps per candidate in stages A, C, D; E: training epochs in stages A, B, C, D.
    """

    npop: int
    S: int
    M: int
    n: int
    K: dict
    E: dict

    @classmethod
    def of(cls, config: EvolutionConfig, train_images: int = 50000) -> "Protocol":
        search, data = config.search, config.data
        search_train = round(train_images * data.search_portion)
        eval_batch = data.eval_batch_size or data.batch_size
        M = search.val_batches or math.ceil((train_images - search_train) / eval_batch)
        stages = {"A": search.stage_a, "B": search.stage_b, "C": search.stage_c, "D": search.stage_d}
        return cls(npop=search.npop, S=search_train // data.batch_size, M=M, n=len(search.ops),
                   K={name: search.finetune_budget(stage) for name, stage in stages.items()},
                   E={name: stage.epochs for name, stage in stages.items()})


def unit_seconds(times: dict, p: Protocol) -> float:
    """U = E*S*t + n*(K*t + M*e + r + c) + (M*e + r), the stage-A unit of the full protocol."""
    t, e, r, c = times["train_s"], times["eval_s"], times["restore_s"], times.get("mask_change_s", 0.0)
    return p.E["A"] * p.S * t + p.n * (p.K["A"] * t + p.M * e + r + c) + (p.M * e + r)


# ---- part (c) -----------------------------------------------------------------------------------------
def loader_feed(betons: Path, shape: Shape, env: DistEnv, steps: int) -> dict:
    """FFCV's images/s over an epoch, and the default-switch train step pulling from it vs on preloaded batches."""
    device = env.device
    data = DataConfig(dataset="cifar10", beton_dir=str(betons), backend="ffcv", batch_size=shape.batch,
                      eval_batch_size=shape.batch, translate=2, flip=True, cutout=8, num_workers=shape.loader_workers)
    loader = build_loaders(data, seed=0, device=device).search_train
    for _ in loader:  # warm-up epoch: FFCV compiles its pipeline
        pass
    synchronize(device)
    started, images_seen = time.perf_counter(), 0
    for images, _ in loader:
        images_seen += images.shape[0]
    synchronize(device)
    rate = images_seen / (time.perf_counter() - started)

    network = network_for(stage_a_cell(), shape, device)
    to_channels_last(network, device)
    optimizer = make_optimizer(network, 0.05, OptimConfig())
    network.train()
    with BatchStream(loader) as stream:
        preloaded = list(stream.take(steps))
        for images, labels in preloaded[:2]:  # warm-up (cuDNN autotuning, allocator)
            train_step(network, images, labels, optimizer)
        stream.reset(1)
        batches = iter(preloaded)
        on_preloaded = seconds_per_call(lambda: train_step(network, *next(batches), optimizer), steps, device)
        with_loader = seconds_per_call(lambda: train_step(network, *stream.next_batch(), optimizer), steps, device)
    return {"images_per_s": rate, "epoch_images": images_seen, "step_preloaded_s": on_preloaded,
            "step_with_loader_s": with_loader, "steps": steps}


# ---- part (d) -----------------------------------------------------------------------------------------
def projection(p: Protocol, a: dict, b: dict, b_share: dict, d: dict, d_share: dict, gpus: int) -> dict:
    """Wall seconds of the full protocol on ``gpus`` GPUs (W) from per-step times (see :func:`formula`).

    a, b, d: the stage-A, stage-B and discrete-cell networks at the full batch (stage A's training and every
    perturb-val: fine-tune steps and evaluations run on one GPU each); b_share, d_share: the same at batch
    256 / 4 (DDP training of B-D on 4 GPUs), used when ``gpus`` is 4.
    """
    M, S = p.M, p.S
    train_b, train_d = (b_share["train_s"], d_share["train_s"]) if gpus == 4 else (b["train_s"], d["train_s"])
    mid_train, mid_eval = (b["train_s"] + d["train_s"]) / 2, (b["eval_s"] + d["eval_s"]) / 2  # C: 2 ops -> 1
    stage_a = math.ceil(p.npop / gpus) * NUM_EDGES * unit_seconds(a, p)
    stage_b = p.E["B"] * S * train_b
    stage_c = NUM_EDGES * (math.ceil(2 / gpus) * (p.K["C"] * mid_train + M * mid_eval) + M * mid_eval
                           + p.E["C"] * S * (train_b + train_d) / 2)
    stage_d = sum(math.ceil(inputs / gpus) * (p.K["D"] * d["train_s"] + M * d["eval_s"]) + M * d["eval_s"]
                  for inputs in (3, 4, 5)) + 2 * p.E["D"] * S * train_d
    total = stage_a + stage_b + stage_c + stage_d
    return {"gpus": gpus, "stage_s": {"A": stage_a, "B": stage_b, "C": stage_c, "D": stage_d}, "wall_h": total / 3600,
            "gpu_hours": gpus * total / 3600}


def formula(p: Protocol) -> str:
    """The projection's formula, with the protocol's numbers."""
    return f"""GPU-hours = W x wall(W), wall(W) = A + B + C + D, with S = {p.S} train steps per epoch (batch 256),
E = {p.E['A']}, n = {p.n}, M = {p.M} search-val batches per accuracy, K = {p.K['A']} / {p.K['C']} / {p.K['D']} fine-tune
steps (stages A / C / D), t / e / r = train step / eval batch / snapshot restore of the stage's network:
  A = ceil(npop / W) * 14 * U,  U = E*S*t_A + n*(K_A*t_A + M*e_A + r + c) + (M*e_A + r)   (members in parallel;
      c: the recompile per mask change, compile only)
  B = E*S*t_B(256/W)                                                    (DDP: each GPU a 1/W share of the batch)
  C = 14 * [ceil(2/W)*(K_C*t_C + M*e_C) + M*e_C + E*S*t_C(256/W)],  t_C = (t_B + t_discrete) / 2
  D = sum over nodes with 3, 4, 5 inputs of [ceil(i/W)*(K_D*t_d + M*e_d) + M*e_d] + 2*E*S*t_d(256/W)
DDP's gradient all-reduce and the per-decision checkpoints are not counted (one GPU cannot measure them)."""


# ---- the table ------------------------------------------------------------------------------------------
def search_row(run_dir: Path | None) -> tuple[str, str]:
    if run_dir is None or not (run_dir / "summary.json").is_file():
        return "(a) 1-rank search, 14 stage-A units", "not run (no --search-run)"
    summary = json.loads((run_dir / "summary.json").read_text())
    config, stages = summary["config"], summary["stage_seconds"]
    backend = "NCCL" if summary["device"] == "cuda" else "gloo"
    units = config["search"]["npop"] * NUM_EDGES
    return (f"(a) 1-rank {backend} search ({summary['device']}), {units} stage-A units, "
            f"C={config['network']['channels']}, {config['network']['layers']} cells, "
            f"batch {config['data']['batch_size']}, {config['data']['train_subset']} images, 1 epoch, K=4",
            f"stage A {stages['A']:.1f} s = {stages['A'] / units:.2f} s/unit; B-D {sum(stages[s] for s in 'BCD'):.1f} s;"
            f" whole run {summary['wall_time_s']:.1f} s")


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(what) for what, _ in rows)
    print(f"| {'measurement':<{width}} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for what, value in rows:
        print(f"| {what:<{width}} | {value} |")


def setting(args: argparse.Namespace) -> tuple[Shape, DistEnv, list]:
    """The mode's shape, a world-of-one env on the device, and batches preloaded on it from the FFCV loader."""
    shape = SMOKE if args.cpu_smoke else PAPER
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=device, backend=None)
    data = DataConfig(dataset="cifar10", beton_dir=str(args.betons), backend="ffcv", batch_size=shape.batch,
                      eval_batch_size=shape.batch, translate=2, flip=True, cutout=8, num_workers=shape.loader_workers)
    with BatchStream(build_loaders(data, seed=0, device=device).search_train) as stream:
        batches = list(stream.take(shape.warmup + shape.steps + 1))
    return shape, env, batches


def compile_variant(args: argparse.Namespace) -> dict:
    """The torch.compile variant alone (run in a subprocess with a time limit: compiling can take minutes)."""
    shape, env, batches = setting(args)
    backend = "aot_eager" if args.cpu_smoke else "inductor"
    result = time_network(stage_a_cell(), VARIANTS[-1], batches, shape, env, backend, mask_change=True)
    Path(args.json).write_text(json.dumps(result))
    return result


def compile_in_subprocess(args: argparse.Namespace, limit_s: float) -> dict | str:
    """compile_variant's figures, or why there are none (failed, or not finished within ``limit_s``)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "compile.json"
        command = [sys.executable, str(Path(__file__).resolve()), "compile-variant", "--betons", str(args.betons),
                   "--json", str(out)] + (["--cpu-smoke"] if args.cpu_smoke else [])
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s)
        except subprocess.TimeoutExpired:
            return f"not measured: compiling did not finish within the {limit_s:.0f} s left of the 8-minute budget"
        if done.returncode != 0 or not out.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return f"failed (exit {done.returncode}): {last[:200]}"
        return json.loads(out.read_text())


def measure(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    shape, env, batches = setting(args)
    device = env.device
    protocol = Protocol.of(load_config(EvolutionConfig, PROTOCOL))

    times: dict[str, dict | str] = {}
    for variant in VARIANTS[:-1]:
        log(f"(b) stage-A network, {variant.name} ...")
        times[variant.name] = time_network(stage_a_cell(), variant, batches, shape, env)
    log("(c) FFCV loader feeding the device ...")
    feed = loader_feed(Path(args.betons), shape, env, steps=shape.steps)
    log("(d) stage B and discrete-cell networks ...")
    default = VARIANTS[2] if device.type == "cuda" else VARIANTS[0]  # what the search runs on this device
    quarter = [(x[:max(1, shape.batch // 4)], y[:max(1, shape.batch // 4)]) for x, y in batches]
    b, d, b4, d4 = (time_network(cell(), default, sample, shape, env)
                    for sample in (batches, quarter) for cell in (stage_b_cell, discrete_cell))
    projections = [projection(protocol, times[default.name], b, b4, d, d4, gpus) for gpus in (1, 4)]
    compiled = VARIANTS[-1].name
    if args.skip_compile:
        times[compiled] = "not measured (--skip-compile)"
    else:
        log(f"(b) stage-A network, {compiled} (a subprocess, at most the budget's remaining time) ...")
        times[compiled] = compile_in_subprocess(args, max(30.0, args.budget_s - (time.perf_counter() - started)))

    rows = [search_row(Path(args.search_run) if args.search_run else None)]
    for name, result in times.items():
        if isinstance(result, str):
            rows.append((f"(b) stage-A unit, {name}", result))
            continue
        unit = unit_seconds(result, protocol)
        extra = ""
        if "mask_change_s" in result:
            extra = (f"; first step + eval {result['first_train_s']:.1f} + {result['first_eval_s']:.1f} s, "
                     f"recompile per mask change {result['mask_change_s']:.1f} s")
        rows.append((f"(b) stage-A unit, {name}",
                     f"train step {1e3 * result['train_s']:.1f} ms, eval batch {1e3 * result['eval_s']:.1f} ms, "
                     f"restore {1e3 * result['restore_s']:.1f} ms{extra} -> full unit {unit / 60:.1f} min"))
    rows.append(("(c) FFCV loader (flip, translate 2, cutout 8) -> " + device.type,
                 f"{feed['images_per_s']:,.0f} images/s; train step {1e3 * feed['step_with_loader_s']:.1f} ms with "
                 f"the loader vs {1e3 * feed['step_preloaded_s']:.1f} ms on preloaded batches "
                 f"({feed['step_with_loader_s'] / feed['step_preloaded_s']:.2f}x)"))
    for result in projections:
        stages = ", ".join(f"{s} {v / 3600:.2f} h" for s, v in result["stage_s"].items())
        where = f"{result['gpus']} GPU{'s' if result['gpus'] > 1 else ''}" if device.type == "cuda" else \
            f"{result['gpus']} CPU process{'es' if result['gpus'] > 1 else ''} (smoke: the formula's code path only)"
        rows.append((f"(d) full pertnas_cifar10 protocol on {where}, {default.name}",
                     f"wall {result['wall_h']:.2f} h ({stages}) = {result['gpu_hours']:.2f} GPU-hours"))
    device_name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"\nGPU check: C={shape.channels}, {shape.layers} cells, batch {shape.batch}, 32x32x3 {args.data_label} data, "
          f"device {device.type}{device_name}; (b)-(d) measured "
          f"in {time.perf_counter() - started:.0f} s\n")
    print_table(rows)
    print("\n" + formula(protocol))
    record = {"shape": shape.__dict__, "device": device.type, "data": args.data_label, "stage_a": times,
              "protocol": protocol.__dict__,
              "stage_b": b, "discrete": d, "stage_b_quarter_batch": b4, "discrete_quarter_batch": d4,
              "loader": feed, "projection": projections, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return record


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu_stage_a.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("prepare", "search-args", "measure", "compile-variant"))
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (what the tests run)")
    parser.add_argument("--work", type=Path, help="prepare: folder for written data")
    parser.add_argument("--betons", type=Path, help="measure: the .beton folder (from prepare)")
    parser.add_argument("--data-label", default="synthetic", help="measure: what the betons hold (from prepare)")
    parser.add_argument("--search-run", help="measure: part (a)'s run directory (its summary.json goes in the table)")
    parser.add_argument("--skip-compile", action="store_true", help="measure: leave out the torch.compile variant")
    parser.add_argument("--json", help="measure: also write every figure to this JSON file")
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="measure: seconds (b)-(d) may take; the compile variant gets what is left (default 360)")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "prepare":
        if args.work is None:
            raise DataError("prepare needs --work DIR")
        betons, label = prepare(args.work, args.cpu_smoke)
        print(betons, label)
    elif args.command == "search-args":
        print(" ".join(f"--set {item}" for item in search_sets(args.cpu_smoke)))
    else:
        if args.betons is None:
            raise DataError(f"{args.command} needs --betons DIR (from: bench/gpu_stage_a.py prepare)")
        if args.command == "compile-variant" and not args.json:
            raise DataError("compile-variant needs --json FILE")
        (measure if args.command == "measure" else compile_variant)(args)


if __name__ == "__main__":
    main()
