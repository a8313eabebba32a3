"""Genotype -> NB301 configuration -> 56-value vector (nasbench301_eval.encoding)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from nasbench301_eval.encoding import (
    FIXED_HYPERPARAMETERS, INACTIVE, NB301_OPS, PREFIX, VECTOR_LENGTH, ConfigError, UnrepresentableCellError,
    cell_to_config, config_to_vector, edge_key, genotype_to_config, genotype_to_vector, inputs_key, vector_names,
)
from space.genotype import Genotype, GenotypeError, builtin_genotype
from space.ops import PRIMITIVES

# REFERENCE section 6: the DARTS_V2 vector as NB301 (ConfigSpace 0.4.12 get_array, NaN -> -1) encodes it.
DARTS_V2_VECTOR = np.array([
    0.5863451791322553, 0, 0, 0, 0.16666444442962952, 0.3099999239999697, 0, 0, 0, 0,
    3, 3, 0, 0, 0.003149999006299998, 0, 0, 1, 2, 1, 4, 0.000749999001499998, 0, 0, -3.6888794541139363,
    0.8988764044943821, -8.111728083308073, 0.009949999019899998, 1e-12, 0, 0, 0.7051278400653053,
    -1, 5, -1, -1, 3, 3, -1, 2, 3, -1, -1, 2, 0, 2, -1, -1, -1, 0, 2, 0, -1, 2, -1, -1])


def test_darts_v2_vector_equals_the_worked_example():
    vector = genotype_to_vector(builtin_genotype("DARTS_V2"))
    assert vector.shape == (VECTOR_LENGTH,) and vector.dtype == np.float64
    np.testing.assert_allclose(vector, DARTS_V2_VECTOR, rtol=0, atol=1e-12)
    # The surrogate reads float32 (xgboost.DMatrix): there the two vectors are bit-identical.
    np.testing.assert_array_equal(vector.astype(np.float32), DARTS_V2_VECTOR.astype(np.float32))
    # Bit-exact in float64 too, except the log-scaled batch size: the example's log(128.49999) sits one ulp
    # below the correctly rounded logarithm this machine's libm returns (a 7-ulp, 8e-16 difference).
    batch_size = vector_names().index("CreateImageDataLoader:batch_size")
    others = np.arange(VECTOR_LENGTH) != batch_size
    np.testing.assert_array_equal(vector[others], DARTS_V2_VECTOR[others])


def test_vector_order_is_unconditional_by_name_then_edges_by_name():
    names = vector_names()
    assert len(set(names)) == VECTOR_LENGTH
    unconditional, conditional = names[:32], names[32:]
    assert list(unconditional) == sorted(unconditional) and list(conditional) == sorted(conditional)
    assert conditional[:5] == tuple(PREFIX + f"edge_normal_{k}" for k in (10, 11, 12, 13, 2))
    assert conditional[-1] == PREFIX + "edge_reduce_9"
    assert set(FIXED_HYPERPARAMETERS) < set(unconditional)


def test_nb301_op_order_is_the_space_order():
    assert NB301_OPS == PRIMITIVES


def test_darts_v2_config_keys():
    config = genotype_to_config(builtin_genotype("DARTS_V2"))
    for key, value in FIXED_HYPERPARAMETERS.items():
        assert config[key] == value
    inputs = {key.removeprefix(PREFIX): value for key, value in config.items() if "inputs_node" in key}
    assert inputs == {"inputs_node_normal_3": "0_1", "inputs_node_normal_4": "0_1", "inputs_node_normal_5": "0_2",
                      "inputs_node_reduce_3": "1_2", "inputs_node_reduce_4": "0_2", "inputs_node_reduce_5": "1_2"}
    edges = {key.removeprefix(PREFIX): value for key, value in config.items() if ":edge_" in key}
    assert edges == {
        # node 2: edges 0-1; node 3: 2-4; node 4: 5-8; node 5: 9-13 (offset + input)
        "edge_normal_0": "sep_conv_3x3", "edge_normal_1": "sep_conv_3x3",
        "edge_normal_2": "sep_conv_3x3", "edge_normal_3": "sep_conv_3x3",
        "edge_normal_6": "sep_conv_3x3", "edge_normal_5": "skip_connect",
        "edge_normal_9": "skip_connect", "edge_normal_11": "dil_conv_3x3",
        "edge_reduce_0": "max_pool_3x3", "edge_reduce_1": "max_pool_3x3",
        "edge_reduce_4": "skip_connect", "edge_reduce_3": "max_pool_3x3",
        "edge_reduce_5": "max_pool_3x3", "edge_reduce_7": "skip_connect",
        "edge_reduce_11": "skip_connect", "edge_reduce_10": "max_pool_3x3",
    }
    assert len(config) == len(FIXED_HYPERPARAMETERS) + 2 * (8 + 3)


@pytest.mark.parametrize("name", ["DARTS_V2", "PERTNAS_EVOLUTIONARY", "PERTNAS_SUPERNET"])
def test_each_gene_sets_its_edge_and_nothing_else_is_active(name):
    genotype = builtin_genotype(name)
    vector = dict(zip(vector_names(), genotype_to_vector(genotype)))
    offsets = (0, 2, 5, 9)
    for cell_type in ("normal", "reduce"):
        genes = genotype.cell(cell_type)
        active = set()
        for step, offset in enumerate(offsets):
            node = step + 2
            for op, source in genes[2 * step: 2 * step + 2]:
                assert vector[edge_key(cell_type, offset + source)] == NB301_OPS.index(op)
                active.add(offset + source)
            if step:
                pairs = list(itertools.combinations(range(node), 2))
                sources = tuple(sorted(source for _, source in genes[2 * step: 2 * step + 2]))
                assert vector[inputs_key(cell_type, node)] == pairs.index(sources)
        for edge in set(range(14)) - active:
            assert vector[edge_key(cell_type, edge)] == INACTIVE


def test_shared_cell_is_scored_as_normal_equals_reduce():
    cell = builtin_genotype("PERTNAS_SUPERNET").normal
    shared = Genotype(normal=cell)  # reduce omitted: one cell for both
    assert shared.is_shared
    explicit = Genotype(normal=cell, reduce=cell)
    np.testing.assert_array_equal(genotype_to_vector(shared), genotype_to_vector(explicit))
    np.testing.assert_array_equal(genotype_to_vector(shared), genotype_to_vector(builtin_genotype("PERTNAS_SUPERNET")))
    config = genotype_to_config(shared)
    for key, value in config.items():
        if "_normal_" in key:
            assert config[key.replace("_normal_", "_reduce_")] == value


def test_a_genotype_json_object_is_accepted_and_validated():
    genotype = builtin_genotype("PERTNAS_EVOLUTIONARY")
    np.testing.assert_array_equal(genotype_to_vector(genotype.to_dict()), genotype_to_vector(genotype))
    data = genotype.to_dict()
    data["normal"][3] = ["none", 2]
    with pytest.raises(GenotypeError, match="none"):
        genotype_to_config(data)


DARTS_NORMAL = [list(gene) for gene in builtin_genotype("DARTS_V2").normal]


@pytest.mark.parametrize("edit, message", [
    ((2, ["none", 0]), r"normal\[2\]: NB301 cannot represent the 'none' op"),
    ((5, ["conv_7x1_1x7", 0]), r"normal\[5\]: op 'conv_7x1_1x7' is not one of NB301's"),
    ((7, ["sep_conv_3x3", 0]), r"normal: node 5 takes input 0 twice"),
    ((3, ["sep_conv_3x3", 3]), r"normal\[3\]: input 3 is not a node id 0..2 for node 3"),
])
def test_cells_nb301_cannot_represent_are_refused_precisely(edit, message):
    index, gene = edit
    genes = [list(g) for g in DARTS_NORMAL]
    genes[index] = gene
    with pytest.raises(UnrepresentableCellError, match=message):
        cell_to_config(genes, (2, 3, 4, 5), "normal")


def test_a_non_standard_concat_is_refused():
    genotype = Genotype(normal=builtin_genotype("DARTS_V2").normal, normal_concat=(2, 3, 4))
    with pytest.raises(UnrepresentableCellError, match=r"normal_concat: NB301 always concatenates nodes "
                                                       r"\[2, 3, 4, 5\], got \[2, 3, 4\]"):
        genotype_to_config(genotype)


def test_non_genotypes_are_refused():
    with pytest.raises(UnrepresentableCellError, match="expected a Genotype"):
        genotype_to_config([("sep_conv_3x3", 0)] * 8)


def test_illegal_configurations_are_refused():
    config = genotype_to_config(builtin_genotype("DARTS_V2"))
    with pytest.raises(ConfigError, match="unknown NB301 hyperparameter"):
        config_to_vector({**config, "SimpleTrainNode:epochs": 3})
    with pytest.raises(ConfigError, match="edge_normal_4 is given .* but inactive"):
        config_to_vector({**config, PREFIX + "edge_normal_4": "skip_connect"})
    with pytest.raises(ConfigError, match="illegal value 'none'"):
        config_to_vector({**config, PREFIX + "edge_normal_0": "none"})
    with pytest.raises(ConfigError, match="illegal value 1 for .*auxiliary"):
        config_to_vector({**config, PREFIX + "auxiliary": 1})  # True, not 1
    missing = dict(config)
    del missing[PREFIX + "edge_normal_11"]
    with pytest.raises(ConfigError, match="edge_normal_11 is missing"):
        config_to_vector(missing)


def test_training_hyperparameters_follow_the_normalisation_rules():
    """Change the fixed values and check each rule (uniform int/float, log, normal, categorical)."""
    config = dict(genotype_to_config(builtin_genotype("DARTS_V2")))
    config.update({"ImageAugmentation:cutout_holes": 3, "ImageAugmentation:autoaugment": True,
                   "OptimizerSelector:sgd:momentum": 0.99, "SimpleTrainNode:mixup:alpha": 0.01,
                   "OptimizerSelector:sgd:weight_decay": 5e-4, PREFIX + "layers": 1})
    vector = dict(zip(vector_names(), config_to_vector(config)))
    assert vector["ImageAugmentation:cutout_holes"] == pytest.approx((3 - 0.50001) / (3.49999 - 0.50001), abs=1e-15)
    assert vector["ImageAugmentation:autoaugment"] == 1
    assert vector["OptimizerSelector:sgd:momentum"] == 1.0
    assert vector["SimpleTrainNode:mixup:alpha"] == 0.0
    assert vector["OptimizerSelector:sgd:weight_decay"] == pytest.approx(np.log(5e-4), abs=1e-15)
    assert vector[PREFIX + "layers"] == pytest.approx(0.49999 / (10000.49999 - 0.50001), abs=1e-18)
