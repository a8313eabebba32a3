"""CLI: write a data set as FFCV .beton files plus a metadata JSON.

    python data/write_ffcv.py                      # CIFAR-10 from ./data into ./betons (what the search reads)
    python data/write_ffcv.py --download           # the same, downloading CIFAR-10 into ./data first
    python data/write_ffcv.py --dataset mnist --data-dir ../shared/datasets/mnist --out betons/

Without the sources (and without --download) it says in one line what to put where, exit status 2.

The work is done by :mod:`data.beton` (``write_dataset``, ``write_beton``); this file parses flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.beton import metadata_path, verify_betons, write_beton, write_dataset  # noqa: E402  (re-exported)
from data.errors import DataError  # noqa: E402
from data.info import ALL_DATASETS  # noqa: E402
from common.errors import ArgumentParser, cli_entry  # noqa: E402

__all__ = ["write_beton", "write_dataset", "main"]

DEFAULT_DATA_DIR = "data"   # sources, relative to the current directory
DEFAULT_OUT = "betons"      # the search's default data.beton_dir (perturb/config.py)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="data/write_ffcv.py",
        description="Write NAME_train.beton, NAME_test.beton and NAME_metadata.json (classes, counts, image "
                    "shape, channel mean/std, source checksums, sha256 of each .beton) for one data set.")
    parser.add_argument("--dataset", default="cifar10", choices=ALL_DATASETS,
                        help="which data set to read (default: cifar10); 'imagefolder' reads "
                             "DIR/train/<class>/*.jpg|png and DIR/test/<class>/ (or DIR/val/<class>/)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="folder holding the source files: cifar-10-python.tar.gz (or its extracted "
                             "cifar-10-batches-py/), cifar-100-python.tar.gz, the four MNIST/Fashion-MNIST IDX "
                             f"files (.gz or not), or the image folder; not needed for 'digits' "
                             f"(default: ./{DEFAULT_DATA_DIR})")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="folder to write the .beton files and metadata into (default: ./{0}, where "
                             "search_evolutionary.py looks without a config)".format(DEFAULT_OUT))
    parser.add_argument("--download", action="store_true",
                        help="download missing CIFAR / MNIST / Fashion-MNIST sources into --data-dir first "
                             "(needs internet)")
    parser.add_argument("--max-resolution", type=int, default=None, metavar="N",
                        help="shrink images whose longer side exceeds N pixels (aspect kept); for "
                             "'imagefolder', the square side every image is resized to (default 32)")
    parser.add_argument("--force", action="store_true",
                        help="rewrite even when the output files are already complete and up to date")
    parser.add_argument("--check", action="store_true",
                        help="write nothing: verify the existing .beton files against the sizes and sha256 in "
                             "the metadata (exit status 2 and one line when one is missing, truncated or altered)")
    parser.add_argument("--num-workers", type=int, default=-1,
                        help="processes FFCV's writer uses (default: all CPU cores)")
    return parser.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.max_resolution is not None and args.max_resolution < 1:
        raise DataError(f"--max-resolution must be at least 1, got {args.max_resolution}")
    if args.num_workers == 0 or args.num_workers < -1:
        raise DataError(f"--num-workers must be at least 1 (or -1: all cores), got {args.num_workers}")
    if args.check:
        paths = verify_betons(args.out, args.dataset)
        print(f"ok: {', '.join(str(p) for p in paths.values())} match {metadata_path(args.out, args.dataset)}")
        return
    data_dir = Path(args.data_dir).expanduser().absolute()  # absolute: a missing-source message says where
    write_dataset(args.dataset, data_dir, args.out, download=args.download,
                  max_resolution=args.max_resolution, force=args.force, num_workers=args.num_workers)


if __name__ == "__main__":
    main()
