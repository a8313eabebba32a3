"""The Genotype: one discrete architecture of the DARTS cell space, with JSON I/O and strict validation.

A cell has two inputs (node ids 0 and 1: the outputs of the two previous cells) and ``STEPS = 4``
intermediate nodes (ids 2..5). Intermediate node ``k`` takes exactly two inputs from distinct nodes
``j < k``, each through one operation. In the DARTS flat form a cell is a list of 8 ``(op, input)``
pairs: entries ``2i`` and ``2i + 1`` feed node ``i + 2``. The cell's output is the channel-wise concat of
the nodes listed in ``*_concat`` (DARTS: ``[2, 3, 4, 5]``).

JSON schema (``format`` and ``name`` are optional; ``reduce`` may be omitted for a single shared cell,
as PertNAS searches one cell used for both normal and reduction cells)::

    {
      "format": "darts-genotype/1",
      "name": "DARTS_V2",
      "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ...8 pairs...],
      "normal_concat": [2, 3, 4, 5],
      "reduce": [["max_pool_3x3", 0], ...8 pairs...],
      "reduce_concat": [2, 3, 4, 5]
    }

Two legacy text forms are parsed without ``eval`` (through :mod:`ast` literals only): the DARTS form
``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), reduce=[...], reduce_concat=...)``
and the pt.darts nested per-node form ``Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], ...], ...)``.
"""
from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from common.atomic import parse_json, write_json_atomically
from common.errors import UserInputError, short_repr
from space.primitives import PRIMITIVES

STEPS = 4  # intermediate nodes per cell
INPUT_NODES = 2
NUM_EDGES = sum(INPUT_NODES + step for step in range(STEPS))  # 14: intermediate node j has j inputs
DEFAULT_CONCAT = (2, 3, 4, 5)
JSON_FORMAT = "darts-genotype/1"
MAX_FILE_BYTES = 1 << 20  # a genotype is a few hundred bytes; a larger file is refused before it is parsed

CellGenes = tuple[tuple[str, int], ...]


class GenotypeError(UserInputError, ValueError):
    """A genotype that is not a valid cell of the DARTS space; the message says which entry and why."""


@dataclass(frozen=True)
class Genotype:
    """An immutable, validated pair of cells.

    ``normal`` / ``reduce``: 8 ``(op, input)`` pairs each (see the module docstring);
    ``normal_concat`` / ``reduce_concat``: the node ids whose outputs are concatenated.
    A single shared cell has ``reduce == normal``; :attr:`is_shared` tells.
    """

    normal: CellGenes
    normal_concat: tuple[int, ...] = DEFAULT_CONCAT
    reduce: CellGenes | None = None
    reduce_concat: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        normal = _validate_cell(self.normal, "normal")
        reduce = normal if self.reduce is None else _validate_cell(self.reduce, "reduce")
        normal_concat = _validate_concat(self.normal_concat, "normal_concat")
        reduce_concat = normal_concat if self.reduce_concat is None else _validate_concat(
            self.reduce_concat, "reduce_concat")
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(self, "normal_concat", normal_concat)
        object.__setattr__(self, "reduce_concat", reduce_concat)

    @classmethod
    def single(cls, cell: Iterable[Sequence[Any]], concat: Iterable[int] = DEFAULT_CONCAT) -> "Genotype":
        """One cell used for both normal and reduction cells (the PertNAS output)."""
        cell = tuple(tuple(gene) for gene in cell)
        return cls(normal=cell, normal_concat=tuple(concat), reduce=cell, reduce_concat=tuple(concat))

    @property
    def is_shared(self) -> bool:
        return self.normal == self.reduce and self.normal_concat == self.reduce_concat

    def cell(self, cell_type: str) -> CellGenes:
        """The genes of ``'normal'`` or ``'reduce'``."""
        if cell_type not in ("normal", "reduce"):
            raise ValueError(f"cell_type must be 'normal' or 'reduce', not {cell_type!r}")
        return self.normal if cell_type == "normal" else self.reduce

    def concat(self, cell_type: str) -> tuple[int, ...]:
        self.cell(cell_type)
        return self.normal_concat if cell_type == "normal" else self.reduce_concat

    # ---- JSON ------------------------------------------------------------------------------------
    def to_dict(self, name: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"format": JSON_FORMAT}
        if name:
            data["name"] = name
        data["normal"] = [[op, node] for op, node in self.normal]
        data["normal_concat"] = list(self.normal_concat)
        if not self.is_shared:
            data["reduce"] = [[op, node] for op, node in self.reduce]
            data["reduce_concat"] = list(self.reduce_concat)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "Genotype":
        if not isinstance(data, dict):
            raise GenotypeError("a genotype must be a JSON object with a 'normal' list")
        known = {"format", "name", "normal", "normal_concat", "reduce", "reduce_concat"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GenotypeError(f"unknown genotype key(s) {unknown}; expected some of {sorted(known)}")
        if data.get("format", JSON_FORMAT) != JSON_FORMAT:
            raise GenotypeError(f"unsupported genotype format {short_repr(data['format'])} (expected {JSON_FORMAT!r})")
        return _from_fields(data, "the genotype")

    def to_json(self, path: str | os.PathLike, name: str | None = None) -> Path:
        """Write atomically (temp file + rename), so an existing file is never left half-written."""
        return write_json_atomically(path, self.to_dict(name), indent=2)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "Genotype":
        path = Path(path)
        text = _read_genotype_file(path)
        try:
            data = parse_json(text)
        except ValueError as error:
            raise GenotypeError(f"{path}: not valid JSON ({error})") from None
        try:
            return cls.from_dict(data)
        except GenotypeError as error:
            raise GenotypeError(f"{path}: {error}") from None

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), separators=(", ", ": "))


# ---- validation ---------------------------------------------------------------------------------
def _validate_cell(genes: Any, where: str) -> CellGenes:
    if not isinstance(genes, (list, tuple)):
        raise GenotypeError(f"{where}: expected a list of {2 * STEPS} (op, input) pairs, got {type(genes).__name__}")
    if len(genes) != 2 * STEPS:
        raise GenotypeError(f"{where}: expected {2 * STEPS} (op, input) pairs (2 per intermediate node), "
                            f"got {len(genes)}")
    cell = []
    for index, gene in enumerate(genes):
        node = index // 2 + INPUT_NODES
        if not (isinstance(gene, (list, tuple)) and len(gene) == 2):
            raise GenotypeError(f"{where}[{index}]: expected an (op, input) pair, got {short_repr(gene)}")
        op, source = gene
        if not isinstance(op, str):
            raise GenotypeError(f"{where}[{index}]: op must be a string, got {short_repr(op)}")
        if op == "none":
            raise GenotypeError(f"{where}[{index}]: 'none' is a search-only candidate and cannot be in a final genotype")
        if op not in PRIMITIVES:
            raise GenotypeError(f"{where}[{index}]: unknown op {short_repr(op)}; choose from {', '.join(PRIMITIVES)}")
        if isinstance(source, bool) or not isinstance(source, int):
            raise GenotypeError(f"{where}[{index}]: input must be an integer node id, got {short_repr(source)}")
        if not 0 <= source < node:
            raise GenotypeError(f"{where}[{index}]: input {short_repr(source)} is out of range for node {node} "
                                f"(allowed 0..{node - 1})")
        cell.append((op, source))
    for step in range(STEPS):
        (_, first), (_, second) = cell[2 * step], cell[2 * step + 1]
        if first == second:
            raise GenotypeError(f"{where}: node {step + INPUT_NODES} takes input {first} twice "
                                f"(entries {2 * step} and {2 * step + 1}); its two inputs must differ")
    return tuple(cell)


def _validate_concat(concat: Any, where: str) -> tuple[int, ...]:
    if not isinstance(concat, (list, tuple)) or not concat:
        raise GenotypeError(f"{where}: expected a non-empty list of node ids, got {short_repr(concat)}")
    valid = range(INPUT_NODES, INPUT_NODES + STEPS)
    for node in concat:
        if isinstance(node, bool) or not isinstance(node, int) or node not in valid:
            raise GenotypeError(f"{where}: {short_repr(node)} is not an intermediate node id "
                                f"({valid.start}..{valid.stop - 1})")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{where}: node ids repeat in {short_repr(list(concat))}")
    return tuple(concat)


def _concat_tuple(concat: Any) -> Any:
    """A list of node ids as a tuple; anything else is left for :func:`_validate_concat` to refuse."""
    return tuple(concat) if isinstance(concat, list) else concat


def _is_node_list(item: Any) -> bool:
    return (isinstance(item, (list, tuple)) and len(item) > 0
            and all(isinstance(gene, (list, tuple)) for gene in item))


# ---- legacy text forms --------------------------------------------------------------------------
_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


def parse_legacy(text: str) -> Genotype:
    """Parse ``Genotype(normal=[...], normal_concat=range(2, 6), reduce=[...], reduce_concat=[...])``.

    Accepts the DARTS flat form and the pt.darts nested per-node form, keyword or positional arguments.
    Only literals and ``range(a, b[, step])`` of at most a cell's node ids are accepted: the text is parsed
    with :mod:`ast`, never evaluated. Text too deep or too long for the parser is a GenotypeError too.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise GenotypeError(f"not a Genotype(...) expression: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError):  # NUL bytes; nesting too deep for the parser
        raise GenotypeError("not a Genotype(...) expression: too deeply nested or not text") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise GenotypeError("legacy genotype text must be a single Genotype(...) expression")
    if len(call.args) > len(_FIELDS):
        raise GenotypeError(f"Genotype(...) takes at most {len(_FIELDS)} arguments")
    fields: dict[str, Any] = {}
    for name, node in zip(_FIELDS, call.args):
        fields[name] = _literal(node, name)
    for keyword in call.keywords:
        if keyword.arg not in _FIELDS:
            raise GenotypeError(f"unknown Genotype field {keyword.arg!r}; expected {', '.join(_FIELDS)}")
        if keyword.arg in fields:
            raise GenotypeError(f"Genotype field {keyword.arg!r} given twice")
        fields[keyword.arg] = _literal(keyword.value, keyword.arg)
    return _from_fields(fields, "Genotype(...)")


def _from_fields(fields: dict[str, Any], what: str) -> Genotype:
    """The Genotype of ``fields`` (normal, and optionally normal_concat, reduce, reduce_concat) as read from
    JSON or legacy text; ``what`` names the source in the error for a missing normal cell."""
    if "normal" not in fields:
        raise GenotypeError(f"{what} has no 'normal' cell")
    return Genotype(
        normal=_flatten_nested(fields["normal"]),
        normal_concat=_concat_tuple(fields.get("normal_concat", list(DEFAULT_CONCAT))),
        reduce=None if fields.get("reduce") is None else _flatten_nested(fields["reduce"]),
        reduce_concat=None if fields.get("reduce_concat") is None else _concat_tuple(fields["reduce_concat"]),
    )


def _literal(node: ast.AST, field: str) -> Any:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and all(isinstance(arg, ast.Constant) and type(arg.value) is int
                                          for arg in node.args) and 1 <= len(node.args) <= 3):
        return _small_range(*(arg.value for arg in node.args), field=field)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise GenotypeError(f"Genotype field {field!r} must be a literal list (or range(a, b))") from None


def _small_range(*bounds: int, field: str) -> list[int]:
    """``list(range(*bounds))`` when it holds at most a cell's node ids; never builds a huge list."""
    try:
        values = range(*bounds)
        count = len(values)
    except (ValueError, OverflowError):  # a step of 0; bounds too far apart for len()
        raise GenotypeError(f"Genotype field {field!r}: range{bounds} is not a valid range") from None
    if count > INPUT_NODES + STEPS:
        raise GenotypeError(f"Genotype field {field!r}: range{bounds} holds {count} values, more than a cell's "
                            f"{INPUT_NODES + STEPS} nodes")
    return list(values)


def _flatten_nested(genes: Any) -> Any:
    """Genes as (op, input) tuples; the nested per-node form (pt.darts) is flattened. JSON and legacy text."""
    if isinstance(genes, (list, tuple)) and genes and all(_is_node_list(item) for item in genes):
        return [tuple(gene) for node in genes for gene in node]
    if isinstance(genes, (list, tuple)):
        return [tuple(gene) if isinstance(gene, list) else gene for gene in genes]
    return genes


# ---- built-in genotypes (REFERENCE section 1) -----------------------------------------------------
def _cell(*pairs: tuple[str, int]) -> CellGenes:
    return tuple(pairs)


_BUILTIN_DATA: dict[str, tuple[CellGenes, CellGenes | None]] = {
    "DARTS_V2": (
        _cell(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
              ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
        _cell(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
              ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    ),
    "PERTNAS_EVOLUTIONARY": (
        _cell(("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
              ("skip_connect", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1)),
        _cell(("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
              ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1)),
    ),
    "PERTNAS_SUPERNET": (
        _cell(("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
              ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("max_pool_3x3", 1)),
        None,  # one shared cell
    ),
}


def builtin_names() -> tuple[str, ...]:
    return tuple(_BUILTIN_DATA)


def builtin_genotype(name: str) -> Genotype:
    key = name.upper()
    if key not in _BUILTIN_DATA:
        raise GenotypeError(f"unknown built-in genotype {name!r}; choose from {', '.join(_BUILTIN_DATA)}")
    normal, reduce = _BUILTIN_DATA[key]
    return Genotype(normal=normal, reduce=reduce)


def load_genotype(spec: str | os.PathLike) -> Genotype:
    """A built-in name (case-insensitive), a JSON file, or a file holding legacy ``Genotype(...)`` text."""
    spec_text = str(spec)
    if spec_text.upper() in _BUILTIN_DATA and not Path(spec_text).exists():
        return builtin_genotype(spec_text)
    path = Path(spec_text)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        is_file = False
    if not is_file:
        raise GenotypeError(f"{short_repr(spec_text)} is neither a genotype file nor a built-in name "
                            f"({', '.join(_BUILTIN_DATA)})")
    head = _read_genotype_file(path).lstrip()
    if head.startswith("Genotype("):
        try:
            return parse_legacy(head)
        except GenotypeError as error:
            raise GenotypeError(f"{path}: {error}") from None
    return Genotype.from_json(path)


def _read_genotype_file(path: Path) -> str:
    """The text of a genotype file: UTF-8, at most :data:`MAX_FILE_BYTES`; else one GenotypeError."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise GenotypeError(f"cannot read genotype file {path}: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise GenotypeError(f"{path}: larger than {MAX_FILE_BYTES} bytes, not a genotype file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise GenotypeError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def genotype_name(spec: str | os.PathLike) -> str:
    """A short display name: the built-in's name or the file's stem."""
    spec_text = str(spec)
    if spec_text.upper() in _BUILTIN_DATA and not Path(spec_text).exists():
        return spec_text.upper()
    return Path(spec_text).stem
