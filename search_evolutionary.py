"""Distributed evolutionary architecture search with perturb-val (the PertNAS protocol, done right).

    # offline CPU quickstart (scikit-learn digits, tiny network): a few minutes on 2 cores
    python search_evolutionary.py --config configs/quickstart.yaml
    # the reference protocol on CIFAR-10 (.beton files from data/write_ffcv.py), 4 GPUs
    torchrun --nproc_per_node=4 search_evolutionary.py --config configs/pertnas_cifar10.yaml \\
        --npop 4 --train_path betons --distributed

Outputs go to SAVE/NOTE (genotype.json, scores.json, cells/, summary.json, TensorBoard curves);
running the same command again, or a torchrun restart, resumes from the last decision.
Values are resolved as: built-in defaults < --config FILE < the reference flags < --set KEY=VALUE.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from data.config import BATCH_SIZE_HELP  # noqa: E402
from launch.config import add_override_argument, load_config_with_flags  # noqa: E402
from common.errors import ArgumentParser, cli_entry  # noqa: E402
from perturb.config import EvolutionConfig  # noqa: E402
from perturb.search import run_evolutionary_search  # noqa: E402

# reference flag -> config key
REFERENCE_FLAGS = {
    "npop": "search.npop",
    "seed": "seed",
    "save": "save",
    "note": "note",
    "train_path": "data.beton_dir",
    "batch_size": "data.batch_size",
    "learning_rate": "optim.learning_rate",
    "finetune_steps": "search.finetune_steps",
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Evolutionary NAS with perturb-val on the DARTS cell space (run under torchrun for "
                    "several ranks). " + __doc__.split("\n\n")[2].replace("\n", " "),
        epilog=BATCH_SIZE_HELP)
    parser.add_argument("--npop", type=int, help="population size (search.npop; reference 4)")
    parser.add_argument("--seed", type=int, help="random seed of the whole search (seed; reference 2)")
    parser.add_argument("--save", help="folder of runs (save); the run directory is SAVE/NOTE")
    parser.add_argument("--note", help="name of this run (note): its folder under SAVE")
    parser.add_argument("--distributed", action="store_true",
                        help="accepted for compatibility: distribution comes from torchrun's environment")
    parser.add_argument("--train_path", help="folder of the .beton files written by data/write_ffcv.py "
                                             "(data.beton_dir)")
    parser.add_argument("--batch_size", type=int, help="the global batch of one training step (data.batch_size: "
                                                       "split across ranks in stages B-D; reference 256)")
    parser.add_argument("--learning_rate", type=float, help="base learning rate (optim.learning_rate; stage "
                                                            "rates divide it; reference 0.2176)")
    parser.add_argument("--finetune_steps", type=int, help="base fine-tune steps of perturb-val "
                                                           "(search.finetune_steps; reference 50)")
    add_override_argument(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> EvolutionConfig:
    """The resolved config: defaults < --config < reference flags < --set."""
    return load_config_with_flags(EvolutionConfig, args, REFERENCE_FLAGS)


@cli_entry
def main(argv: Sequence[str] | None = None):
    args = build_parser().parse_args(argv)
    return run_evolutionary_search(config_from_args(args))


if __name__ == "__main__":
    main()
