"""Reading boosters pickled by the xgboost of the NB301 era (1.x, legacy binary model format).

The fixture in tests/fixtures/nb301_xgb_1.1.1 was written once by xgboost 1.1.1 (see its expected.json):
three boosters pickled with pickle.dump, as NB301 saved its surrogate, and their own predictions.
xgboost 3.1 dropped that format, which is why requirements-extras.txt caps xgboost below 3.1.
"""
import json
from pathlib import Path

import numpy as np
import pytest

xgboost = pytest.importorskip("xgboost", reason="xgboost is an optional extra (scripts/setup.sh installs it)")

from nasbench301_eval.surrogate import SurrogateEnsemble  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "nb301_xgb_1.1.1"


def test_boosters_pickled_by_xgboost_1_1_predict_as_they_did():
    expected = json.loads((FIXTURE / "expected.json").read_text())
    assert expected["xgboost"] == "1.1.1"
    ensemble = SurrogateEnsemble.load(FIXTURE)
    vectors = np.asarray(expected["vectors"])
    members = np.asarray(expected["member_predictions"])  # (3, 8), float32 values from xgboost 1.1.1
    mean, std = ensemble.predict(vectors)
    np.testing.assert_allclose(mean, members.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, members.std(axis=0), rtol=1e-4, atol=1e-6)
