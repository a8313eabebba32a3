"""Draw cells with graphviz: a genotype file or built-in name -> PNG / SVG / PDF.

    python space/visualize.py DARTS_V2 runs/search/genotype.json --out runs/cells --format png

Each genotype becomes one picture holding its normal and reduction cells (or its one shared cell), with
a caption. Inputs ``c_{k-2}``, ``c_{k-1}`` in green, intermediate nodes 0..3 in blue, output ``c_{k}`` in yellow.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.errors import ArgumentParser, UserInputError, cli_entry  # noqa: E402
from space.genotype import INPUT_NODES, Genotype, genotype_name, load_genotype  # noqa: E402

FORMATS = ("png", "svg", "pdf")


class VisualizeError(UserInputError):
    """Graphviz is missing or cannot write the picture."""


def _require_graphviz():
    try:
        import graphviz
    except ImportError:
        raise VisualizeError("the 'graphviz' Python package is missing: pip install graphviz") from None
    if shutil.which("dot") is None:
        raise VisualizeError("graphviz's 'dot' program is missing: apt-get install graphviz "
                             "(or your system's package manager)")
    return graphviz


def _add_cell(graph, genes, concat, prefix: str, title: str) -> None:
    node_name = {0: "c_{k-2}", 1: "c_{k-1}"}
    for node in range(INPUT_NODES, INPUT_NODES + len(genes) // 2):
        node_name[node] = str(node - INPUT_NODES)
    with graph.subgraph(name=f"cluster_{prefix}") as cluster:
        cluster.attr(label=title, fontsize="18", style="rounded", color="gray")
        for node, label in node_name.items():
            fill = "darkseagreen2" if node < INPUT_NODES else "lightblue"
            cluster.node(f"{prefix}{node}", label, fillcolor=fill)
        cluster.node(f"{prefix}out", "c_{k}", fillcolor="palegoldenrod")
        for index, (op, source) in enumerate(genes):
            target = index // 2 + INPUT_NODES
            cluster.edge(f"{prefix}{source}", f"{prefix}{target}", label=op, fillcolor="gray")
        for node in concat:
            cluster.edge(f"{prefix}{node}", f"{prefix}out", fillcolor="gray")


def draw_genotype(genotype: Genotype, path: str | Path, caption: str = "", fmt: str = "png") -> Path:
    """Render ``genotype`` to ``path`` (suffix replaced by ``.fmt``); returns the written file."""
    if fmt not in FORMATS:
        raise VisualizeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    graphviz = _require_graphviz()
    graph = graphviz.Digraph(format=fmt, engine="dot")
    graph.attr(rankdir="LR", label=caption, labelloc="b", fontsize="20", fontname="helvetica")
    graph.attr("node", style="filled", shape="rect", align="center", fontsize="16", height="0.5",
               width="0.5", penwidth="2", fontname="helvetica")
    graph.attr("edge", fontsize="14", fontname="helvetica")
    if genotype.is_shared:
        _add_cell(graph, genotype.normal, genotype.normal_concat, "s", "cell (normal = reduction)")
    else:
        _add_cell(graph, genotype.normal, genotype.normal_concat, "n", "normal cell")
        _add_cell(graph, genotype.reduce, genotype.reduce_concat, "r", "reduction cell")
    path = Path(path)
    try:  # the folder too: an output path under a file, or under /proc, is the user's to fix
        path.parent.mkdir(parents=True, exist_ok=True)
        written = graph.render(filename=path.with_suffix("").name, directory=str(path.parent), cleanup=True)
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, OSError) as error:
        raise VisualizeError(f"graphviz could not draw {path}: {error}") from None
    return Path(written)


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
