"""The Genotype: JSON round trip, legacy parsing without eval, strict validation, built-ins."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from space.genotype import (Genotype, GenotypeError, builtin_genotype, builtin_names, load_genotype,
                            parse_legacy)

REPO = Path(__file__).resolve().parents[1]

DARTS_V2_FLAT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")

DARTS_V2_NESTED = (
    "Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], "
    "[('sep_conv_3x3', 1), ('skip_connect', 0)], [('skip_connect', 0), ('dil_conv_3x3', 2)]], "
    "normal_concat=range(2, 6), reduce=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)], "
    "[('skip_connect', 2), ('max_pool_3x3', 1)], [('max_pool_3x3', 0), ('skip_connect', 2)], "
    "[('skip_connect', 2), ('max_pool_3x3', 1)]], reduce_concat=range(2, 6))")


def test_builtins_match_reference():
    assert set(builtin_names()) == {"DARTS_V2", "PERTNAS_EVOLUTIONARY", "PERTNAS_SUPERNET"}
    darts = builtin_genotype("DARTS_V2")
    assert darts.normal[7] == ("dil_conv_3x3", 2)
    assert darts.reduce[2] == ("skip_connect", 2)
    assert not darts.is_shared
    supernet = builtin_genotype("pertnas_supernet")  # case-insensitive
    assert supernet.is_shared and supernet.reduce == supernet.normal
    assert supernet.normal[0] == ("skip_connect", 0)


@pytest.mark.parametrize("name", ["DARTS_V2", "PERTNAS_EVOLUTIONARY", "PERTNAS_SUPERNET"])
def test_json_round_trip(tmp_path, name):
    genotype = builtin_genotype(name)
    path = genotype.to_json(tmp_path / "g.json", name=name)
    data = json.loads(path.read_text())
    assert data["name"] == name
    assert ("reduce" in data) == (not genotype.is_shared)  # a shared cell omits reduce
    assert Genotype.from_json(path) == genotype
    assert load_genotype(path) == genotype


def test_both_legacy_forms_parse_to_the_same_genotype(tmp_path):
    flat, nested = parse_legacy(DARTS_V2_FLAT), parse_legacy(DARTS_V2_NESTED)
    assert flat == nested == builtin_genotype("DARTS_V2")
    legacy_file = tmp_path / "legacy.txt"
    legacy_file.write_text(DARTS_V2_NESTED + "\n")
    assert load_genotype(legacy_file) == flat


def test_legacy_parsing_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    attack = f"Genotype(normal=__import__('os').system('touch {marker}'), normal_concat=[2, 3, 4, 5])"
    with pytest.raises(GenotypeError, match="literal"):
        parse_legacy(attack)
    assert not marker.exists()
    with pytest.raises(GenotypeError, match="single Genotype"):
        parse_legacy("print('hi')")


def _cell(**changes):
    genes = list(builtin_genotype("DARTS_V2").normal)
    for index, gene in changes.items():
        genes[int(index[1:])] = gene
    return genes


@pytest.mark.parametrize("genes, message", [
    (_cell(e0=("conv_7x7", 0)), "unknown op 'conv_7x7'"),
    (_cell(e0=("none", 0)), "'none' is a search-only candidate"),
    (_cell(e2=("sep_conv_3x3", 3)), "input 3 is out of range for node 3"),
    (_cell(e7=("dil_conv_3x3", -1)), "input -1 is out of range for node 5"),
    (_cell(e1=("sep_conv_3x3", 0)), "node 2 takes input 0 twice"),
    (_cell()[:7], "expected 8 (op, input) pairs"),
    (_cell(e3=("sep_conv_3x3", "1")), "input must be an integer"),
    (_cell(e3=("sep_conv_3x3",)), "expected an (op, input) pair"),
])
def test_invalid_cells_are_rejected_with_a_precise_message(genes, message):
    with pytest.raises(GenotypeError) as error:
        Genotype(normal=tuple(genes))
    assert message in str(error.value)


@pytest.mark.parametrize("concat, message", [
    ([2, 3, 9], "9 is not an intermediate node"),
    ([], "non-empty"),
    ([2, 2, 3], "repeat"),
    ([0, 2], "0 is not an intermediate node"),
])
def test_bad_concat_is_rejected(concat, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype(normal=builtin_genotype("DARTS_V2").normal, normal_concat=tuple(concat))


def test_json_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="not valid JSON"):
        load_genotype(bad)
    bad.write_text(json.dumps({"normal": [["sep_conv_3x3", 0]] * 8, "colour": "red"}))
    with pytest.raises(GenotypeError, match="unknown genotype key"):
        load_genotype(bad)
    with pytest.raises(GenotypeError, match="neither a genotype file nor a built-in"):
        load_genotype(tmp_path / "missing.json")


def test_cli_given_a_bad_genotype_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    data = builtin_genotype("DARTS_V2").to_dict()
    data["normal"][0] = ["none", 0]
    bad.write_text(json.dumps(data))
    result = subprocess.run([sys.executable, str(REPO / "space" / "visualize.py"), str(bad), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'none' is a search-only candidate" in lines[0]
    assert "Traceback" not in result.stderr
