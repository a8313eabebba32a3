"""The NASBench-301 xgb surrogate: an ensemble of xgboost boosters, read safely from its model folder.

Folder layout (NB301 v0.9 / v1.0, e.g. ``nb_models/xgb_v1.0``)::

    model_config.json                         {"model": "xgb", "param:bananas_enc": false, ...}
    data_config.json
    ensemble_member_0/surrogate_model.model   a pickled xgboost.Booster (NB301 XGBModel.save: pickle.dump)
    ensemble_member_1/surrogate_model.model   (each member folder may hold its own *_config.json copies)
    ...

Prediction for feature vectors ``X`` (shape ``(M, 56)``, see :mod:`nasbench301_eval.encoding`): each of
the ``K`` members gives ``y_k(X)`` (validation accuracy in %); the surrogate's answer is
``mean = (1/K) sum_k y_k`` and ``std = sqrt((1/K) sum_k (y_k - mean)^2)`` (population std, as NB301's
``np.std``), and ``with_noise`` draws ``N(mean, std^2)``.

The member files are pickles. They are never given to :func:`pickle.load`: the restricted unpickler of
:mod:`common.restricted_pickle` admits only the globals a pickled Booster refers to
(``xgboost.core.Booster``, ``bytearray``; ``_codecs.encode`` in protocol-2 pickles;
``copyreg._reconstructor`` and ``object`` in protocols 0 and 1) and maps each to an inert stand-in, so the
pickle can build nothing but a record of the Booster's state dict (BUILD reaches that record only, never
a stand-in, and length fields are checked against the file). The Booster is then rebuilt by the installed
xgboost from the raw model bytes in that dict (``state["handle"]``). Any other global refuses the file
before anything runs. Some corrupt model bytes crash xgboost itself (a segfault in its unserialiser), so
the members are first read by xgboost in a child process (:func:`probe_members`); a crash there is one
line here, and only models that passed are read into this process.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from common.atomic import parse_json
from common.errors import UserInputError, short_repr
from common.restricted_pickle import PickleMalformed, PickleRefused, Record, load_restricted
from nasbench301_eval.encoding import VECTOR_LENGTH

MEMBER_GLOB = "ensemble_member_*"
MEMBER_FILE = "surrogate_model.model"
SUPPORTED_MODELS = ("xgb",)
# model_config flags that switch the surrogate to a different input encoding than get_array().
ENCODING_FLAGS = ("param:bananas_enc",)
XGBOOST_HINT = "pip install -r requirements-extras.txt (or: pip install 'xgboost>=1.7')"


class SurrogateModelError(UserInputError):
    """A surrogate folder that cannot be read: missing, incomplete, corrupt, or of an unsupported kind."""


class UnsafePickleError(SurrogateModelError):
    """A member file whose pickle refers to something other than an xgboost Booster; nothing in it was run."""


class MissingXGBoostError(UserInputError):
    """xgboost (an optional extra) is not installed."""


def import_xgboost() -> Any:
    """The xgboost module, imported on first use; a one-line :class:`MissingXGBoostError` when absent."""
    try:
        import xgboost
    except ImportError as error:
        raise MissingXGBoostError(f"reading the NB301 surrogate needs xgboost ({error}); {XGBOOST_HINT}") from None
    return xgboost


# ---- the restricted unpickler ---------------------------------------------------------------------
class _BoosterRecord(Record):
    """Stand-in for ``xgboost.core.Booster`` while unpickling: BUILD gives it the Booster's state dict."""


def _bytearray_from(data: Any = b"", encoding: str | None = None) -> bytearray:
    """``bytearray(bytes)`` or, in protocol-2 pickles, ``bytearray(str, 'latin-1')``; nothing else."""
    if isinstance(data, (bytes, bytearray)) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in ("latin-1", "latin1"):
        return bytearray(data, "latin-1")
    raise PickleRefused("bytearray(...) with arguments other than bytes")


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode(str, 'latin1')``: how protocol-2 pickles store bytes."""
    if isinstance(text, str) and encoding in ("latin-1", "latin1"):
        return text.encode("latin-1")
    raise PickleRefused("_codecs.encode(...) with arguments other than (str, 'latin1')")


_OBJECT_BASE = object()  # stands for ``object`` in _reconstruct's arguments; not callable


def _reconstruct(cls: Any, base: Any, state: Any) -> _BoosterRecord:
    """``copyreg._reconstructor(Booster, object, None)`` (protocols 0 and 1), for the stand-in only."""
    if cls is not _BoosterRecord or base is not _OBJECT_BASE or state is not None:
        raise PickleRefused("copyreg._reconstructor for something other than a Booster")
    return _BoosterRecord()


_ADMITTED = {
    ("xgboost.core", "Booster"): _BoosterRecord,
    ("builtins", "bytearray"): _bytearray_from,
    ("__builtin__", "bytearray"): _bytearray_from,
    ("_codecs", "encode"): _latin1_encode,
    ("copyreg", "_reconstructor"): _reconstruct,
    ("copy_reg", "_reconstructor"): _reconstruct,
    ("builtins", "object"): _OBJECT_BASE,
    ("__builtin__", "object"): _OBJECT_BASE,
}


def read_booster_bytes(path: str | Path) -> bytearray:
    """The raw model bytes (``state["handle"]``) of a pickled xgboost Booster, read without running code.

    Raises :class:`UnsafePickleError` when the pickle refers to anything a Booster does not need, and
    :class:`SurrogateModelError` when it is not a pickled Booster at all.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SurrogateModelError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        record = load_restricted(data, _ADMITTED)
    except PickleRefused as error:
        raise UnsafePickleError(f"{path}: not a plain pickled xgboost Booster ({error}); nothing was run") from None
    except PickleMalformed as error:
        raise SurrogateModelError(f"{path}: corrupt pickle ({error})") from None
    if not isinstance(record, _BoosterRecord) or not isinstance(record.state, dict):
        what = "a Booster without state" if isinstance(record, _BoosterRecord) else f"a {type(record).__name__}"
        raise SurrogateModelError(f"{path}: the pickle holds {what}, not an xgboost Booster")
    handle = record.state.get("handle")
    if not isinstance(handle, bytearray) or not handle:
        raise SurrogateModelError(f"{path}: the pickled Booster holds no model bytes")
    return handle


def load_booster(path: str | Path) -> Any:
    """An ``xgboost.Booster`` rebuilt by the installed xgboost from a member file's raw model bytes.

    The bytes are what ``Booster.__getstate__`` stored (a memory snapshot, or the binary model of
    xgboost < 1.0): they are given to xgboost's own unserialiser, as unpickling does, and failing that to
    ``Booster.load_model``. xgboost reports some corrupt models with a message it cannot decode itself
    (a UnicodeDecodeError): that is a corrupt model too. Some corrupt models crash xgboost outright, which
    is why :meth:`SurrogateEnsemble.load` first reads the members in a child process (:func:`probe_members`).
    """
    xgboost = import_xgboost()
    raw = read_booster_bytes(path)
    failures = (xgboost.core.XGBoostError, UnicodeDecodeError, ValueError, TypeError)
    booster = xgboost.Booster.__new__(xgboost.Booster)
    try:
        with warnings.catch_warnings():  # xgboost warns that the file is an old version's serialisation
            warnings.simplefilter("ignore", UserWarning)
            booster.__setstate__({"handle": bytearray(raw)})
        return booster
    except failures as snapshot_error:
        first = _first_line(snapshot_error)
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(raw))
    except failures:
        raise SurrogateModelError(
            f"{path}: xgboost {xgboost.__version__} cannot read this model ({first}); the file is corrupt, or was "
            f"saved by an old xgboost whose format needs an xgboost release that still reads it") from None
    return booster


def _first_line(error: BaseException) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "xgboost's own error message is not readable text"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_booster(path: Path, booster: Any) -> None:
    """Refuse a booster that does not read NB301's vector, or cannot predict one."""
    xgboost = import_xgboost()
    try:
        features = booster.num_features()
        if features == VECTOR_LENGTH:
            booster.predict(xgboost.DMatrix(np.zeros((1, VECTOR_LENGTH))))
    except (xgboost.core.XGBoostError, UnicodeDecodeError, ValueError, TypeError) as error:
        raise SurrogateModelError(f"{path}: xgboost cannot use this model ({_first_line(error)})") from None
    if features != VECTOR_LENGTH:
        raise SurrogateModelError(f"{path}: the booster reads {features} features, not NB301's {VECTOR_LENGTH}")


def probe_members(paths: list[str]) -> None:
    """The child process of :func:`_probe_in_child`: load and check each member, saying ``ok PATH`` after each.

    A member that xgboost cannot read gives ``error: <one line>`` on stderr and exit status 2; one that
    crashes xgboost kills this process, not the caller.
    """
    for path in paths:
        try:
            check_booster(Path(path), load_booster(path))
        except UserInputError as error:
            print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"ok {path}", flush=True)


_PROBE = "import sys; from nasbench301_eval.surrogate import probe_members; probe_members(sys.argv[1:])"
PROBE_TIMEOUT_S = 600


def _probe_in_child(member_files: list[Path]) -> None:
    """Read every member once in a child process, so a model that crashes xgboost fails one line here."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE, *map(str, member_files)], env=env,
                                capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SurrogateModelError(f"reading the surrogate members took over {PROBE_TIMEOUT_S} s") from None
    if result.returncode == 0:
        return
    lines = result.stderr.strip().splitlines()
    if result.returncode == 2 and lines and lines[-1].startswith("error: "):
        raise SurrogateModelError(lines[-1][len("error: "):])
    done = {line[3:] for line in result.stdout.splitlines() if line.startswith("ok ")}
    culprit = next((path for path in map(str, member_files) if path not in done), "a member file")
    how = f"signal {-result.returncode}" if result.returncode < 0 else f"exit status {result.returncode}"
    raise SurrogateModelError(f"{culprit}: xgboost crashed reading this model ({how}); the file is corrupt")


# ---- the ensemble ----------------------------------------------------------------------------------
@dataclass
class SurrogateEnsemble:
    """The K boosters of one NB301 surrogate folder and its configs."""

    folder: Path
    boosters: tuple[Any, ...]
    model_config: Mapping[str, Any] = field(default_factory=dict)
    data_config: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path) -> "SurrogateEnsemble":
        """Read ``folder`` (see the module docstring); refuse unsupported models before reading any pickle."""
        folder = Path(folder)
        if not folder.is_dir():
            raise SurrogateModelError(f"surrogate folder {folder} does not exist (or is not a folder)")
        member_files = member_paths(folder)
        model_config = _read_config(folder, member_files, "model_config.json")
        data_config = _read_config(folder, member_files, "data_config.json")
        check_model_config(model_config, folder)
        import_xgboost()
        for path in member_files:  # refuse unsafe or broken pickles here, before any model reaches xgboost
            read_booster_bytes(path)
        _probe_in_child(member_files)
        boosters = tuple(load_booster(path) for path in member_files)
        for path, booster in zip(member_files, boosters):
            check_booster(path, booster)
        return cls(folder=folder, boosters=boosters, model_config=model_config, data_config=data_config)

    def member_predictions(self, vectors: np.ndarray) -> np.ndarray:
        """``y_k(X)`` for every member: shape ``(K, M)`` float64 for ``vectors`` of shape ``(M, 56)``."""
        vectors = _as_matrix(vectors)
        xgboost = import_xgboost()
        matrix = xgboost.DMatrix(vectors)
        return np.stack([np.asarray(booster.predict(matrix), dtype=np.float64) for booster in self.boosters])

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble ``(mean, std)`` over members, each of shape ``(M,)``."""
        predictions = self.member_predictions(vectors)
        return predictions.mean(axis=0), predictions.std(axis=0)

    def sample(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """NB301's ``with_noise`` prediction: one draw of ``N(mean, std^2)`` per vector, shape ``(M,)``."""
        mean, std = self.predict(vectors)
        return rng.normal(mean, std)

    def __len__(self) -> int:
        return len(self.boosters)


def member_paths(folder: Path) -> list[Path]:
    """``ensemble_member_*/surrogate_model.model`` in member order (numeric suffix)."""
    paths = [path for path in folder.glob(f"{MEMBER_GLOB}/{MEMBER_FILE}") if path.is_file()]
    if not paths:
        raise SurrogateModelError(f"{folder} holds no {MEMBER_GLOB}/{MEMBER_FILE}: is it an NB301 surrogate "
                                  f"folder such as nb_models/xgb_v1.0?")
    return sorted(paths, key=_member_order)


def check_model_config(model_config: Mapping[str, Any], folder: Path) -> None:
    """Refuse a surrogate that is not an xgb ensemble fed the ``get_array()`` vector."""
    model = model_config.get("model")
    if model not in SUPPORTED_MODELS:
        raise SurrogateModelError(f"{folder}: model_config.json has model {short_repr(model)}; only the xgboost "
                                  f"surrogate ({', '.join(SUPPORTED_MODELS)}, e.g. nb_models/xgb_v1.0) can be read")
    for flag in ENCODING_FLAGS:
        if model_config.get(flag):
            raise SurrogateModelError(f"{folder}: model_config.json sets {flag} = {short_repr(model_config[flag])}, "
                                      f"an input encoding this reader does not implement")


def _read_config(folder: Path, member_files: list[Path], name: str) -> dict[str, Any]:
    """``folder/name``, or the first member folder's copy (where NB301's own loader reads it)."""
    for path in (folder / name, member_files[0].parent / name):
        if path.is_file():
            try:
                data = parse_json(path.read_bytes())
            except OSError as error:
                raise SurrogateModelError(f"cannot read {path}: {error.strerror or error}") from None
            except ValueError as error:
                raise SurrogateModelError(f"{path}: not readable JSON ({error})") from None
            if not isinstance(data, dict):
                raise SurrogateModelError(f"{path}: expected a JSON object")
            return data
    raise SurrogateModelError(f"{folder} has no {name} (looked in the folder and in {member_files[0].parent.name})")


def _member_order(path: Path) -> tuple[int, str]:
    match = re.search(r"(\d+)$", path.parent.name)
    return (int(match.group(1)) if match else -1, path.parent.name)


def _as_matrix(vectors: Any) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != VECTOR_LENGTH:
        raise ValueError(f"expected feature vectors of shape (M, {VECTOR_LENGTH}), got {matrix.shape}")
    return matrix
