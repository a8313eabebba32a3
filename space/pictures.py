"""Pictures of cells with graphviz: a final genotype (normal and reduction cells, or its one shared cell)
and a cell during a search (every candidate op still on each edge).

Inputs ``c_{k-2}``, ``c_{k-1}`` in green, intermediate nodes 0..3 in blue, output ``c_{k}`` in yellow.
The CLI is space/visualize.py.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from common.errors import UserInputError
from space.genotype import INPUT_NODES, Genotype
from space.ops import NONE_OP
from space.search_network import EDGE_ENDPOINTS, EdgeCandidates

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
    return _render(graph, graphviz, Path(path))


def _render(graph, graphviz, path: Path) -> Path:
    try:  # the folder too: an output path under a file, or under /proc, is the user's to fix
        path.parent.mkdir(parents=True, exist_ok=True)
        written = graph.render(filename=path.with_suffix("").name, directory=str(path.parent), cleanup=True)
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, OSError) as error:
        raise VisualizeError(f"graphviz could not draw {path}: {error}") from None
    return Path(written)



def draw_search_cell(cell: EdgeCandidates, path: Path, caption: str = "") -> Path:
    """A picture of a cell during the search: every active candidate op of every edge (``none`` left out).

    Raises :class:`VisualizeError` when graphviz is unusable or cannot write (the caller decides what to do).
    """
    graphviz = _require_graphviz()
    graph = graphviz.Digraph(format="png", engine="dot")
    graph.attr(rankdir="LR", label=caption, labelloc="b", fontsize="18", fontname="helvetica")
    graph.attr("node", style="filled", shape="rect", fontname="helvetica", fontsize="14")
    names = {0: "c_{k-2}", 1: "c_{k-1}"}
    for node in range(INPUT_NODES, INPUT_NODES + 4):
        names[node] = str(node - INPUT_NODES)
    for node, label in names.items():
        graph.node(str(node), label, fillcolor="darkseagreen2" if node < INPUT_NODES else "lightblue")
    graph.node("out", "c_{k}", fillcolor="palegoldenrod")
    for (source, target), ops in zip(EDGE_ENDPOINTS, cell):
        for op in ops:
            if op != NONE_OP:
                graph.edge(str(source), str(target), label=op, fontsize="11")
    for node in range(INPUT_NODES, INPUT_NODES + 4):
        graph.edge(str(node), "out")
    return _render(graph, graphviz, Path(path))
