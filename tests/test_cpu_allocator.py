"""launch/cpu_allocator.py: after tune_cpu_allocator, freed activation-sized blocks are reused without
page faults; nothing is changed on CUDA or where the user set malloc's environment variables. Each case
runs in a fresh interpreter, so the test process's own allocator is left as it is."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tests.workers.eval_synthetic import REPO_ROOT

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt exists on Linux with glibc only")

CHILD = """
import json, resource, sys, torch
torch.set_num_threads(1)
from launch.cpu_allocator import tune_cpu_allocator
from launch.train import train_step
from space.search_network import SearchNetwork, full_candidates
tuned = tune_cpu_allocator(sys.argv[1]) if sys.argv[1] != "none" else False
torch.manual_seed(0)
network = SearchNetwork(3, 10, full_candidates(), None, channels=4, layers=3)
optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
faults = []
for _ in range(6):  # training steps of a small supernet: ~100 MB of activations made and freed per step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train_step(network, images, labels, optimizer)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"tuned": tuned, "faults": faults}))
"""


def run_child(device: str, **env: str) -> dict:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", CHILD, device], cwd=REPO_ROOT, env=environment,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_tuned_allocator_reuses_freed_memory_without_page_faults():
    tuned, default = run_child("cpu"), run_child("none")
    assert tuned["tuned"] is True and default["tuned"] is False
    # after the first steps: glibc's defaults give freed memory back and fault it in again at every step
    # (thousands of pages per step here, ~100,000 at the DARTS shape); tuned, it stays and is reused
    assert sum(default["faults"][3:]) > 3000
    assert sum(tuned["faults"][3:]) * 4 < sum(default["faults"][3:])


def test_nothing_changes_on_cuda_or_under_the_users_malloc_settings():
    assert run_child("cuda")["tuned"] is False
    assert run_child("cpu", MALLOC_ARENA_MAX="2")["tuned"] is False
