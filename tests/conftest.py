"""Fixtures shared by several test files, and the hypothesis profiles of the fuzz tests.

Profiles: ``ci`` (the default: 40 examples per property, the same examples every run, no deadline, so the
suite stays short and stable on 2 shared cores) and ``long`` (2,000 fresh random examples per property)
for a deeper search: ``python -m pytest tests/test_fuzz_inputs.py --hypothesis-profile=long``.
"""
import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")  # --hypothesis-profile=NAME loads another one after this file is read


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread (and do not fight other jobs for the 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
