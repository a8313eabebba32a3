"""bench/batched_candidates.py: the vmap-batched candidates give the sequential path's gradients (to float
tolerance: not bit-identical), and the compile measurement sees a mask change recompile."""
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from bench.batched_candidates import EDGE, batched_gradients, build, sequential_gradients
from space.ops import PRIMITIVES

ROOT = Path(__file__).resolve().parents[1]


def test_batched_gradients_equal_the_sequential_ones_to_float_tolerance():
    network, images, labels = build(channels=4, layers=2, batch=4)
    sequential = sequential_gradients(network, images, labels)
    batched = batched_gradients(network, images, labels)
    assert set(batched) == set(sequential[0])
    for c, op in enumerate(PRIMITIVES):
        for name, g in sequential[c].items():
            torch.testing.assert_close(batched[name][c], g, rtol=1e-4, atol=1e-5)
        # the removed op's parameters (of every cell) get no gradient in either path
        removed = [name for name in g_names(network) if f"edges.{EDGE}.ops.{c}." in name]
        for name in removed:
            assert not sequential[c][name].any() and not batched[name][c].any()
    # and the candidates do differ (the masks took effect)
    shared = "classifier.weight"
    assert not torch.allclose(batched[shared][0], batched[shared][3])


def g_names(network):
    return [name for name, _ in network.named_parameters()]


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "batched_candidates.py"), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_vmap_cli_prints_the_ratio_and_the_difference():
    out = run("vmap", "--channels", "2", "--layers", "1", "--batch", "2", "--repeats", "1", "--threads", "1")
    assert re.search(r"^ratio batched / sequential: time x[0-9.]+$", out, re.M), out
    relative = float(re.search(r"relative to max \|g\| \S+: (\S+)\)", out).group(1))
    assert relative < 1e-4


def test_compile_cli_counts_the_recompile_of_a_mask_change():
    out = run("compile", "--channels", "2", "--layers", "1", "--batch", "2", "--steps", "1", "--threads", "1",
              "--backend", "eager")
    first = int(re.search(r"first compiled step .*\((\d+) graphs compiled\)", out).group(1))
    after = int(re.search(r"after a mask change .*graphs compiled so far (\d+)\)", out).group(1))
    back = int(re.search(r"mask restored .*graphs compiled so far (\d+)\)", out).group(1))
    assert first >= 1 and after > first and back == after, out
