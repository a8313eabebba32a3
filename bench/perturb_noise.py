"""How repeatable are perturb-val scores? The published measurement against the fair ones, side by side.

    python bench/perturb_noise.py                       # MNIST subset when ../shared is there, else digits
    python bench/perturb_noise.py --units 8 --out noise.json

For each of ``--units`` stage-A units (a member's random cell with one edge expanded to every op + none),
the network is trained once, exactly as the search trains it. Then, for every measurement below, its 7
candidates are scored TWICE, with independent fine-tuning batches and RNG seeds (the same trained weights,
the same fixed search-val samples). Per measurement it prints:

- spearman: the mean over units of Spearman's rank correlation of op importance between the two scorings
  (1 = the same order both times; 0 = unrelated);
- |ds|: the mean absolute difference of the same op's score between the two scorings (points);
- SE: the mean paired standard error of a score (points), from one scoring;
- ref: the mean reference accuracy a_ref; top parameter-free: the share of scorings whose most important
  op is a pool or skip_connect;
- spearman(loss): the same rank correlation for the per-sample cross-entropy change.

Measurements: ``published`` (eval-mode BN with running statistics, reference not fine-tuned: PertNAS),
``recalibrate`` and ``batch`` (perturb/measure.py; reference fine-tuned like the candidates), and
``recalibrate-nobase`` (recalibrated, reference not fine-tuned: is the fine-tuned baseline needed?).
The default budget is the small MNIST search of the search-quality issue (C=8, 3 cells, 2 epochs on
1,000 images, K=4, 6 search-val batches of 64). Scores are in the units of the config's ``search.score``
(quickstart.yaml: ``loss``, nats per sample; ``top1``: points).

``--layouts``: what the memory format (the ``channels_last`` config key) does to the scores, instead of
the table above. Each unit is trained and scored twice from the same seed, once channels_last and once
contiguous (the same batches and fine-tuning seeds; only float rounding differs), and the channels_last
network is scored a second time with other fine-tuning seeds: the layout's effect (spearman, |ds|, the
same most important op) is printed beside the scoring noise it should be compared with.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "datasets" / "mnist"
PARAMETER_FREE = {"max_pool_3x3", "avg_pool_3x3", "skip_connect"}
# name -> (search.measurement, search.baseline)
MEASUREMENTS = {"published": ("running", False), "recalibrate": ("recalibrate", True), "batch": ("batch", True),
                "recalibrate-nobase": ("recalibrate", False)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--units", type=int, default=6, help="stage-A units (member, edge) to score (default 6)")
    parser.add_argument("--dataset", choices=("auto", "mnist", "digits"), default="auto",
                        help="auto: the MNIST subset from ../shared/datasets/mnist when present, else digits")
    parser.add_argument("--train-subset", type=int, default=2000, help="MNIST images (half search-train)")
    parser.add_argument("--val-batches", type=int, help="search-val batches per accuracy (default: 6 of 64 on "
                                                        "MNIST, 3 of 128 on digits)")
    parser.add_argument("--finetune-steps", type=int, default=4, help="K, fine-tuning steps per candidate")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of each stage-A network")
    parser.add_argument("--measurements", nargs="+", choices=sorted(MEASUREMENTS), default=list(MEASUREMENTS),
                        help="which measurements to compare (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search config and of the unit choice")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--layouts", action="store_true",
                        help="measure channels_last against contiguous for the first of --measurements "
                             "(module docstring) instead of the repeatability table")
    return parser


def search_config(args: argparse.Namespace, run_dir: Path):
    from launch.config import load_config
    from perturb.config import EvolutionConfig

    mnist = args.dataset == "mnist" or (args.dataset == "auto" and MNIST_DIR.is_dir())
    args.val_batches = args.val_batches or (6 if mnist else 3)
    overrides = [f"seed={args.seed}", f"save={run_dir}", "pictures=false", f"threads={args.threads}",
                 f"search.val_batches={args.val_batches}", f"search.finetune_steps={args.finetune_steps}",
                 f"search.stage_a.epochs={args.epochs}", "search.stage_a.finetune_extra=0"]
    if mnist:
        overrides += ["data.dataset=mnist", "data.backend=memory", f"data.data_dir={MNIST_DIR}",
                      f"data.train_subset={args.train_subset}", "data.batch_size=64", "data.eval_batch_size=64",
                      "network.channels=8", "network.layers=3"]
    return load_config(EvolutionConfig, ROOT / "configs" / "quickstart.yaml", overrides), ("mnist" if mnist else "digits")


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic
    return float(value) if value == value else 0.0  # constant scores: no order at all


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from launch.distributed import init_distributed, shutdown_distributed
    from perturb.runtime import SearchRuntime, build_search_loaders
    from perturb.scoring import Candidate
    from perturb.selection import expand_edge, random_cell
    from space.ops import NONE_OP
    from space.search_network import NUM_EDGES

    torch.set_num_threads(args.threads)
    if args.layouts:
        return layout_effect(args)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, dataset = search_config(args, Path(tmp))
        env = init_distributed(device="cpu")
        member_loaders, ddp_loaders = build_search_loaders(cfg.data, env, cfg.seed)
        search = cfg.search
        chooser = random.Random(f"perturb-noise/{args.seed}")
        units = chooser.sample([(m, e) for m in range(search.npop) for e in range(NUM_EDGES)], args.units)
        runtimes = {}
        for name in args.measurements:
            measurement, baseline = MEASUREMENTS[name]
            variant = dataclasses.replace(cfg, search=dataclasses.replace(search, measurement=measurement,
                                                                          baseline=baseline))
            runtimes[name] = SearchRuntime(variant, env, member_loaders, ddp_loaders, Path(tmp))
        trainer = next(iter(runtimes.values()))
        rows = {name: [] for name in args.measurements}
        for index, (member, edge) in enumerate(units):
            key = f"A/m{member}/e{edge}"
            cell = expand_edge(random_cell(cfg.seed, member, search.ops), edge, tuple(search.ops) + (NONE_OP,))
            network = trainer.new_network(cell, key)
            optimizer = trainer.train(network, search.stage_a, key=key, distributed=False, tag=key)
            candidates = [Candidate(edge, op) for op in search.ops]
            for name, runtime in runtimes.items():
                first, second = (runtime.score(network, optimizer, candidates, search.stage_a, key=f"{key}/rep{r}",
                                               shard=False, tag=f"{key} {name} #{r}") for r in (1, 2))
                rows[name].append({
                    "unit": key, "scores": [first.scores, second.scores],
                    "spearman": spearman(first.scores, second.scores),
                    "spearman_loss": spearman(first.loss_changes, second.loss_changes),
                    "abs_diff": statistics.fmean(abs(a - b) for a, b in zip(first.scores, second.scores)),
                    "se": statistics.fmean(first.standard_errors), "reference": first.reference,
                    "top_parameter_free": [search.ops[min(range(len(r.scores)), key=r.scores.__getitem__)]
                                           in PARAMETER_FREE for r in (first, second)]})
            print(f"unit {index + 1}/{len(units)} ({key}) done, {time.time() - started:.0f}s", file=sys.stderr)
        shutdown_distributed()
    summary = {}
    print(f"\nperturb-val repeatability on {dataset}: {len(units)} stage-A units, K={search.finetune_steps}, "
          f"{args.val_batches} search-val batches of {cfg.data.eval_batch_size}, two scorings per unit with "
          f"independent fine-tuning batches and seeds ({time.time() - started:.0f}s)")
    unit = "pts" if search.score == "top1" else "nats"
    print(f"{'measurement':<20}{'spearman':>10}{'|ds| ' + unit:>10}{'SE ' + unit:>9}{'ref %':>8}"
          f"{'top param-free':>16}{'spearman(loss)':>16}")
    for name, unit_rows in rows.items():
        tops = [flag for row in unit_rows for flag in row["top_parameter_free"]]
        summary[name] = {key: statistics.fmean(row[key] for row in unit_rows)
                         for key in ("spearman", "spearman_loss", "abs_diff", "se", "reference")}
        summary[name]["top_parameter_free"] = sum(tops) / len(tops)
        s = summary[name]
        print(f"{name:<20}{s['spearman']:>10.2f}{s['abs_diff']:>10.3f}{s['se']:>9.3f}{s['reference']:>8.1f}"
              f"{s['top_parameter_free']:>16.0%}{s['spearman_loss']:>16.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"dataset": dataset, "units": units, "summary": summary, "rows": rows},
                                       indent=1))
    return 0


def layout_effect(args: argparse.Namespace) -> int:
    """--layouts (module docstring): channels_last against contiguous, beside the scoring noise."""
    from launch.distributed import init_distributed, shutdown_distributed
    from perturb.runtime import SearchRuntime, build_search_loaders
    from perturb.scoring import Candidate
    from perturb.selection import expand_edge, random_cell
    from space.ops import NONE_OP
    from space.search_network import NUM_EDGES

    started = time.time()
    name = args.measurements[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg, dataset = search_config(args, Path(tmp))
        measurement, baseline = MEASUREMENTS[name]
        search = dataclasses.replace(cfg.search, measurement=measurement, baseline=baseline)
        env = init_distributed(device="cpu")
        member_loaders, ddp_loaders = build_search_loaders(cfg.data, env, cfg.seed)
        runtimes = {layout: SearchRuntime(dataclasses.replace(cfg, search=search, channels_last=layout == "channels_last"),
                                          env, member_loaders, ddp_loaders, Path(tmp))
                    for layout in ("channels_last", "contiguous")}
        chooser = random.Random(f"perturb-noise/{args.seed}")
        units = chooser.sample([(m, e) for m in range(search.npop) for e in range(NUM_EDGES)], args.units)
        for index, (member, edge) in enumerate(units):
            key = f"A/m{member}/e{edge}"
            cell = expand_edge(random_cell(cfg.seed, member, search.ops), edge, tuple(search.ops) + (NONE_OP,))
            candidates = [Candidate(edge, op) for op in search.ops]
            scores = {}
            for layout, runtime in runtimes.items():
                network = runtime.new_network(cell, key)
                optimizer = runtime.train(network, search.stage_a, key=key, distributed=False, tag=f"{key} {layout}")
                repeats = (1, 2) if layout == "channels_last" else (1,)
                for r in repeats:
                    scores[layout, r] = runtime.score(network, optimizer, candidates, search.stage_a,
                                                      key=f"{key}/rep{r}", shard=False, tag=f"{key} {layout} #{r}").scores
            top = {k: search.ops[min(range(len(v)), key=v.__getitem__)] for k, v in scores.items()}
            pairs = {"layout": (("channels_last", 1), ("contiguous", 1)), "noise": (("channels_last", 1), ("channels_last", 2))}
            rows.append({"unit": key, "scores": {f"{k[0]}#{k[1]}": v for k, v in scores.items()},
                         **{f"{what}_{stat}": value for what, (a, b) in pairs.items() for stat, value in (
                             ("spearman", spearman(scores[a], scores[b])),
                             ("abs_diff", statistics.fmean(abs(x - y) for x, y in zip(scores[a], scores[b]))),
                             ("same_top", float(top[a] == top[b])))}})
            print(f"unit {index + 1}/{len(units)} ({key}) done, {time.time() - started:.0f}s", file=sys.stderr)
        shutdown_distributed()
    unit = "pts" if search.score == "top1" else "nats"
    print(f"\nchannels_last against contiguous on {dataset}, measurement {name}, score {search.score}: {len(units)} "
          f"stage-A units, K={search.finetune_steps} ({time.time() - started:.0f}s)")
    print(f"{'pair':<44}{'spearman':>10}{'|ds| ' + unit:>11}{'same top op':>13}")
    summary = {}
    for what, label in (("layout", "channels_last vs contiguous (same seeds)"),
                        ("noise", "channels_last twice (other fine-tune seeds)")):
        summary[what] = {stat: statistics.fmean(row[f"{what}_{stat}"] for row in rows)
                         for stat in ("spearman", "abs_diff", "same_top")}
        s = summary[what]
        print(f"{label:<44}{s['spearman']:>10.2f}{s['abs_diff']:>11.4f}{s['same_top']:>13.0%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"dataset": dataset, "units": units, "summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
