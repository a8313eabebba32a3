"""Property-based fuzzing of every reader of outside input: for ANY input the outcome is a value or the
project's one-line user error (a UserInputError; at a CLI exit status 2 and one stderr line), never another
exception. The profiles are in tests/conftest.py (``--hypothesis-profile=long`` for a deeper run).

Readers: the genotype parser (JSON and the legacy text forms), the config loader and ``--set`` overrides,
the IDX and CIFAR readers (and the restricted unpickler under them), the NB301 member reader, and the
checkpoint reader.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from data.errors import DataError
from data.readers import read_cifar, read_idx
from data.safe_pickle import load_restricted
from evaluation.recipe import EvalConfig
from launch.checkpoint import CheckpointManager, encode_checkpoint
from launch.config import load_config
from launch.distributed import DistEnv
from common.errors import UserInputError, cli_entry
from launch.seeding import capture_rng_state, restore_rng_state
from nasbench301_eval.surrogate import SurrogateModelError, read_booster_bytes
from space.genotype import Genotype, GenotypeError, load_genotype, parse_legacy
from space.ops import PRIMITIVES
from supernet.config import SupernetConfig

WORLD_OF_ONE = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)

# ---- shared strategies ------------------------------------------------------------------------------
EDGE_INTS = st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 6, 2**31, 2**63, 10**30])
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=8), inner, max_size=5), max_leaves=30)
OPS = st.sampled_from([*PRIMITIVES, "none", "conv_9x9", ""])
GENES = st.lists(st.one_of(st.tuples(OPS, EDGE_INTS).map(list), JSON_VALUES), min_size=0, max_size=10)
CONCATS = st.one_of(st.lists(EDGE_INTS, max_size=6), JSON_VALUES)


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


# ---- genotypes ----------------------------------------------------------------------------------------
@given(data=st.one_of(
    st.fixed_dictionaries({"normal": GENES}, optional={"normal_concat": CONCATS, "reduce": GENES,
                                                      "reduce_concat": CONCATS, "format": JSON_SCALARS}),
    JSON_VALUES))
def test_any_genotype_json_is_a_genotype_or_one_genotype_error(tmp_path_factory, data):
    path = _write(tmp_path_factory.mktemp("g") / "g.json", json.dumps(data))
    try:
        genotype = load_genotype(path)
    except GenotypeError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(genotype, Genotype) and len(genotype.normal) == 8  # what was accepted is a valid cell


@given(data=st.fixed_dictionaries({"normal": GENES}, optional={"normal_concat": CONCATS}))
def test_at_the_cli_any_genotype_file_is_exit_2_and_one_line(tmp_path_factory, data):
    """score.py without --models prints a valid genotype's vector, then exits 2 with one line, as it does
    for a bad one: either way exactly one line on stderr."""
    from nasbench301_eval import score

    path = _write(tmp_path_factory.mktemp("g") / "g.json", json.dumps(data))
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        score.main([str(path)])
    assert exit_info.value.code == 2
    assert stderr.getvalue().count("\n") == 1 and stderr.getvalue().startswith("error: ")


@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_genotype_file_content_is_a_genotype_or_one_genotype_error(tmp_path_factory, text):
    path = _write(tmp_path_factory.mktemp("g") / "g.txt", text)
    with pytest.raises(GenotypeError):  # random text is never a valid genotype
        load_genotype(path)


LEGACY_VALUES = st.one_of(
    GENES.map(repr),
    st.lists(st.lists(st.tuples(OPS, EDGE_INTS), max_size=3), max_size=5).map(repr),  # pt.darts nested form
    st.tuples(EDGE_INTS, EDGE_INTS, st.sampled_from([-1, 0, 1, 2, 10**20])).map(lambda r: f"range{r}"),
    st.tuples(EDGE_INTS, EDGE_INTS).map(lambda r: f"range{r}"),
    st.sampled_from(["None", "5", "int", "tuple(int)", "[2, 3, 4, 5]", "{1: 2}", "'x'", "1e308", "-1"]),
    st.text(max_size=20))


@given(fields=st.lists(st.tuples(st.sampled_from(["normal", "normal_concat", "reduce", "reduce_concat", "other",
                                                  ""]), LEGACY_VALUES), max_size=5))
def test_any_legacy_genotype_text_is_a_genotype_or_one_genotype_error(fields):
    text = "Genotype(" + ", ".join(f"{name}={value}" if name else value for name, value in fields) + ")"
    try:
        genotype = parse_legacy(text)
    except GenotypeError as error:
        assert "\n" not in str(error)
        return
    assert len(genotype.normal) == 8 and set(genotype.normal_concat) <= {2, 3, 4, 5}


def test_a_valid_legacy_text_really_parses():
    """Control for the property above: the generator's form is the one parse_legacy reads."""
    genes = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)] * 4
    assert parse_legacy(f"Genotype(normal={genes!r}, normal_concat=range(2, 6))").normal_concat == (2, 3, 4, 5)


# ---- configs and overrides ----------------------------------------------------------------------------
CONFIG_KEYS = st.sampled_from(["seed", "epochs", "optim.lr", "optim.learning_rate", "optim.momentum", "optim.schedule",
                               "data.batch_size", "data.search_portion", "data.dataset", "network.channels",
                               "network.layers", "device", "nope", "optim", "data.cutout.x", "", "a..b", "weights.momentum",
                               "save", "note", "network.ops", "pertnas.op_cap"])
YAML_TEXT = st.one_of(
    st.sampled_from([".inf", "-.inf", ".nan", "1e999", "-1", "0", "4294967296", "10" * 20, "~", "null", "[]",
                     "{}", "[1, 2", "&a [*a]", "'\\0'", "\"a\\0b\"", "yes", "3.5", "cosine", "[sep_conv_3x3]"]),
    st.text(max_size=20))


def _config_yaml(draw_values: dict) -> str:
    tree: dict = {}
    for dotted, value in draw_values.items():
        node = tree
        *parents, last = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            node = child if isinstance(child, dict) else {}
        node[last] = value
    return yaml.safe_dump(tree)


@pytest.mark.parametrize("config_type", [EvalConfig, SupernetConfig])
@given(values=st.dictionaries(CONFIG_KEYS, JSON_VALUES, max_size=4), raw=st.one_of(st.none(), st.text(max_size=80)),
       overrides=st.lists(st.tuples(CONFIG_KEYS, YAML_TEXT).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=15),
                          max_size=3))
def test_any_config_file_and_overrides_load_or_fail_in_one_line(tmp_path_factory, config_type, values, raw,
                                                              overrides):
    text = raw if raw is not None else _config_yaml(values)
    path = _write(tmp_path_factory.mktemp("c") / "c.yaml", text)
    try:
        config = load_config(config_type, path, overrides)
    except UserInputError as error:
        assert "\n" not in str(error)
        # ... and at a CLI, exit status 2 with exactly one line on stderr
        stderr = io.StringIO()
        with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(stderr):
            cli_entry(load_config)(config_type, path, overrides)
        assert exit_info.value.code == 2
        assert stderr.getvalue().count("\n") == 1 and stderr.getvalue().startswith("error: ")
        return
    assert 0 <= config.seed < 2**32 and all(math.isfinite(v) for v in _floats(config))  # what loads is usable


def _floats(config) -> list[float]:
    from launch.config import config_to_dict

    found, stack = [], [config_to_dict(config)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float):
            found.append(node)
    return found


# ---- IDX -----------------------------------------------------------------------------------------------------
DIMS = st.sampled_from([0, 1, 2, 3, 7, 28, 2**16, 2**31, 2**32 - 1])


@given(magic=st.sampled_from([b"\x00\x00\x08", b"\x00\x00\x09", b"\x01\x00\x08", b""]),
       dims=st.lists(DIMS, max_size=4), extra=st.integers(-5, 5), compress=st.booleans(), ndim_lie=st.integers(-1, 1))
def test_any_idx_file_is_an_array_of_its_header_or_one_data_error(tmp_path_factory, magic, dims, extra, compress,
                                                                  ndim_lie):
    count = math.prod(dims) if dims else 0
    assume(count < 1 << 16 or extra <= 0)
    header = magic + bytes([max(0, len(dims) + ndim_lie)]) + b"".join(struct.pack(">I", d) for d in dims)
    body = bytes(np.random.default_rng(len(dims)).integers(0, 256, size=min(count, 1 << 16) + max(extra, 0),
                                                         dtype=np.uint8))
    body = body[:len(body) + min(extra, 0)] if extra < 0 else body
    payload = header + body
    folder = tmp_path_factory.mktemp("idx")
    path = _write(folder / ("x.gz" if compress else "x"), gzip.compress(payload) if compress else payload)
    try:
        array = read_idx(path)
    except DataError as error:
        assert "\n" not in str(error)
        return
    ndim = len(dims) + ndim_lie  # a header may lie about ndim and still describe a consistent file
    assert array.dtype == np.uint8 and array.ndim == ndim and array.size == math.prod(array.shape) > 0
    assert array.shape[:ndim] == tuple(dims)[:ndim] or ndim_lie > 0


# ---- CIFAR (and the restricted unpickler under it) ---------------------------------------------------------
ARRAYS = st.builds(
    lambda dtype, shape: np.zeros(shape, dtype=dtype),
    st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_, ">u2"]),
    st.sampled_from([(0, 3072), (2, 3072), (3, 3072), (2, 3071), (3072,), (2, 3, 32, 32), ()]))
LABELS = st.one_of(st.lists(st.sampled_from([0, 1, 9, 10, -1, 2**40, 2**70, 1.5, True, "x", None]), max_size=4),
                   ARRAYS, JSON_SCALARS)


@given(meta=st.one_of(st.just({b"label_names": [f"c{i}".encode() for i in range(10)]}), ARRAYS, JSON_VALUES,
                      st.fixed_dictionaries({b"label_names": st.lists(st.binary(max_size=3) | st.integers(),
                                                                      max_size=12)})),
       batch=st.one_of(st.fixed_dictionaries({b"data": ARRAYS, b"labels": LABELS}), JSON_VALUES, ARRAYS),
       protocol=st.integers(2, 5))
def test_any_cifar_folder_is_uint8_images_or_one_data_error(tmp_path_factory, meta, batch, protocol):
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    folder.mkdir()
    members = {"test_batch": batch, "batches.meta": meta}
    for name, record in members.items():
        _write(folder / name, pickle.dumps(record, protocol=protocol))
    sums = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in members}
    try:
        dataset = read_cifar(folder.parent, "cifar10", "test", member_md5=sums)
    except DataError as error:
        assert "\n" not in str(error)
        return
    assert dataset.images.dtype == np.uint8 and dataset.images.shape[1:] == (32, 32, 3)
    assert dataset.labels.dtype == np.int64 and (dataset.labels < len(dataset.classes)).all()


def _valid_batch_pickle(protocol: int) -> bytes:
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    return pickle.dumps({b"data": data, b"labels": [1, 2], b"names": [b"a"], "f": np.ones(3)}, protocol=protocol)


@given(protocol=st.integers(2, 5), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                  min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_any_damaged_batch_pickle_is_data_or_one_data_error(protocol, edits, cut):
    payload = bytearray(_valid_batch_pickle(protocol))
    for offset, value in edits:
        payload[offset % len(payload)] = value
    if cut is not None:
        payload = payload[: cut % len(payload)]
    try:
        loaded = load_restricted(bytes(payload), "batch")
    except DataError as error:
        assert "\n" not in str(error)
        return
    assert _only_plain_data(loaded)


def _only_plain_data(value, depth: int = 0) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf" and value.dtype.names is None
    if isinstance(value, (list, tuple)):
        return all(_only_plain_data(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(_only_plain_data(item, depth + 1) for item in value.values())
    return isinstance(value, (type(None), bool, int, float, str, bytes, bytearray))


@given(opcode=st.sampled_from([b"\x8e", b"\x8d", b"\x96", b"\x95", b"B", b"X", b"T", b"\x8b"]),
       length=st.sampled_from([2**31 - 1, 2**32 - 1, 2**62, 2**63 - 1, 2**64 - 1]), tail=st.binary(max_size=16))
def test_any_length_field_is_checked_against_the_file(opcode, length, tail):
    """BINBYTES8, BINUNICODE8, BYTEARRAY8, FRAME (8-byte lengths); BINBYTES, BINUNICODE, BINSTRING, LONG4 (4)."""
    size = struct.pack("<Q", length) if opcode in (b"\x8e", b"\x8d", b"\x96", b"\x95") else \
        struct.pack("<I", min(length, 2**32 - 1))
    with pytest.raises(DataError):
        load_restricted(b"\x80\x05" + opcode + size + tail + b".", "batch")


# ---- NB301 member files ----------------------------------------------------------------------------------------
def booster_pickle(handle: bytes = b"\x00model bytes", protocol: int = 2) -> bytes:
    """The shape of a pickled xgboost Booster (NEWOBJ of xgboost.core.Booster, then BUILD with its state dict),
    written without xgboost: ``{"handle": bytearray(...)}`` as the state."""
    state = pickle.dumps({"handle": bytearray(handle)}, protocol=protocol)
    start = 2 + (9 if state[2:3] == b"\x95" else 0)  # after PROTO (and FRAME)
    return b"\x80\x02cxgboost.core\nBooster\n)\x81" + state[start:-1] + b"b."


def test_the_hand_made_booster_pickle_is_read():
    """Control for the fuzzing below: the undamaged pickle gives its model bytes."""
    for protocol in (2, 3, 4, 5):
        path = Path(pytest.importorskip("tempfile").mkdtemp()) / "m"
        path.write_bytes(booster_pickle(b"abc", protocol))
        assert read_booster_bytes(path) == bytearray(b"abc")


@given(protocol=st.integers(2, 5), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10**6)), junk=st.binary(max_size=40))
def test_any_member_file_is_model_bytes_or_one_surrogate_error(tmp_path_factory, protocol, edits, cut, junk):
    payload = bytearray(booster_pickle(b"\x01\x02model", protocol)) if not junk else bytearray(junk)
    for offset, value in edits:
        payload[offset % len(payload)] = value
    if cut is not None and payload:
        payload = payload[: cut % len(payload)]
    path = _write(tmp_path_factory.mktemp("m") / "surrogate_model.model", bytes(payload))
    try:
        handle = read_booster_bytes(path)
    except SurrogateModelError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(handle, bytearray) and handle


# ---- checkpoints ----------------------------------------------------------------------------------------------------
STATE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | st.text(max_size=5)
    | st.builds(lambda n, kind: torch.zeros(n, dtype=kind), st.integers(0, 4),
                st.sampled_from([torch.float32, torch.int64, torch.uint8])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)
EPOCH_STATE = {"model": dict, "optimizer": dict, "epoch": int}


@contextlib.contextmanager
def rng_kept():
    """Loading a checkpoint restores its RNG state: put this process's back afterwards."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


@given(data=st.data())
def test_any_checksum_valid_checkpoint_is_a_state_or_one_user_error(tmp_path_factory, data):
    rng = capture_rng_state()
    rng_entry = data.draw(st.one_of(st.just(rng), STATE_VALUES,
                                    st.builds(lambda key, value: {**rng, key: value},
                                              st.sampled_from(["python", "numpy", "torch", "cuda"]), STATE_VALUES)))
    payload = data.draw(st.one_of(
        st.fixed_dictionaries({"format": st.sampled_from([1, 2, "1"]) | STATE_VALUES,
                               "step": st.sampled_from([0, 3, -1, "3"]) | STATE_VALUES,
                               "world_size": st.sampled_from([1, 2, 0]) | STATE_VALUES,
                               "rng": st.one_of(st.just([rng_entry]), st.lists(STATE_VALUES, max_size=2)),
                               "state": st.one_of(st.fixed_dictionaries(
                                   {"model": STATE_VALUES, "optimizer": STATE_VALUES, "epoch": STATE_VALUES}),
                                   STATE_VALUES)}),
        STATE_VALUES))
    manager = CheckpointManager(tmp_path_factory.mktemp("run"), WORLD_OF_ONE)
    path = manager.path_for(3)
    path.write_bytes(encode_checkpoint(payload))
    try:
        with rng_kept():
            state = manager.load(path, restore_rng=True, expect=EPOCH_STATE)
    except UserInputError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(state["model"], dict) and type(state["epoch"]) is int


@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_any_damaged_checkpoint_file_is_skipped_or_refused_in_one_line(tmp_path_factory, edits, cut):
    manager = CheckpointManager(tmp_path_factory.mktemp("run"), WORLD_OF_ONE)
    path = manager.save(1, {"model": {"w": torch.ones(2)}, "optimizer": {}, "epoch": 1})
    data = bytearray(path.read_bytes())
    for offset, value in edits:
        data[offset % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught, rng_kept():
        warnings.simplefilter("always")
        try:
            state = manager.load_latest(expect=EPOCH_STATE)
        except UserInputError as error:
            assert "\n" not in str(error)
            return
    if state is None:  # damaged bytes: skipped, and said so
        assert any("skipping checkpoint of step 1" in str(w.message) for w in caught)
    else:  # the edits rewrote bytes with their own values
        assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(2))
