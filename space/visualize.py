"""CLI: draw cells with graphviz: a genotype file or built-in name -> PNG / SVG / PDF (space/pictures.py).

    python space/visualize.py DARTS_V2 runs/search/genotype.json --out runs/cells --format png

Each genotype becomes one picture holding its normal and reduction cells (or its one shared cell), with
a caption. Inputs ``c_{k-2}``, ``c_{k-1}`` in green, intermediate nodes 0..3 in blue, output ``c_{k}`` in yellow.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import ArgumentParser, cli_entry  # noqa: E402
from space.genotype import genotype_name, load_genotype  # noqa: E402
from space.pictures import FORMATS, draw_genotype  # noqa: E402

def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Draw the cells of genotypes with graphviz.")
    parser.add_argument("genotypes", nargs="+", metavar="GENOTYPE",
                        help="a genotype JSON file, a legacy Genotype(...) text file, or a built-in name "
                             "(DARTS_V2, PERTNAS_EVOLUTIONARY, PERTNAS_SUPERNET)")
    parser.add_argument("--out", default="runs/cells", help="output folder (default: runs/cells)")
    parser.add_argument("--format", choices=FORMATS, default="png", help="picture format (default: png)")
    parser.add_argument("--caption", default=None,
                        help="caption under the picture (default: the genotype's name)")
    return parser


@cli_entry
def main(argv: Sequence[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    genotypes = [(spec, load_genotype(spec)) for spec in args.genotypes]  # validate all before drawing
    written = []
    for spec, genotype in genotypes:
        name = genotype_name(spec)
        path = draw_genotype(genotype, Path(args.out) / f"{name}.{args.format}",
                             caption=args.caption or name, fmt=args.format)
        print(path)
        written.append(path)
    return written


if __name__ == "__main__":
    main()
