"""launch/session.py: the drivers' session sets up the run directory and seeding, and tears down on exit."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from launch.seeding import seed_everything
from launch.session import run_session


@pytest.fixture(autouse=True)
def _keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the session sets it for the rest of the process


def test_session_makes_the_run_dir_seeds_the_rank_and_closes_the_metrics_on_exit(tmp_path):
    seed_everything(7, 0)
    expected = torch.rand(3)
    with run_session(tmp_path / "run", seed=7, threads=1) as session:
        assert torch.equal(torch.rand(3), expected)  # seed + rank (rank 0 of a world of one)
        assert session.env.world_size == 1 and session.device == torch.device("cpu")
        assert (session.run_dir / "checkpoints").is_dir() and torch.get_num_threads() == 1
        metrics = session.metrics()
        assert session.metrics() is metrics  # one writer per session
        session.logger("session_test").info("hello")
        metrics.log(1, loss=0.5)
    assert session._metrics is None and not dist.is_initialized()
    assert "hello" in (tmp_path / "run" / "log.txt").read_text()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("loss") == 1


def test_session_tears_down_after_an_error(tmp_path, monkeypatch):
    import launch.session
    shutdowns = []
    monkeypatch.setattr(launch.session, "shutdown_distributed", lambda wait_for_others: shutdowns.append(wait_for_others))
    with pytest.raises(RuntimeError, match="boom"):
        with run_session(tmp_path / "run") as session:
            session.metrics()
            assert not shutdowns
            raise RuntimeError("boom")
    assert session._metrics is None and shutdowns == [False]  # writer closed, group shut down without a barrier
