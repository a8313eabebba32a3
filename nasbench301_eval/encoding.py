"""Genotype -> NASBench-301 configuration -> the 56-value feature vector read by the NB301 xgb surrogate.

NASBench-301 [Siems et al. 2020, arXiv:2008.09777] describes an architecture together with its training
hyperparameters as one ConfigSpace configuration (``nasbench301/configspace.json``). Its xgboost surrogate
reads that configuration as ConfigSpace 0.4.12's ``Configuration.get_array()`` with NaN replaced by -1:
a vector ``x`` of length 56, one entry per hyperparameter, in the space's sorted order.

Architecture keys (prefix ``NetworkSelectorDatasetInfo:darts:``), for cell type ``c`` in (normal, reduce)
and intermediate node ``n = 0..3`` (node id ``n + 2``) fed by genotype entries ``2n, 2n+1 = (op, i)``:

* ``edge_{c}_{s_n + i} = op`` with edge offsets ``s = (0, 2, 5, 9)``;
* ``inputs_node_{c}_{n + 2} = "a_b"`` (the two inputs, sorted) for ``n >= 1``.

Only the edges of node 2 (``edge_{c}_0``, ``edge_{c}_1``) are unconditional; every other edge is active
only when its node's ``inputs_node`` choice contains its input, and inactive edges are encoded as -1.

Normalisation of one value ``v`` (ConfigSpace 0.4.12 ``_inverse_transform``):

* categorical: the index of ``v`` in the choices; constant: 0;
* uniform float on ``[l, u]``: ``(v - l) / (u - l)``, with ``log(v), log(l), log(u)`` on a log scale,
  clipped to ``[0, 1]``;
* uniform integer on ``[l, u]``: as a uniform float on ``[l - 0.49999, u + 0.49999]`` (each integer owns an
  equal slice of ``[0, 1]``);
* normal float: ``v``, or ``log(v)`` on a log scale (not rescaled).

The order of the vector is ConfigSpace's topological sort: the 32 unconditional hyperparameters sorted by
name, then the 24 conditional edges sorted by name (as strings, so ``edge_normal_10`` precedes
``edge_normal_2``).

The space is ``configspace.json`` as NB301's ``ConfigLoader.load_config_space`` alters it before encoding:
``layers``, ``init_channels`` and ``cosine_annealing:T_max`` become integers on ``[1, 10000]`` and
``cosine_annealing:eta_min`` a float on ``[0, 10000]``. The training hyperparameters are fixed to the values
of NB301's ``api.fixed_hyperparameters`` (REFERENCE section 6).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import numpy as np

from common.errors import UserInputError
from space.genotype import DEFAULT_CONCAT, INPUT_NODES, STEPS, Genotype, GenotypeError

ConfigValue = Union[str, int, float, bool]

PREFIX = "NetworkSelectorDatasetInfo:darts:"
CELL_TYPES = ("normal", "reduce")
# NB301's op choices, in the order of its configspace (the categorical index is the position here).
NB301_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
# First edge index of each intermediate node: node n + 2 has edges EDGE_OFFSETS[n] + input, input < n + 2.
EDGE_OFFSETS = (0, 2, 5, 9)
VECTOR_LENGTH = 56
INACTIVE = -1.0  # the surrogate's stand-in for an inactive (NaN) hyperparameter
INTEGER_WIDENING = 0.49999  # ConfigSpace 0.4.12 UniformIntegerHyperparameter

# The training setting merged into every NB301 query (nasbench301 api.fixed_hyperparameters).
FIXED_HYPERPARAMETERS: Mapping[str, ConfigValue] = {
    "CreateImageDataLoader:batch_size": 96,
    "ImageAugmentation:augment": True,
    "ImageAugmentation:autoaugment": False,
    "ImageAugmentation:cutout": True,
    "ImageAugmentation:cutout_holes": 1,
    "ImageAugmentation:cutout_length": 16,
    "ImageAugmentation:fastautoaugment": False,
    "LossModuleSelectorIndices:loss_module": "cross_entropy",
    PREFIX + "auxiliary": True,
    PREFIX + "drop_path_prob": 0.2,
    PREFIX + "init_channels": 32,
    PREFIX + "layers": 8,
    "NetworkSelectorDatasetInfo:network": "darts",
    "OptimizerSelector:optimizer": "sgd",
    "OptimizerSelector:sgd:learning_rate": 0.025,
    "OptimizerSelector:sgd:momentum": 0.9,
    "OptimizerSelector:sgd:weight_decay": 0.0003,
    "SimpleLearningrateSchedulerSelector:cosine_annealing:T_max": 100,
    "SimpleLearningrateSchedulerSelector:cosine_annealing:eta_min": 1e-8,
    "SimpleLearningrateSchedulerSelector:lr_scheduler": "cosine_annealing",
    "SimpleTrainNode:batch_loss_computation_technique": "mixup",
    "SimpleTrainNode:mixup:alpha": 0.2,
}


class UnrepresentableCellError(GenotypeError):
    """A cell NASBench-301 cannot describe (an op outside its 7, a repeated input, a non-standard concat)."""


class ConfigError(UserInputError, ValueError):
    """An NB301 configuration that is not a legal point of the surrogate's configuration space."""


# ---- the configuration space ---------------------------------------------------------------------
@dataclass(frozen=True)
class ActiveWhen:
    """The hyperparameter is active only while ``parent`` takes one of ``values`` (a ConfigSpace InCondition)."""

    parent: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple[Any, ...]
    condition: ActiveWhen | None = None

    def is_legal(self, value: Any) -> bool:
        return any(_same(value, choice) for choice in self.choices)

    def normalise(self, value: Any) -> float:
        """The index of ``value`` among the choices."""
        return float(next(index for index, choice in enumerate(self.choices) if _same(value, choice)))


@dataclass(frozen=True)
class Constant:
    name: str
    value: Any
    condition: ActiveWhen | None = None

    def is_legal(self, value: Any) -> bool:
        return _same(value, self.value)

    def normalise(self, value: Any) -> float:
        return 0.0


@dataclass(frozen=True)
class UniformFloat:
    name: str
    lower: float
    upper: float
    log: bool = False
    condition: ActiveWhen | None = None

    def is_legal(self, value: Any) -> bool:
        return _is_number(value) and self.lower <= value <= self.upper

    def normalise(self, value: Any) -> float:
        """``(v - l) / (u - l)`` (in log space when ``log``), clipped to [0, 1]."""
        return _unit_interval(value, self.lower, self.upper, self.log)


@dataclass(frozen=True)
class UniformInteger(UniformFloat):
    """An integer range: legal values are integers in ``[l, u]``; normalised as a uniform float on
    ``[l - 0.49999, u + 0.49999]``, as ConfigSpace 0.4.12 does."""
    lower: int
    upper: int

    def is_legal(self, value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
            and self.lower <= value <= self.upper

    def normalise(self, value: Any) -> float:
        return _unit_interval(value, self.lower - INTEGER_WIDENING, self.upper + INTEGER_WIDENING, self.log)


@dataclass(frozen=True)
class NormalFloat:
    name: str
    log: bool = False
    condition: ActiveWhen | None = None

    def is_legal(self, value: Any) -> bool:
        return _is_number(value) and (value > 0 or not self.log)

    def normalise(self, value: Any) -> float:
        """``v``, or ``log(v)`` on a log scale: ConfigSpace 0.4.12 does not rescale normal hyperparameters."""
        return float(np.log(value)) if self.log else float(value)


Hyperparameter = Union[Categorical, Constant, UniformFloat, UniformInteger, NormalFloat]


def _same(value: Any, choice: Any) -> bool:
    """Equal and of the same kind, so that ``True`` never matches ``1``."""
    return isinstance(value, bool) == isinstance(choice, bool) and value == choice


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _unit_interval(value: float, lower: float, upper: float, log: bool) -> float:
    if log:
        value, lower, upper = np.log(value), np.log(lower), np.log(upper)
    scaled = (value - lower) / (upper - lower)
    return float(np.maximum(0.0, np.minimum(1.0, scaled)))


def edge_key(cell_type: str, edge: int) -> str:
    return f"{PREFIX}edge_{cell_type}_{edge}"


def inputs_key(cell_type: str, node: int) -> str:
    return f"{PREFIX}inputs_node_{cell_type}_{node}"


def input_pairs(node: int) -> tuple[str, ...]:
    """The ``inputs_node`` choices of node ``node``: every pair ``a < b < node`` as ``"a_b"``."""
    return tuple(f"{a}_{b}" for a, b in itertools.combinations(range(node), 2))


def _architecture_space(cell_type: str) -> list[Hyperparameter]:
    hyperparameters: list[Hyperparameter] = []
    for step, offset in enumerate(EDGE_OFFSETS):
        node = step + INPUT_NODES
        if step == 0:  # node 2 always takes inputs 0 and 1: its two edges are unconditional
            hyperparameters += [Categorical(edge_key(cell_type, offset + source), NB301_OPS) for source in (0, 1)]
            continue
        pairs = input_pairs(node)
        hyperparameters.append(Categorical(inputs_key(cell_type, node), pairs))
        for source in range(node):
            with_source = tuple(pair for pair in pairs if str(source) in pair.split("_"))
            hyperparameters.append(Categorical(edge_key(cell_type, offset + source), NB301_OPS,
                                               ActiveWhen(inputs_key(cell_type, node), with_source)))
    return hyperparameters


def _training_space() -> list[Hyperparameter]:
    """``configspace.json``'s training hyperparameters, with ``ConfigLoader.load_config_space``'s overrides."""
    return [
        UniformInteger("CreateImageDataLoader:batch_size", 64, 128, log=True),
        Categorical("ImageAugmentation:augment", (True,)),
        Categorical("ImageAugmentation:autoaugment", (False, True)),
        Categorical("ImageAugmentation:cutout", (True,)),
        UniformInteger("ImageAugmentation:cutout_holes", 1, 3),
        UniformInteger("ImageAugmentation:cutout_length", 1, 50),
        Categorical("ImageAugmentation:fastautoaugment", (False, True)),
        Categorical("LossModuleSelectorIndices:loss_module", ("cross_entropy",)),
        Categorical(PREFIX + "auxiliary", (True,)),
        Constant(PREFIX + "drop_path_prob", 0.2),
        UniformInteger(PREFIX + "init_channels", 1, 10000),  # overridden by the loader (constant 50 in the json)
        UniformInteger(PREFIX + "layers", 1, 10000),  # overridden by the loader (constant 20 in the json)
        Categorical("NetworkSelectorDatasetInfo:network", ("darts",)),
        Categorical("OptimizerSelector:optimizer", ("sgd",)),
        NormalFloat("OptimizerSelector:sgd:learning_rate", log=True),
        UniformFloat("OptimizerSelector:sgd:momentum", 0.1, 0.99),
        NormalFloat("OptimizerSelector:sgd:weight_decay", log=True),
        UniformInteger("SimpleLearningrateSchedulerSelector:cosine_annealing:T_max", 1, 10000),  # overridden
        UniformFloat("SimpleLearningrateSchedulerSelector:cosine_annealing:eta_min", 0.0, 10000.0),  # overridden
        Categorical("SimpleLearningrateSchedulerSelector:lr_scheduler", ("cosine_annealing",)),
        Categorical("SimpleTrainNode:batch_loss_computation_technique", ("mixup",)),
        UniformFloat("SimpleTrainNode:mixup:alpha", 0.01, 0.7, log=True),
    ]


@functools.lru_cache(maxsize=None)
def surrogate_space() -> tuple[Hyperparameter, ...]:
    """The 56 hyperparameters in vector order: unconditional ones by name, then conditional ones by name."""
    everything = _training_space() + [hp for cell_type in CELL_TYPES for hp in _architecture_space(cell_type)]
    unconditional = sorted((hp for hp in everything if hp.condition is None), key=lambda hp: hp.name)
    conditional = sorted((hp for hp in everything if hp.condition is not None), key=lambda hp: hp.name)
    space = tuple(unconditional + conditional)
    assert len(space) == VECTOR_LENGTH
    return space


def vector_names() -> tuple[str, ...]:
    """The hyperparameter name of each of the 56 vector entries."""
    return tuple(hp.name for hp in surrogate_space())


# ---- genotype -> configuration -> vector ----------------------------------------------------------
def genotype_to_config(genotype: Genotype | Mapping[str, Any]) -> dict[str, ConfigValue]:
    """The full NB301 configuration of a genotype: :data:`FIXED_HYPERPARAMETERS` plus its cell keys.

    ``genotype``: a :class:`Genotype`, or a genotype JSON object (``{"normal": [...], ...}``), which is
    validated first. A single shared cell is encoded as normal = reduce. Raises
    :class:`UnrepresentableCellError` for a cell NB301 cannot represent.
    """
    genotype = _as_genotype(genotype)
    config: dict[str, ConfigValue] = dict(FIXED_HYPERPARAMETERS)
    for cell_type in CELL_TYPES:
        config.update(cell_to_config(genotype.cell(cell_type), genotype.concat(cell_type), cell_type))
    return config


def cell_to_config(genes: Sequence[Sequence[Any]], concat: Sequence[int], cell_type: str) -> dict[str, str]:
    """The ``edge_*`` and ``inputs_node_*`` keys of one cell (8 ``(op, input)`` pairs in DARTS flat form)."""
    _check_cell(genes, concat, cell_type)
    config: dict[str, str] = {}
    for step, offset in enumerate(EDGE_OFFSETS):
        pair = genes[2 * step: 2 * step + 2]
        for op, source in pair:
            config[edge_key(cell_type, offset + source)] = op
        if step > 0:
            first, second = sorted(source for _, source in pair)
            config[inputs_key(cell_type, step + INPUT_NODES)] = f"{first}_{second}"
    return config


def config_to_vector(config: Mapping[str, Any]) -> np.ndarray:
    """The surrogate's input ``x`` (shape ``(56,)``, float64) for a full NB301 configuration.

    Each entry is the normalised value of one hyperparameter (module docstring), or -1 where the
    hyperparameter is inactive. Unknown keys, illegal values, missing active keys and values given for
    inactive edges are refused with :class:`ConfigError`, as ConfigSpace would.
    """
    space = surrogate_space()
    unknown = sorted(set(config) - {hp.name for hp in space})
    if unknown:
        raise ConfigError(f"unknown NB301 hyperparameter(s): {', '.join(unknown)}")
    vector = np.empty(VECTOR_LENGTH, dtype=np.float64)
    for index, hp in enumerate(space):
        value = config.get(hp.name)
        active = hp.condition is None or config.get(hp.condition.parent) in hp.condition.values
        if not active:
            if value is not None:
                raise ConfigError(f"{hp.name} is given ({value!r}) but inactive: "
                                  f"{hp.condition.parent} = {config.get(hp.condition.parent)!r}")
            vector[index] = INACTIVE
            continue
        if value is None:
            raise ConfigError(f"{hp.name} is missing from the NB301 configuration")
        if not hp.is_legal(value):
            raise ConfigError(f"illegal value {value!r} for {hp.name}")
        vector[index] = hp.normalise(value)
    return vector


def genotype_to_vector(genotype: Genotype | Mapping[str, Any]) -> np.ndarray:
    """The 56-value surrogate input of a genotype: ``config_to_vector(genotype_to_config(genotype))``."""
    return config_to_vector(genotype_to_config(genotype))


# ---- what NB301 can represent -----------------------------------------------------------------------
def _as_genotype(genotype: Any) -> Genotype:
    if isinstance(genotype, Genotype):
        return genotype
    if isinstance(genotype, Mapping):
        return Genotype.from_dict(dict(genotype))
    raise UnrepresentableCellError(f"expected a Genotype or a genotype JSON object, got {type(genotype).__name__}")


def _check_cell(genes: Any, concat: Any, cell_type: str) -> None:
    if not isinstance(genes, (list, tuple)) or len(genes) != 2 * STEPS:
        raise UnrepresentableCellError(f"{cell_type}: NB301 needs {2 * STEPS} (op, input) pairs, got {genes!r}")
    for index, gene in enumerate(genes):
        node = index // 2 + INPUT_NODES
        if not (isinstance(gene, (list, tuple)) and len(gene) == 2):
            raise UnrepresentableCellError(f"{cell_type}[{index}]: expected an (op, input) pair, got {gene!r}")
        op, source = gene
        if op == "none":
            raise UnrepresentableCellError(f"{cell_type}[{index}]: NB301 cannot represent the 'none' op")
        if op not in NB301_OPS:
            raise UnrepresentableCellError(f"{cell_type}[{index}]: op {op!r} is not one of NB301's "
                                           f"{', '.join(NB301_OPS)}")
        if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < node:
            raise UnrepresentableCellError(f"{cell_type}[{index}]: input {source!r} is not a node id "
                                           f"0..{node - 1} for node {node}")
    for step in range(STEPS):
        first, second = genes[2 * step][1], genes[2 * step + 1][1]
        if first == second:
            raise UnrepresentableCellError(f"{cell_type}: node {step + INPUT_NODES} takes input {first} twice; "
                                           f"NB301 needs two distinct inputs per node")
    if tuple(concat) != DEFAULT_CONCAT:
        raise UnrepresentableCellError(f"{cell_type}_concat: NB301 always concatenates nodes "
                                       f"{list(DEFAULT_CONCAT)}, got {list(concat)}")
