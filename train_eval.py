"""Retrain a genotype from scratch and report honestly (final-epoch test accuracy, mean +- std over seeds).

    python train_eval.py DARTS_V2 --config configs/eval_cifar10.yaml --data-dir data/cifar10
    python train_eval.py my_cell.json --config configs/eval_quick.yaml --seeds 0 1 2
    torchrun --nproc_per_node=4 train_eval.py DARTS_V2 --config configs/eval_cifar10.yaml

Under torchrun every process trains one shard of each batch (DistributedDataParallel); data.batch_size is
the global batch (each of the 4 processes above trains 24 of the preset's 96 per step). A rerun with the
same run dir resumes from the newest checkpoint. See evaluation/run.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from data.config import BATCH_SIZE_HELP
from evaluation.recipe import EvalConfig
from evaluation.run import run_evaluation
from launch.config import SEED_LIMIT, add_override_argument, load_config, parse_overrides
from common.errors import ArgumentParser, UserInputError, cli_entry
from space.genotype import builtin_names, genotype_name, load_genotype


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="train_eval.py",
        description="Retrain a DARTS-space genotype from scratch (one GPU, many under torchrun, or the CPU) "
                    "and write report.json (params, multiply-adds, final and best-on-validation accuracies, "
                    "final-model test accuracy, wall time, device-hours).",
        epilog="Presets: configs/eval_cifar10.yaml (DARTS recipe), eval_cifar100.yaml, eval_mnist.yaml, "
               "eval_imagenet.yaml, eval_quick.yaml (CPU). Any config key can be overridden with --set, e.g. "
               "--set optim.schedule=cosine_power --set autoaugment=true --set network.channels=16. " + BATCH_SIZE_HELP)
    parser.add_argument("genotype", metavar="GENOTYPE",
                        help="a genotype JSON file, a legacy DARTS 'Genotype(...)' text file, or a built-in name "
                             f"({', '.join(builtin_names())})")
    add_override_argument(parser)
    parser.add_argument("--run-dir", metavar="DIR", default=None,
                        help="where config, logs, metrics, checkpoints and report.json go "
                             "(default runs/eval/<genotype>_<dataset>); rerunning with the same DIR resumes")
    parser.add_argument("--seeds", metavar="SEED", type=int, nargs="+", default=None,
                        help="train one run per seed in DIR/seed_<s>/ and write DIR/summary.json with the mean and "
                             "std of the final test accuracy (default: the config's single seed, in DIR itself)")
    parser.add_argument("--epochs", metavar="N", type=int, default=None,
                        help="shortcut for --set epochs=N")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="shortcut for --set data.data_dir=DIR (where the data set's source files are)")
    parser.add_argument("--stop-after-epochs", metavar="N", type=int, default=None,
                        help="leave after N epochs of this invocation (e.g. to fit a job time limit); "
                             "rerun the same command to resume")
    return parser


def resolve_config(args: argparse.Namespace) -> EvalConfig:
    overrides = parse_overrides(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.data_dir is not None:
        overrides["data.data_dir"] = args.data_dir
    return load_config(EvalConfig, args.config, overrides)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stop_after_epochs is not None and args.stop_after_epochs < 1:
        raise UserInputError(f"--stop-after-epochs must be at least 1, got {args.stop_after_epochs}")
    bad_seeds = [seed for seed in args.seeds or () if not 0 <= seed < SEED_LIMIT]
    if bad_seeds:  # the config's seed is checked by load_config; --seeds replace it
        raise UserInputError(f"--seeds must be in 0..{SEED_LIMIT - 1}, got {bad_seeds[0]}")
    config = resolve_config(args)
    genotype = load_genotype(args.genotype)  # a malformed genotype fails here, before any work
    name = genotype_name(args.genotype)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / "eval" / f"{name}_{config.data.dataset}"
    run_evaluation(config, genotype, run_dir, seeds=args.seeds, genotype_name=name,
                   stop_after_epochs=args.stop_after_epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
