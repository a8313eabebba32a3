"""Stage A's member files (a rank's resume record) and the exchange of all members' rows (world of one here;
tests/test_search_evolutionary_torchrun.py runs it on two ranks and two "nodes")."""
import json
import math

import pytest
import torch

from launch.distributed import DistEnv
from perturb.stage_a_records import MemberRecords, SearchStateError, exchange

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)


def full_member(n_ops=3, value=-1.0):
    return {str(edge): {"scores": [value] * n_ops, "reference": 90.0, "standard_errors": [0.5] * n_ops}
            for edge in range(14)}


@pytest.mark.parametrize("content, fragment", [
    ("[1, 2]", "expected an object of edges"),
    (json.dumps({"0": {"reference": 1.0}}), "edge 0 needs 'scores'"),
    (json.dumps({"0": {"scores": [1.0, 2.0]}}), "edge 0 needs 'scores'"),  # a short row
    ('{"0": {"scores": [NaN, 1.0, 2.0]}}', "edge 0 needs 'scores'"),
    ('{"0": {"scores": [Infinity, 1.0, 2.0]}}', "edge 0 needs 'scores'"),
    (json.dumps({"-1": {"scores": [1.0, 2.0, 3.0]}}), "'-1' is not an edge"),
    (json.dumps({"13.0": {"scores": [1.0, 2.0, 3.0]}}), "'13.0' is not an edge"),
    ("{not json", "cannot be read"),
])
def test_a_tampered_member_file_is_one_line(tmp_path, content, fragment):
    files = MemberRecords(tmp_path, n_ops=3)
    files.directory.mkdir()
    files.path(0).write_text(content)
    with pytest.raises(SearchStateError, match=fragment) as error:
        files.read(0)
    assert "\n" not in str(error.value) and "member 0" in str(error.value)


def test_member_files_round_trip_and_refuse_other_settings(tmp_path):
    files = MemberRecords(tmp_path, n_ops=3, fingerprint="abc")
    files.write(1, full_member())
    assert files.read(1) == full_member() and files.read(0) == {}
    with pytest.raises(SearchStateError, match="other settings"):
        MemberRecords(tmp_path, n_ops=3, fingerprint="xyz").read(1)
    files.delete_all()
    assert not files.directory.exists()


def test_exchange_returns_every_row_and_stops_on_a_missing_or_non_finite_one():
    merged = exchange({0: full_member(), 1: full_member(value=-2.0)}, npop=2, n_ops=3, env=ENV)
    assert merged[1]["5"]["scores"] == [-2.0] * 3 and merged[0]["5"]["reference"] == 90.0
    missing = full_member()
    del missing["7"]
    with pytest.raises(SearchStateError, match="member 1 edge 7 has no score from rank 0"):
        exchange({0: full_member(), 1: missing}, npop=2, n_ops=3, env=ENV)
    broken = full_member()
    broken["2"]["scores"] = [math.nan, 0.0, 0.0]
    with pytest.raises(SearchStateError, match="member 0 edge 2 has a non-finite score"):
        exchange({0: broken, 1: full_member()}, npop=2, n_ops=3, env=ENV)
