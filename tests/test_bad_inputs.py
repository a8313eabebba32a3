"""Issue 15's bad inputs, one test each: every one gets one line (exit status 2 at a CLI), runs no code,
reads no memory it should not, and loses nothing already written. Each of these failed on the code
before the issue (a traceback, a crash, or a wrong input accepted without a word)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data.safe_pickle as safe_pickle
from data.errors import DataError
from data.readers import IDX_URLS, read_cifar, read_dataset, read_idx
from common import atomic
from launch.checkpoint import CheckpointInvalid, CheckpointManager, encode_checkpoint
from launch.config import load_config
from launch.distributed import DistEnv
from common.errors import ConfigError
from launch.fingerprint import ResumeMismatchError, check_fingerprint, result_fingerprint
from launch.seeding import capture_rng_state
from space.genotype import GenotypeError, load_genotype, parse_legacy

REPO = Path(__file__).resolve().parents[1]
WORLD_OF_ONE = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
DARTS_NORMAL = ("[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
                "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)]")


def one_line_exit_2(main, args, capsys) -> str:
    """Run a CLI's main in this process: assert exit status 2 and one stderr line; return that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def pickle_ops(*parts: object) -> bytes:
    """Protocol-2 pickle bytes from raw opcode bytes and objects (each object pickled in place)."""
    out = b"\x80\x02"
    for part in parts:
        out += part if isinstance(part, bytes) else pickle.dumps(part, protocol=2)[2:-1]
    return out + b"."


# ---- the restricted unpicklers ----------------------------------------------------------------------------
class _StructuredDtype:
    """Pickles as numpy.dtype('V8') whose BUILD state puts a field at offset 2000 of an 8-byte item."""

    def __reduce__(self):
        return (np.dtype, ("V8", False, True), (3, "|", None, ("x",), {"x": (np.dtype("u1"), 2000)}, 8, 1, 16))


class _FieldsOnUint8:
    """numpy.dtype('u1') with fields stuck on by BUILD: the itemsize check is not enough on its own."""

    def __reduce__(self):
        return (np.dtype, ("u1", False, True), (3, "|", None, ("x",), {"x": (np.dtype("u1"), 2000)}, 1, 1, 16))


class _ArrayOf:
    def __init__(self, dtype):
        self.dtype = dtype

    def __reduce__(self):
        function, arguments, _ = np.zeros(1).__reduce__()
        return (function, arguments, (1, (4,), self.dtype, False, b"\0" * 32))


@pytest.mark.parametrize("dtype", [_StructuredDtype(), _FieldsOnUint8()])
def test_a_dtype_with_a_field_past_its_item_is_refused_before_the_data_is_touched(dtype):
    payload = pickle.dumps({b"data": _ArrayOf(dtype)}, protocol=2)
    with pytest.raises(DataError, match="only plain numeric dtypes|fields"):
        safe_pickle.load_restricted(payload, "data_batch_1")


@pytest.mark.parametrize("target", ["_codecs\nencode", "numpy\ndtype", "numpy\nndarray"])
def test_build_never_sets_attributes_on_a_stand_in(target):
    before = safe_pickle._latin1_bytes.__defaults__
    payload = pickle_ops(b"c" + target.encode() + b"\n", (None, {"__defaults__": ("utf-8",), "marker": 1}), b"b")
    with pytest.raises(DataError, match="refusing"):
        safe_pickle.load_restricted(payload, "batch")
    assert safe_pickle._latin1_bytes.__defaults__ == before and not hasattr(safe_pickle._Dtype, "marker")
    # and a stand-in itself is never handed back as data
    with pytest.raises(DataError, match="stand-in"):
        safe_pickle.load_restricted(pickle_ops(b"c_codecs\nencode\n"), "batch")


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d", b"\x96", b"\x95"])  # BINBYTES8 BINUNICODE8 BYTEARRAY8 FRAME
def test_huge_length_fields_are_one_line(tmp_path, opcode):
    payload = b"\x80\x05" + opcode + struct.pack("<Q", 2**62) + b"."
    with pytest.raises(DataError, match="length field"):
        safe_pickle.load_restricted(payload, "batch")
    from nasbench301_eval.surrogate import SurrogateModelError, read_booster_bytes

    (tmp_path / "m").write_bytes(payload)
    with pytest.raises(SurrogateModelError, match="length field"):
        read_booster_bytes(tmp_path / "m")


def test_build_on_the_booster_stand_in_cannot_make_the_next_member_pass(tmp_path):
    from nasbench301_eval import surrogate

    poison = pickle_ops(b"cxgboost.core\nBooster\n", (None, {"state": {"handle": bytearray(b"planted")}}), b"b")
    (tmp_path / "poison").write_bytes(poison)
    with pytest.raises(surrogate.UnsafePickleError, match="nothing was run"):
        surrogate.read_booster_bytes(tmp_path / "poison")
    defaults = surrogate._bytearray_from.__defaults__
    (tmp_path / "defaults").write_bytes(pickle_ops(b"cbuiltins\nbytearray\n", (None, {"__defaults__": (b"x",)}), b"b"))
    with pytest.raises(surrogate.UnsafePickleError):
        surrogate.read_booster_bytes(tmp_path / "defaults")
    assert surrogate._bytearray_from.__defaults__ == defaults
    # a member with no model bytes (a Booster never given its state) is still refused
    (tmp_path / "empty").write_bytes(pickle_ops(b"cxgboost.core\nBooster\n)\x81"))
    with pytest.raises(surrogate.SurrogateModelError, match="without state"):
        surrogate.read_booster_bytes(tmp_path / "empty")
    (tmp_path / "function").write_bytes(pickle_ops(b"cbuiltins\nbytearray\n"))
    with pytest.raises(surrogate.SurrogateModelError, match="not an xgboost Booster"):
        surrogate.read_booster_bytes(tmp_path / "function")


def _one_member_folder(tmp_path: Path, member: bytes) -> Path:
    from tests.test_fuzz_inputs import booster_pickle

    folder = tmp_path / "xgb"
    (folder / "ensemble_member_0").mkdir(parents=True)
    (folder / "model_config.json").write_text('{"model": "xgb"}')
    (folder / "data_config.json").write_text("{}")
    (folder / "ensemble_member_0" / "surrogate_model.model").write_bytes(booster_pickle(member))
    return folder


def test_a_corrupt_model_whose_xgboost_message_is_not_text_is_one_line(tmp_path, monkeypatch):
    xgboost = pytest.importorskip("xgboost")
    from nasbench301_eval import surrogate

    def undecodable(*args, **kwargs):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")  # as xgboost's own message does

    monkeypatch.setattr(xgboost.Booster, "__setstate__", undecodable)
    monkeypatch.setattr(xgboost.Booster, "load_model", undecodable)
    with pytest.raises(surrogate.SurrogateModelError, match="cannot read this model .*not readable text"):
        surrogate.load_booster(_one_member_folder(tmp_path, b"junk") / "ensemble_member_0" / "surrogate_model.model")


def test_a_model_that_crashes_xgboost_is_one_line_and_this_process_lives(tmp_path, monkeypatch):
    pytest.importorskip("xgboost")
    from nasbench301_eval import surrogate

    # Some corrupt models make xgboost segfault; the child process that reads them first stands in here.
    monkeypatch.setattr(surrogate, "_PROBE", "import os; os.abort()")
    with pytest.raises(surrogate.SurrogateModelError, match=r"surrogate_model.model: xgboost crashed .*signal 6"):
        surrogate.SurrogateEnsemble.load(_one_member_folder(tmp_path, b"junk"))


def test_a_corrupt_real_model_is_one_line(tmp_path):
    """A model xgboost really cannot read (bytes it never wrote), through the child process and back."""
    pytest.importorskip("xgboost")
    from nasbench301_eval import surrogate

    with pytest.raises(surrogate.SurrogateModelError, match="cannot read this model|crashed"):
        surrogate.SurrogateEnsemble.load(_one_member_folder(tmp_path, b"{\x00\xff not a model"))


# ---- data ----------------------------------------------------------------------------------------------
def _cifar_folder(tmp_path: Path, batch: object, meta: object) -> tuple[Path, dict]:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, record in (("test_batch", batch), ("batches.meta", meta)):
        (folder / name).write_bytes(pickle.dumps(record, protocol=2))
    return tmp_path, {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


META = {b"label_names": [b"c%d" % i for i in range(10)]}


def test_a_planted_cifar_folder_is_refused_by_its_md5s_before_unpickling(tmp_path):
    root, _ = _cifar_folder(tmp_path, {b"data": _ArrayOf(_StructuredDtype()), b"labels": [0]}, META)
    with pytest.raises(DataError, match="test_batch has MD5 .* expected 40351d587109b95175f43aff81a1287e"):
        read_dataset("cifar10", root, "test")


def test_float_cifar_data_is_refused_not_wrapped(tmp_path):
    data = np.full((2, 3072), 300.7, dtype=np.float32)
    root, sums = _cifar_folder(tmp_path, {b"data": data, b"labels": [0, 1]}, META)
    with pytest.raises(DataError, match="float32 array, not uint8"):
        read_cifar(root, "cifar10", "test", member_md5=sums)


def test_a_cifar_meta_that_is_an_array_is_refused(tmp_path):
    root, sums = _cifar_folder(tmp_path, {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, np.zeros(3))
    with pytest.raises(DataError, match="batches.meta holds a ndarray, not the CIFAR meta dict"):
        read_cifar(root, "cifar10", "test", member_md5=sums)


def _idx(dims: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


@pytest.mark.parametrize("payload, message", [
    (_idx((), b""), "no dimensions"),
    (_idx((65536, 65536, 65536, 65536), b""), "more than"),  # the product is 2**64: 0 in int64
    (_idx((2, 3), b"\0" * 7), "holds more than 6 bytes"),
    (_idx((2, 3), b"\0" * 5), "holds 5 bytes"),
    (_idx((0, 28, 28), b""), "no data"),
])
def test_idx_headers_that_lie_are_one_line(tmp_path, payload, message):
    (tmp_path / "x").write_bytes(payload)
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "x")


def test_fashion_mnist_downloads_over_https_and_keeps_only_the_published_files(tmp_path, monkeypatch):
    import urllib.request

    assert all(url.startswith("https://") for url in IDX_URLS.values())
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(b"not the published file")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DataError, match="has MD5 .*, expected bef4ecab320f06d8554ea6380940ec79: not kept"):
        read_dataset("fashion_mnist", tmp_path, "test", download=True)
    assert asked[0].startswith("https://") and list(tmp_path.iterdir()) == []


def _metadata(tmp_path: Path, edit) -> Path:
    record = {"format": 1, "info": {"name": "digits", "num_classes": 10, "in_channels": 1, "image_size": [8, 8],
                                    "mean": [77.0], "std": [95.0], "train_count": 2, "test_count": 1},
              "files": {split: {"name": f"digits_{split}.beton", "sha256": "0" * 64, "bytes": 0, "count": 1}
                        for split in ("train", "test")}}
    edit(record)
    (tmp_path / "digits_metadata.json").write_text(json.dumps(record))
    return tmp_path


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["files"].__setitem__("train", "digits_train.beton"), "files.train: a str"),
    (lambda r: r["files"]["train"].pop("bytes"), "bytes is None"),
    (lambda r: r["files"]["test"].__setitem__("sha256", None), "sha256 is None"),
    (lambda r: r["info"].__setitem__("num_classes", -10), "num_classes is -10"),
    (lambda r: r["info"].__setitem__("mean", [float("nan")]), "mean is \\[nan\\]"),
])
def test_check_refuses_malformed_beton_metadata_in_one_line(tmp_path, capsys, edit, message):
    from data import write_ffcv

    out = _metadata(tmp_path, edit)
    line = one_line_exit_2(write_ffcv.main, ["--dataset", "digits", "--out", str(out), "--check"], capsys)
    assert "not a valid metadata file" in line and __import__("re").search(message, line), line


def test_write_ffcv_without_ffcv_is_one_line(tmp_path, capsys, monkeypatch):
    from data import write_ffcv

    for module in ("ffcv", "ffcv.fields", "ffcv.writer"):
        monkeypatch.setitem(sys.modules, module, None)  # `import ffcv...` raises ImportError
    line = one_line_exit_2(write_ffcv.main, ["--dataset", "digits", "--out", str(tmp_path / "out")], capsys)
    assert line.startswith("error: ffcv is not installed")
    assert not (tmp_path / "out").exists()  # nothing read or written first


# ---- genotypes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("concat, message", [
    ("range(2,6,0)", "not a valid range"),
    ("5", "expected a non-empty list of node ids, got 5"),
    ("None", "expected a non-empty list of node ids, got None"),
    ("range(2, 3000000000)", "holds 2999999998 values"),
    ("tuple(int)", "must be a literal list"),
])
def test_legacy_genotype_concats(concat, message):
    with pytest.raises(GenotypeError, match=message):
        parse_legacy(f"Genotype(normal={DARTS_NORMAL}, normal_concat={concat})")


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000, "not valid JSON \\(nested too deeply\\)"),
    ('{"normal": [["sep_conv_3x3", ' + "9" * 5000 + "]]}", "not valid JSON"),
    ("Genotype(normal=" + "[" * 100_000 + ")", "not a Genotype"),
    ("Genotype(normal=[('sep_conv_3x3', " + "9" * 5000 + ")])", "not a Genotype"),
    ('{"normal": 5}', "expected a list of 8"),
])
def test_genotype_files_that_broke_the_parser(tmp_path, text, message):
    (tmp_path / "g.json").write_text(text)
    with pytest.raises(GenotypeError, match=message):
        load_genotype(tmp_path / "g.json")


def test_a_genotype_file_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "g.json").write_bytes(b'{"normal": "\xff"}')
    with pytest.raises(GenotypeError, match="not UTF-8"):
        load_genotype(tmp_path / "g.json")


# ---- configs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("seed=-1", "'seed' must be an integer in 0..4294967295"),
    ("seed=4294967296", "'seed' must be an integer in 0..4294967295"),
    ("seed=100000000000000000000000", "'seed' must fit in 64 bits"),
    ("optim.learning_rate=.inf", "'optim.learning_rate' must be a finite number"),
    ("optim.learning_rate=.nan", "'optim.learning_rate' must be a finite number"),
    ("optim.momentum=-1", "'optim.momentum' must be in \\[0, 1\\)"),
    ("optim.momentum=1", "'optim.momentum' must be in \\[0, 1\\)"),
])
def test_impossible_config_values_name_their_key(override, message):
    from evaluation.recipe import EvalConfig

    with pytest.raises(ConfigError, match=message):
        load_config(EvalConfig, None, [override])


@pytest.mark.parametrize("search, override, message", [
    ("evolution", "save=", "'save' must name a folder"),
    ("evolution", "optim.learning_rate=.inf", "'optim.learning_rate' must be a finite number"),
    ("evolution", "optim.momentum=-1", "'optim.momentum' must be in"),
    ("evolution", "note=" + "n" * 300, "'note' must be a plain folder name of at most 255 bytes"),
    ("supernet", "save=", "'save' must name a folder"),
    ("supernet", "weights.learning_rate=.inf", "'weights.learning_rate' must be a finite number"),
    ("supernet", "weights.momentum=-1", "'weights.momentum' must be in"),
    ("supernet", "seed=-2", "'seed' must be an integer"),
])
def test_search_configs_refuse_them_too(search, override, message):
    from perturb.config import EvolutionConfig
    from supernet.config import SupernetConfig

    config_type = EvolutionConfig if search == "evolution" else SupernetConfig
    with pytest.raises(ConfigError, match=message):
        load_config(config_type, None, [override, "data.backend=memory"])


def test_a_yaml_bomb_is_refused_quickly(tmp_path):
    from evaluation.recipe import EvalConfig

    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="more than 100000 values"):
        load_config(EvalConfig, tmp_path / "bomb.yaml")


# ---- outputs ----------------------------------------------------------------------------------------------
def test_atomic_writes_never_follow_a_planted_symlink(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(names))
    os.symlink(victim, tmp_path / ".out.json.planted.tmp")
    atomic.write_atomically(tmp_path / "out.json", b"new")
    assert victim.read_text() == "keep me" and (tmp_path / "out.json").read_bytes() == b"new"
    assert os.path.islink(tmp_path / ".out.json.planted.tmp")  # left alone, not written through


def _quick_eval_args(run_dir: Path, genotype: str = "DARTS_V2", *extra: str) -> list[str]:
    sets = ["network.channels=4", "network.layers=3", "data.batch_size=16", "data.eval_batch_size=64",
            "data.num_workers=1", "device=cpu", "threads=1", "data.dataset=digits", "epochs=2",
            "max_steps_per_epoch=1", *extra]
    return [genotype, "--config", str(REPO / "configs" / "eval_quick.yaml"), "--run-dir", str(run_dir),
            *[arg for item in sets for arg in ("--set", item)]]


@pytest.mark.parametrize("where", ["a_file", "under_proc", "long_name"])
def test_every_cli_says_one_line_for_an_unusable_output_path(tmp_path, capsys, where):
    import search_evolutionary
    import search_supernet
    import train_eval
    from data import write_ffcv
    from space import visualize

    (tmp_path / "a_file").write_text("not a folder")
    out = {"a_file": tmp_path / "a_file", "under_proc": Path("/proc/no_such_dir"),
           "long_name": tmp_path / ("x" * 300)}[where]
    one_line_exit_2(train_eval.main, _quick_eval_args(out), capsys)
    one_line_exit_2(write_ffcv.main, ["--dataset", "digits", "--out", str(out)], capsys)
    one_line_exit_2(visualize.main, ["DARTS_V2", "--out", str(out / "cells")], capsys)
    quick = ["--config", str(REPO / "configs" / "quickstart.yaml")]
    one_line_exit_2(search_evolutionary.main, [*quick, "--save", str(out)], capsys)
    one_line_exit_2(search_supernet.main, ["--config", str(REPO / "configs" / "supernet_quick.yaml"), "--save",
                                           str(out)], capsys)
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_a_300_character_note_is_one_line(tmp_path, capsys):
    import search_evolutionary

    line = one_line_exit_2(search_evolutionary.main, ["--config", str(REPO / "configs" / "quickstart.yaml"),
                                                      "--save", str(tmp_path), "--note", "n" * 300], capsys)
    assert "'note'" in line and list(tmp_path.iterdir()) == []


def test_a_directory_where_a_checkpoint_goes_is_one_line(tmp_path, capsys):
    import train_eval

    (tmp_path / "checkpoints" / "ckpt_000000001.pt").mkdir(parents=True)
    line = one_line_exit_2(train_eval.main, _quick_eval_args(tmp_path), capsys)
    assert "ckpt_000000001.pt is not a file" in line


# ---- checkpoints -----------------------------------------------------------------------------------------
def _checkpoint(tmp_path: Path, **changes) -> CheckpointManager:
    payload = {"format": 1, "step": 1, "world_size": 1, "rng": [capture_rng_state()],
               "state": {"model": {"w": torch.ones(1)}, "epoch": 1}}
    payload.update(changes)
    manager = CheckpointManager(tmp_path, WORLD_OF_ONE)
    manager.path_for(1).write_bytes(encode_checkpoint(payload))
    return manager


@pytest.mark.parametrize("changes, message", [
    ({"state": {"epoch": 1}}, "no 'model' entry"),
    ({"rng": []}, "no RNG state per rank"),
    ({"rng": [{"python": 1, "numpy": 2, "torch": 3}]}, "malformed python entry"),
    ({"rng": [{**capture_rng_state(), "torch": torch.zeros(3, dtype=torch.uint8)}]}, "malformed torch entry"),
    ({"step": "one"}, "no step"),
    ({"state": [1, 2]}, "no state"),
])
def test_a_checksum_valid_checkpoint_with_the_wrong_structure_is_one_line(tmp_path, changes, message):
    manager = _checkpoint(tmp_path, **changes)
    with pytest.raises(CheckpointInvalid, match=message):
        manager.load_latest(expect={"model": dict, "epoch": int})


def test_resuming_another_architecture_or_another_lr_is_refused_and_nothing_is_renamed(tmp_path, capsys):
    import train_eval

    run_dir = tmp_path / "run"
    assert train_eval.main(_quick_eval_args(run_dir, "DARTS_V2", "epochs=1")) == 0
    capsys.readouterr()  # its log lines
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.suffix != ".txt"}

    line = one_line_exit_2(train_eval.main, _quick_eval_args(run_dir, "PERTNAS_EVOLUTIONARY", "epochs=1"), capsys)
    assert "genotype.normal" in line and "another --note (or --run-dir)" in line
    line = one_line_exit_2(train_eval.main,
                           _quick_eval_args(run_dir, "DARTS_V2", "epochs=1", "optim.learning_rate=0.5"), capsys)
    assert "was started with optim.learning_rate = " in line and "this run has optim.learning_rate = 0.5" in line
    line = one_line_exit_2(train_eval.main, _quick_eval_args(run_dir, "DARTS_V2", "epochs=1", "seed=3"), capsys)
    assert "seed = 0, this run has seed = 3" in line

    # Without the fingerprint (a run dir from before it existed), the checkpoint itself is refused, and
    # still before config.yaml is renamed (the changed threads makes a new config.yaml).
    (run_dir / "fingerprint.json").unlink()
    del before["fingerprint.json"]
    line = one_line_exit_2(train_eval.main, _quick_eval_args(run_dir, "PERTNAS_EVOLUTIONARY", "epochs=1",
                                                             "threads=2"), capsys)
    assert "weights of another architecture" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.suffix != ".txt"} == before


def test_the_fingerprint_ignores_where_the_data_is_and_compares_what_changes_results(tmp_path):
    from evaluation.recipe import EvalConfig

    config = load_config(EvalConfig, None, ["data.data_dir=/a", "data.num_workers=3", "data.batch_size=96"])
    moved = load_config(EvalConfig, None, ["data.data_dir=/b", "data.num_workers=1", "data.batch_size=96"])
    sections = ("seed", "data", "optim")
    check_fingerprint(tmp_path, result_fingerprint(config, sections), is_main=True)
    check_fingerprint(tmp_path, result_fingerprint(moved, sections), is_main=True)  # moving the data is fine
    other = load_config(EvalConfig, None, ["data.batch_size=7"])
    with pytest.raises(ResumeMismatchError, match="data.batch_size = 96, this run has data.batch_size = 7"):
        check_fingerprint(tmp_path, result_fingerprint(other, sections), is_main=True)


@pytest.mark.parametrize("module, args", [
    ("search_evolutionary", ["--npop", "abc"]),
    ("search_supernet", ["--method", "nope"]),
    ("train_eval", []),
    ("data.write_ffcv", ["--dataset", "nope", "--out", "x"]),
    ("nasbench301_eval.score", ["DARTS_V2", "--seed", "1.5"]),
    ("space.visualize", ["DARTS_V2", "--format", "gif"]),
])
def test_a_malformed_command_line_is_one_line_too(capsys, module, args):
    import importlib

    line = one_line_exit_2(importlib.import_module(module).main, args, capsys)
    assert "(see --help)" in line
