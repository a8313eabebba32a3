"""Supernet architecture search on the DARTS cell space: DARTS (first/second order, softmax or Max-W),
DARTS-PT projection, or the PertNAS supernet variant followed by the evolutionary stages B-D.

    # offline CPU check (scikit-learn digits, tiny supernet): about a minute on 2 cores
    python search_supernet.py --config configs/supernet_quick.yaml
    # DARTS (second order) on CIFAR-10, 1 GPU; DARTS-PT; the PertNAS supernet on 4 GPUs
    python search_supernet.py --config configs/darts_cifar10.yaml --set arch.second_order=true
    python search_supernet.py --config configs/darts_pt_cifar10.yaml
    torchrun --nproc_per_node=4 search_supernet.py --config configs/pertnas_supernet_cifar10.yaml

Outputs go to SAVE/NOTE (genotype.json, alphas.json, cells/ with progress.gif, heatmaps/, TensorBoard
curves); running the same command again, or a torchrun restart, resumes from the last checkpoint.
Values are resolved as: built-in defaults < --config FILE < the flags below < --set KEY=VALUE.
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
from supernet.config import SupernetConfig  # noqa: E402

FLAGS = {"method": "method", "seed": "seed", "save": "save", "note": "note", "epochs": "epochs"}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Supernet NAS (DARTS / DARTS-PT / PertNAS supernet) on the DARTS cell space; run under "
                    "torchrun for several ranks. Every config key is documented in supernet/config.py.",
        epilog=BATCH_SIZE_HELP)
    parser.add_argument("--method", choices=("darts", "darts_pt", "pertnas"),
                        help="darts: alphas decide; darts_pt: perturbation projection; pertnas: equal-weight "
                             "supernet + evolutionary stages B-D (config key: method)")
    parser.add_argument("--seed", type=int, help="random seed of the whole search (seed)")
    parser.add_argument("--save", help="folder of runs (save); the run directory is SAVE/NOTE")
    parser.add_argument("--note", help="name of this run (note): its folder under SAVE")
    parser.add_argument("--epochs", type=int, help="supernet training epochs (epochs; DARTS 50)")
    add_override_argument(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> SupernetConfig:
    """The resolved config: defaults < --config < flags < --set."""
    return load_config_with_flags(SupernetConfig, args, FLAGS)


@cli_entry
def main(argv: Sequence[str] | None = None):
    args = build_parser().parse_args(argv)
    from supernet.search import run_supernet_search

    return run_supernet_search(config_from_args(args))


if __name__ == "__main__":
    main()
