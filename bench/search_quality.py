"""Does the search find better cells than chance? Searched cells against random cells, retrained alike.

    python bench/search_quality.py --out runs/quality                     # default budget (<= 90 min, 2 cores)
    python bench/search_quality.py --quick --out runs/quality_quick       # <= 15 min
    python bench/search_quality.py --out DIR --methods evolutionary darts_pt --genotypes mine.json --jobs 2

1. Cells. The evolutionary search (search_evolutionary.py) runs once per seed of ``--seeds``; ``--methods``
   adds the supernet searches (search_supernet.py --method darts | darts_pt | pertnas). ``--random N``
   valid single cells are drawn by a generator seeded with ``--random-seed`` (per node two distinct inputs
   and two ops, uniform), anew for every comparison: nothing is tuned to a fixed set of random cells.
   DARTS_V2 and every genotype of ``--genotypes FILE`` (a JSON object: name -> genotype in the project's
   genotype JSON format) are added as "given" cells.
2. Retraining. Every cell is retrained from scratch by train_eval.py with ONE preset (``--eval-config``,
   default configs/eval_quick.yaml), the same budget (``--eval-epochs``) and the same seed, on the same
   training images; the test error is the final model's error on the whole test split. ``--jobs N``
   runs N processes at a time (one torch thread each).
3. Report. Test error per cell, the searched cells' mean +- std, the random cells' median, and each
   searched cell's rank among the random ones (1 = better than every random cell). OUT/search_quality.json
   holds {"cells": {name: {"kind", "test_error", "genotype"}}, "searched_mean", "random_median", ...};
   OUT/search_quality.png is a strip plot. Every run directory stays under OUT, named by the cell and the
   settings (a rerun reuses a finished search or retraining only when both are the same).

Data: a seeded 5,000-image subset of MNIST (../shared/datasets/mnist) when present, else scikit-learn's
digits; the searches and the retrainings use the same subset. ``--quick`` uses digits, smaller searches
and 10 retraining epochs of its 1,438 images.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "datasets" / "mnist"
SUBSET_SEED = 0  # which images make the 5,000-image subset

# The searches' budgets, as --set overrides of their quick presets (configs/quickstart.yaml and
# configs/supernet_quick.yaml). "mnist": the default comparison; "digits": --quick and machines without MNIST.
# mnist: one pass over the 2,500 search-train images per stage-A network (39 steps of 64), K = 4 fine-tuning
# steps, 512 search-val images per accuracy, a 4-channel 3-cell network: about 25 minutes per search on one core.
EVOLUTIONARY = {
    "mnist": ["network.channels=4", "network.layers=3", "data.batch_size=64", "data.eval_batch_size=64",
              "search.score=loss", "search.finetune_steps=4", "search.val_batches=8", "search.calibration_batches=2",
              "search.stage_a.epochs=1", "search.stage_b.epochs=2", "search.stage_c.finetune_extra=0",
              "search.stage_d.finetune_extra=0"],
    "digits": [],
}
SUPERNET = {"mnist": ["network.channels=8", "data.batch_size=64", "data.eval_batch_size=128", "epochs=4"],
            "digits": []}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for every run and the report")
    parser.add_argument("--quick", action="store_true", help="digits, small searches, 10 retraining epochs (<= 15 min)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds (default 0 1 2)")
    parser.add_argument("--methods", nargs="+", default=["evolutionary"],
                        choices=("evolutionary", "darts", "darts_pt", "pertnas"),
                        help="searches to run for every seed (default: evolutionary)")
    parser.add_argument("--random", type=int, default=8, help="random valid cells to draw (default 8)")
    parser.add_argument("--random-seed", type=int, default=0, help="seed of the random cells (default 0)")
    parser.add_argument("--genotypes", type=Path, help="JSON object name -> genotype: extra 'given' cells")
    parser.add_argument("--dataset", choices=("auto", "mnist", "digits"), default="auto",
                        help="auto: MNIST from ../shared/datasets/mnist when present (digits with --quick)")
    parser.add_argument("--subset", type=int, default=5000, help="MNIST training images used (default 5000)")
    parser.add_argument("--eval-config", type=Path, default=ROOT / "configs" / "eval_quick.yaml",
                        help="the ONE train_eval.py preset every cell is retrained with")
    parser.add_argument("--eval-epochs", type=int, help="retraining epochs (default 3; 10 with --quick)")
    parser.add_argument("--eval-seed", type=int, default=0, help="the retraining seed, the same for every cell")
    parser.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra --set for every evolutionary search (repeatable)")
    parser.add_argument("--supernet-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra --set for every supernet search (repeatable)")
    parser.add_argument("--eval-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra --set for every retraining (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time, one thread each (default 2)")
    return parser


def random_genotypes(count: int, seed: int) -> dict:
    """``count`` valid single cells: per node k (2..5) two distinct inputs of 0..k-1, each with a uniform op."""
    from space.genotype import Genotype
    from space.ops import PRIMITIVES

    generator = random.Random(f"search-quality/{seed}")
    cells = {}
    for index in range(count):
        genes = []
        for node in range(2, 6):
            for source in sorted(generator.sample(range(node), 2)):
                genes.append((generator.choice(PRIMITIVES), source))
        cells[f"random_{index}"] = Genotype.single(genes)
    return cells


def given_genotypes(path: Path | None) -> dict:
    from space.genotype import Genotype, builtin_genotype

    cells = {"DARTS_V2": builtin_genotype("DARTS_V2")}
    if path is not None:
        mapping = json.loads(path.read_text())
        if not isinstance(mapping, dict):
            raise SystemExit(f"error: {path} must hold a JSON object mapping names to genotypes")
        for name, data in mapping.items():
            cells[str(name)] = Genotype.from_dict(data)
    return cells


class Pool:
    """At most ``jobs`` subprocesses at a time; ``run`` queues a command, ``wait`` runs them all."""

    def __init__(self, jobs: int):
        self.jobs, self.queue = max(1, jobs), []

    def add(self, name: str, command: list[str], log: Path) -> None:
        self.queue.append((name, command, log))

    def wait(self) -> dict[str, int]:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        running, codes, pending = {}, {}, list(self.queue)
        self.queue = []
        while pending or running:
            while pending and len(running) < self.jobs:
                name, command, log = pending.pop(0)
                log.parent.mkdir(parents=True, exist_ok=True)
                handle = log.open("w")
                running[name] = (subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                                  env=env), handle, time.time())
                print(f"  started {name}", flush=True)
            time.sleep(0.5)
            for name, (process, handle, started) in list(running.items()):
                if process.poll() is not None:
                    handle.close()
                    codes[name] = process.returncode
                    print(f"  finished {name} ({'ok' if process.returncode == 0 else 'FAILED'}, "
                          f"{time.time() - started:.0f}s)", flush=True)
                    del running[name]
        return codes


def settings_tag(*parts) -> str:
    """8 hex digits of SHA-256 over ``parts`` (JSON): run folders are named by what they compute, so a rerun
    into the same --out reuses a result only when its cell and settings are the same."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def search_folder(method: str, seed: int, data: list[str], budget: str, args) -> str:
    overrides = EVOLUTIONARY[budget] + list(args.search_set) if method == "evolutionary" else \
        SUPERNET[budget] + list(args.supernet_set)
    preset = ROOT / "configs" / ("quickstart.yaml" if method == "evolutionary" else "supernet_quick.yaml")
    return f"{method}-seed{seed}-{settings_tag(data, overrides, preset.read_text())}"


def search_command(method: str, seed: int, data: list[str], budget: str, out: Path, args) -> list[str]:
    common = [f"--set=seed={seed}", f"--set=save={out / 'search'}",
              f"--set=note={search_folder(method, seed, data, budget, args)}",
              "--set=pictures=false", "--set=threads=1"] + [f"--set={item}" for item in data]
    if method == "evolutionary":
        overrides = EVOLUTIONARY[budget] + list(args.search_set)
        return [sys.executable, "search_evolutionary.py", "--config", "configs/quickstart.yaml", *common,
                *(f"--set={item}" for item in overrides)]
    overrides = SUPERNET[budget] + list(args.supernet_set)
    return [sys.executable, "search_supernet.py", "--config", "configs/supernet_quick.yaml", "--method", method,
            *common, *(f"--set={item}" for item in overrides)]


def strip_plot(cells: dict, path: Path) -> None:
    """Test error per cell, one column per kind (PIL; no plotting library needed)."""
    from PIL import Image, ImageDraw

    kinds = ["searched", "random", "given"]
    errors = [c["test_error"] for c in cells.values() if c["test_error"] is not None]
    if not errors:
        return
    low, high = min(errors), max(errors)
    span = max(high - low, 1e-6)
    width, height, margin = 640, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y_of = lambda e: margin + (height - 2 * margin) * (1 - (e - low) / span)  # noqa: E731 (low error = high)
    for tick in range(5):
        e = low + span * tick / 4
        draw.line([(margin, y_of(e)), (width - 20, y_of(e))], fill=(225, 225, 225))
        draw.text((5, y_of(e) - 6), f"{e:.2f}%", fill="black")
    colours = {"searched": (200, 40, 40), "random": (90, 90, 90), "given": (40, 90, 200)}
    for column, kind in enumerate(kinds):
        x = margin + 40 + column * (width - 2 * margin - 40) // 2
        draw.text((x - 25, height - margin + 15), kind, fill=colours[kind])
        members = sorted((c["test_error"], name) for name, c in cells.items()
                         if c["kind"] == kind and c["test_error"] is not None)
        for offset, (error, name) in enumerate(members):
            dx = (offset % 3 - 1) * 12
            draw.ellipse([x + dx - 5, y_of(error) - 5, x + dx + 5, y_of(error) + 5], fill=colours[kind])
            if kind != "random":
                draw.text((x + dx + 8, y_of(error) - 6), name, fill=colours[kind])
    draw.text((margin, 15), "test error (%) after identical retraining; lower is better", fill="black")
    image.save(path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    mnist = not args.quick and (args.dataset == "mnist" or (args.dataset == "auto" and MNIST_DIR.is_dir()))
    if args.dataset == "mnist" and not MNIST_DIR.is_dir():
        raise SystemExit(f"error: --dataset mnist needs {MNIST_DIR}")
    budget = "mnist" if mnist else "digits"
    data = (["data.dataset=mnist", "data.backend=memory", f"data.data_dir={MNIST_DIR}",
             f"data.train_subset={args.subset}", f"data.train_subset_seed={SUBSET_SEED}"] if mnist
            else ["data.dataset=digits", "data.backend=memory"])
    eval_epochs = args.eval_epochs or (10 if args.quick else 3)

    # 1. cells, 2. retraining with ONE preset and budget for all. The random and given cells are retrained
    # while the searches run, so that every core is busy; the searched cells once their searches end.
    pool = Pool(args.jobs)
    searches = [(method, seed) for method in args.methods for seed in args.seeds]
    for method, seed in searches:
        name = f"{method}-seed{seed}"
        if not (out / "search" / search_folder(method, seed, data, budget, args) / "genotype.json").is_file():
            pool.add(name, search_command(method, seed, data, budget, out, args), out / "logs" / f"{name}.log")
    cells = {name: ("random", g) for name, g in random_genotypes(args.random, args.random_seed).items()}
    cells.update({name: ("given", g) for name, g in given_genotypes(args.genotypes).items()})
    eval_data = (["data.dataset=mnist", f"data.data_dir={MNIST_DIR}", f"data.train_subset={args.subset}",
                  f"data.train_subset_seed={SUBSET_SEED}"] if mnist else ["data.dataset=digits"])

    def eval_folder(name: str) -> Path:
        settings = (cells[name][1].to_dict(), eval_data, args.eval_config.read_text(), eval_epochs, args.eval_seed,
                    args.eval_set)
        return out / "eval" / f"{name}-{settings_tag(*settings)}"

    def retrain(names) -> None:
        for name in names:
            run_dir = eval_folder(name)
            if (run_dir / "report.json").is_file():
                continue
            path = cells[name][1].to_json(out / "genotypes" / f"{name}.json", name=name)
            overrides = eval_data + [f"seed={args.eval_seed}", "threads=1"] + list(args.eval_set)
            pool.add(f"retrain {name}", [sys.executable, "train_eval.py", str(path), "--config", str(args.eval_config),
                                         "--epochs", str(eval_epochs), "--run-dir", str(run_dir),
                                         *(f"--set={item}" for item in overrides)], out / "logs" / f"eval_{name}.log")

    retrain(list(cells))
    print(f"{len(searches)} search(es) ({budget} budget) and {len(cells)} retraining(s) of {eval_epochs} epoch(s), "
          f"{args.jobs} at a time", flush=True)
    failed = [name for name, code in pool.wait().items() if code != 0]
    if failed:
        raise SystemExit(f"error: failed: {', '.join(failed)}; see {out / 'logs'}")

    from space.genotype import Genotype

    searched = {f"{method}-seed{seed}": ("searched", Genotype.from_json(
        out / "search" / search_folder(method, seed, data, budget, args) / "genotype.json")) for method, seed in searches}
    cells = {**searched, **cells}
    retrain(list(searched))
    failed = [name for name, code in pool.wait().items() if code != 0]
    if failed:
        raise SystemExit(f"error: retraining failed: {', '.join(failed)}; see {out / 'logs'}")

    # 3. report
    record = {"cells": {}}
    for name, (kind, genotype) in cells.items():
        report = json.loads((eval_folder(name) / "report.json").read_text())
        record["cells"][name] = {"kind": kind, "test_error": report["test"]["final_error"],
                                 "genotype": genotype.to_dict(name=name), "params_m": report.get("params_m")}
    by_kind = {kind: [c["test_error"] for c in record["cells"].values() if c["kind"] == kind]
               for kind in ("searched", "random", "given")}
    random_errors = sorted(by_kind["random"])
    record["searched_mean"] = statistics.fmean(by_kind["searched"]) if by_kind["searched"] else None
    record["searched_std"] = statistics.stdev(by_kind["searched"]) if len(by_kind["searched"]) > 1 else 0.0
    record["random_median"] = statistics.median(random_errors) if random_errors else None
    record["ranks_among_random"] = {name: 1 + sum(e < c["test_error"] for e in random_errors)
                                    for name, c in record["cells"].items() if c["kind"] == "searched"}
    record["settings"] = {"dataset": "mnist" if mnist else "digits", "subset": args.subset if mnist else None,
                          "eval_config": str(args.eval_config), "eval_epochs": eval_epochs,
                          "eval_seed": args.eval_seed, "seeds": args.seeds, "methods": args.methods,
                          "random": args.random, "random_seed": args.random_seed, "quick": args.quick,
                          "search_overrides": EVOLUTIONARY[budget] + list(args.search_set)}
    record["wall_time_s"] = round(time.time() - started, 1)
    (out / "search_quality.json").write_text(json.dumps(record, indent=1))
    strip_plot(record["cells"], out / "search_quality.png")

    print(f"\n{'cell':<24}{'kind':<10}{'test error %':>13}{'params M':>10}")
    for name, cell in sorted(record["cells"].items(), key=lambda item: item[1]["test_error"]):
        print(f"{name:<24}{cell['kind']:<10}{cell['test_error']:>13.2f}{cell['params_m'] or 0:>10.3f}")
    searched_line = (f"searched: mean {record['searched_mean']:.2f} +- {record['searched_std']:.2f}% over "
                     f"{len(by_kind['searched'])} search(es)" if by_kind["searched"] else "searched: none")
    random_line = (f"random: median {record['random_median']:.2f}% (range {random_errors[0]:.2f}-"
                   f"{random_errors[-1]:.2f}) over {len(random_errors)} cells" if random_errors else "random: none")
    print(f"\n{searched_line}; {random_line}")
    for name, rank in record["ranks_among_random"].items():
        print(f"  {name}: rank {rank} among {len(random_errors) + 1} ({rank - 1} random cell(s) better)")
    print(f"wrote {out / 'search_quality.json'} and {out / 'search_quality.png'} ({record['wall_time_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
