"""Reading an NB301 xgb surrogate folder safely, and score.py end to end (nasbench301_eval)."""
from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

xgboost = pytest.importorskip("xgboost", reason="xgboost (an optional extra) reads the NB301 surrogate")

from nasbench301_eval.encoding import VECTOR_LENGTH, genotype_to_vector  # noqa: E402
from nasbench301_eval.surrogate import (  # noqa: E402
    MissingXGBoostError, SurrogateEnsemble, SurrogateModelError, UnsafePickleError, import_xgboost,
    read_booster_bytes,
)
from space.genotype import builtin_genotype, builtin_names  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCORE = REPO / "nasbench301_eval" / "score.py"
MEMBERS = 3


def _train_booster(seed: int, features: int = VECTOR_LENGTH) -> "xgboost.Booster":
    """A tiny regression booster on random data: targets like validation accuracies (90..95 %)."""
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(-1, 6, size=(300, features))
    targets = 90 + 5 * rng.random(300) + inputs[:, :4].sum(axis=1) * 0.1
    params = {"max_depth": 3, "eta": 0.3, "objective": "reg:squarederror", "seed": seed, "nthread": 1}
    return xgboost.train(params, xgboost.DMatrix(inputs, label=targets), num_boost_round=15)


def _write_folder(folder: Path, boosters, model_config=None, protocol=pickle.DEFAULT_PROTOCOL,
                  configs_in_members=False) -> Path:
    """The NB301 layout; each member saved as NB301's XGBModel.save does: pickle.dump(booster, file)."""
    folder.mkdir(parents=True, exist_ok=True)
    model_config = model_config or {"model": "xgb", "param:bananas_enc": False, "param:max_depth": 3}
    configs = {"model_config.json": model_config, "data_config.json": {"seed": 6}}
    for index, booster in enumerate(boosters):
        member = folder / f"ensemble_member_{index}"
        member.mkdir()
        with open(member / "surrogate_model.model", "wb") as handle:
            pickle.dump(booster, handle, protocol=protocol)
        if configs_in_members:
            for name, data in configs.items():
                (member / name).write_text(json.dumps(data))
    if not configs_in_members:
        for name, data in configs.items():
            (folder / name).write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def boosters():
    return [_train_booster(seed) for seed in range(MEMBERS)]


@pytest.fixture(scope="module")
def surrogate_folder(tmp_path_factory, boosters):
    return _write_folder(tmp_path_factory.mktemp("nb301") / "xgb_v1.0", boosters)


@pytest.fixture(scope="module")
def query_vectors():
    genotypes = np.stack([genotype_to_vector(builtin_genotype(name)) for name in builtin_names()])
    random_rows = np.random.default_rng(7).uniform(-1, 6, size=(5, VECTOR_LENGTH))
    return np.concatenate([genotypes, random_rows])


def _xgboost_reference(boosters, vectors):
    """What xgboost itself predicts: per-member predictions, then np.mean / np.std over members."""
    predictions = np.stack([booster.predict(xgboost.DMatrix(vectors)) for booster in boosters]).astype(np.float64)
    return predictions.mean(axis=0), predictions.std(axis=0)


def _malicious_pickle(marker: Path) -> bytes:
    """A pickle whose loading opens (creates) ``marker``: REDUCE of builtins.open."""
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    return pickle.dumps(Payload())


def _booster_with_payload(booster, marker: Path) -> bytes:
    """A real pickled Booster whose state dict also carries a payload, as a tampered member file would."""
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    tampered = booster.copy()
    tampered.payload = Payload()  # Booster.__getstate__ pickles the whole __dict__
    return pickle.dumps(tampered)


# ---- reading the folder ------------------------------------------------------------------------------
def test_mean_and_std_equal_xgboosts_own_predictions(surrogate_folder, boosters, query_vectors):
    ensemble = SurrogateEnsemble.load(surrogate_folder)
    assert len(ensemble) == MEMBERS
    assert ensemble.model_config["model"] == "xgb" and ensemble.data_config == {"seed": 6}
    mean, std = ensemble.predict(query_vectors)
    expected_mean, expected_std = _xgboost_reference(boosters, query_vectors)
    assert mean.shape == std.shape == (len(query_vectors),)
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(std, expected_std)
    assert (std > 0).all()  # the members really differ, so std is a real check


def test_noisy_sample_is_normal_around_the_mean_and_seeded(surrogate_folder, query_vectors):
    ensemble = SurrogateEnsemble.load(surrogate_folder)
    mean, std = ensemble.predict(query_vectors)
    first = ensemble.sample(query_vectors, np.random.default_rng(3))
    np.testing.assert_array_equal(first, np.random.default_rng(3).normal(mean, std))
    np.testing.assert_array_equal(first, ensemble.sample(query_vectors, np.random.default_rng(3)))
    assert not np.array_equal(first, ensemble.sample(query_vectors, np.random.default_rng(4)))
    many = ensemble.sample(np.repeat(query_vectors[:1], 400, axis=0), np.random.default_rng(0))
    assert abs(many.mean() - mean[0]) < 4 * std[0] / np.sqrt(400)
    assert 0.8 * std[0] < many.std() < 1.2 * std[0]


@pytest.mark.parametrize("protocol", [2, 3])
def test_older_pickle_protocols_and_configs_inside_members(tmp_path, boosters, query_vectors, protocol):
    """NB301 ran on Python 3.6/3.7 (protocol 3); configs may sit in the member folders (NB301's loader)."""
    folder = _write_folder(tmp_path / "xgb", boosters, protocol=protocol, configs_in_members=True)
    mean, std = SurrogateEnsemble.load(folder).predict(query_vectors)
    expected_mean, expected_std = _xgboost_reference(boosters, query_vectors)
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(std, expected_std)


def test_an_unimplemented_encoding_is_refused(tmp_path, boosters):
    folder = _write_folder(tmp_path / "xgb", boosters[:1], model_config={"model": "xgb", "param:bananas_enc": True})
    with pytest.raises(SurrogateModelError, match="param:bananas_enc = True, an input encoding this reader does "
                                                  "not implement"):
        SurrogateEnsemble.load(folder)


def test_other_surrogate_kinds_are_refused(tmp_path, boosters):
    folder = _write_folder(tmp_path / "gnn", boosters[:1], model_config={"model": "gnn_gin"})
    with pytest.raises(SurrogateModelError, match="model 'gnn_gin'; only the xgboost surrogate"):
        SurrogateEnsemble.load(folder)


def test_missing_folder_and_folder_without_members_are_refused(tmp_path):
    with pytest.raises(SurrogateModelError, match="does not exist"):
        SurrogateEnsemble.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model_config.json").write_text('{"model": "xgb"}')
    with pytest.raises(SurrogateModelError, match=r"holds no ensemble_member_\*/surrogate_model.model"):
        SurrogateEnsemble.load(tmp_path / "empty")


def test_boosters_of_the_wrong_width_are_refused(tmp_path):
    folder = _write_folder(tmp_path / "xgb", [_train_booster(0, features=10)])
    with pytest.raises(SurrogateModelError, match="reads 10 features, not NB301's 56"):
        SurrogateEnsemble.load(folder)


def test_missing_xgboost_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # makes `import xgboost` raise ImportError
    with pytest.raises(MissingXGBoostError, match="needs xgboost .*requirements-extras.txt"):
        import_xgboost()


# ---- pickles that would run code ---------------------------------------------------------------------------
def test_the_payload_really_runs_under_plain_pickle(tmp_path):
    """Control: the malicious pickles used below do create their marker when loaded by pickle itself."""
    marker = tmp_path / "control"
    pickle.load(io.BytesIO(_malicious_pickle(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("make", [_malicious_pickle, "booster_with_payload"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, surrogate_folder, boosters, make):
    marker = tmp_path / "pwned"
    data = _malicious_pickle(marker) if make is _malicious_pickle else _booster_with_payload(boosters[0], marker)
    folder = tmp_path / "xgb"
    shutil.copytree(surrogate_folder, folder)
    (folder / "ensemble_member_1" / "surrogate_model.model").write_bytes(data)
    with pytest.raises(UnsafePickleError, match=r"refusing global (io|builtins)\.open\); nothing was run"):
        SurrogateEnsemble.load(folder)
    with pytest.raises(UnsafePickleError):
        read_booster_bytes(folder / "ensemble_member_1" / "surrogate_model.model")
    assert not marker.exists()


def test_a_file_that_is_no_pickle_is_refused(tmp_path, surrogate_folder):
    folder = tmp_path / "xgb"
    shutil.copytree(surrogate_folder, folder)
    (folder / "ensemble_member_0" / "surrogate_model.model").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(SurrogateModelError, match="ensemble_member_0"):
        SurrogateEnsemble.load(folder)


# ---- score.py ------------------------------------------------------------------------------------------------
def _run_score(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCORE), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_score_cli_matches_xgboost(tmp_path, surrogate_folder, boosters):
    genotype_file = tmp_path / "cell.json"
    builtin_genotype("PERTNAS_EVOLUTIONARY").to_json(genotype_file, name="evo")
    result = _run_score("DARTS_V2", str(genotype_file), "PERTNAS_SUPERNET", "--models", str(surrogate_folder),
                        "--noise", "--seed", "5", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [record["name"] for record in records] == ["DARTS_V2", "cell", "PERTNAS_SUPERNET"]
    vectors = np.stack([genotype_to_vector(builtin_genotype(name))
                        for name in ("DARTS_V2", "PERTNAS_EVOLUTIONARY", "PERTNAS_SUPERNET")])
    expected_mean, expected_std = _xgboost_reference(boosters, vectors)
    np.testing.assert_array_equal([record["mean"] for record in records], expected_mean)
    np.testing.assert_array_equal([record["std"] for record in records], expected_std)
    np.testing.assert_array_equal([record["sample"] for record in records],
                                  np.random.default_rng(5).normal(expected_mean, expected_std))
    np.testing.assert_array_equal(records[0]["vector"], vectors[0])


def _run_main(capsys, *args: str) -> tuple[int, str, str]:
    """score.main in this process (cheaper than a subprocess): exit status, stdout, stderr."""
    from nasbench301_eval import score
    with pytest.raises(SystemExit) as exit_info:
        score.main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_score_cli_without_models_prints_config_and_vector_and_where_to_download(capsys):
    code, out, err = _run_main(capsys, "DARTS_V2")
    assert code == 2
    assert "NetworkSelectorDatasetInfo:darts:inputs_node_normal_5 = 0_2" in out
    assert "vector (56) = [" in out
    assert err.count("\n") == 1 and "figshare.com" in err and "--models" in err


def test_score_cli_refuses_unrepresentable_cells_and_malicious_models(tmp_path, surrogate_folder, capsys):
    genotype = builtin_genotype("DARTS_V2").to_dict()
    genotype["normal"][0] = ["conv_9x9", 0]
    (tmp_path / "g.json").write_text(json.dumps(genotype))
    code, _, err = _run_main(capsys, str(tmp_path / "g.json"), "--models", str(surrogate_folder))
    assert code == 2 and err.startswith("error: ") and "conv_9x9" in err and err.count("\n") == 1

    marker = tmp_path / "pwned"
    folder = tmp_path / "xgb"
    shutil.copytree(surrogate_folder, folder)
    (folder / "ensemble_member_2" / "surrogate_model.model").write_bytes(_malicious_pickle(marker))
    code, _, err = _run_main(capsys, "DARTS_V2", "--models", str(folder))
    assert code == 2 and "refusing global" in err and err.count("\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize("problem", ["bad_genotype_file", "missing_folder"])
def test_score_cli_errors_are_one_line_exit_2(tmp_path, problem):
    if problem == "bad_genotype_file":
        (tmp_path / "g.json").write_text('{"normal": [')
        args = [str(tmp_path / "g.json")]
    else:
        args = ["DARTS_V2", "--models", str(tmp_path / "absent")]
    result = _run_score(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert ("not valid JSON" if problem == "bad_genotype_file" else "does not exist") in result.stderr
