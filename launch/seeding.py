"""Seeding every random number generator the project touches, and saving/restoring their states.

Each rank is seeded with ``seed + rank`` so ranks draw different samples (dropout masks, crops, random
cells) while the same seed and world size always give the same run. Python's ``random``, numpy's global
generator and torch (CPU and every CUDA device) are all seeded.

RNG states are captured as plain tensors, ints, floats, lists and dicts, so a checkpoint holding them
loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> int:
    """Seed Python's random, numpy and torch (CPU + CUDA) with ``seed + rank``; return that seed.

    ``deterministic=True`` also asks torch for deterministic kernels
    (``torch.use_deterministic_algorithms``, cuDNN deterministic and no autotuning, and the cuBLAS
    workspace setting it needs); it is slower on GPU. ``False`` switches those back off.
    """
    effective = int(seed) + int(rank)
    random.seed(effective)
    np.random.seed(effective % 2**32)
    torch.manual_seed(effective)  # seeds every CUDA device too
    if deterministic:
        # cuBLAS reads this when its handle is created; harmless on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic or torch.are_deterministic_algorithms_enabled():
        # Only when it changes something: the call imports torch._dynamo (seconds on a small CPU).
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False if deterministic else torch.backends.cudnn.benchmark
    return effective


def capture_rng_state() -> dict:
    """This process's RNG states: ``{"python": ..., "numpy": ..., "torch": uint8 tensor, "cuda": [...]}``.

    Only tensors, ints, floats, None, lists and dicts, so it survives ``torch.load(weights_only=True)``.
    ``"cuda"`` holds one state per visible device, or an empty list without CUDA.
    """
    version, mt_state, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": int(version),
            "state": torch.tensor(mt_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def rng_state_problem(state: object) -> str | None:
    """What makes ``state`` not a :func:`capture_rng_state` result (a checkpoint holds it), or None.

    Checks the layout and every entry's type and size, so :func:`restore_rng_state` gets what it expects.
    """
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
        return "not a dict with python, numpy and torch entries"
    python, numpy_state, torch_state = state["python"], state["numpy"], state["torch"]
    if not (isinstance(python, dict) and type(python.get("version")) is int
            and _is_tensor(python.get("state"), torch.int64, 625)
            and (python.get("gauss_next") is None or type(python.get("gauss_next")) is float)):
        return "a malformed python entry"
    if not (isinstance(numpy_state, dict) and isinstance(numpy_state.get("kind"), str)
            and numpy_state["kind"] == "MT19937"
            and _is_tensor(numpy_state.get("keys"), torch.int64, 624)
            and type(numpy_state.get("position")) is int and type(numpy_state.get("has_gauss")) is int
            and type(numpy_state.get("cached_gaussian")) is float):
        return "a malformed numpy entry"
    if not _is_tensor(torch_state, torch.uint8, torch.get_rng_state().numel()):
        return "a malformed torch entry"
    cuda = state.get("cuda", [])
    if not (isinstance(cuda, list) and all(_is_tensor(entry, torch.uint8) for entry in cuda)):
        return "a malformed cuda entry"
    return None


def _is_tensor(value: object, dtype: torch.dtype, size: int | None = None) -> bool:
    return (isinstance(value, torch.Tensor) and value.dtype == dtype and value.dim() == 1
            and (size is None or value.numel() == size))


def restore_rng_state(state: dict) -> None:
    """Put back RNG states captured by :func:`capture_rng_state` (CUDA ones only where CUDA is present)."""
    python_state = state["python"]
    random.setstate(
        (
            int(python_state["version"]),
            tuple(int(value) for value in python_state["state"].tolist()),
            python_state["gauss_next"],
        )
    )
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            int(numpy_state["position"]),
            int(numpy_state["has_gauss"]),
            float(numpy_state["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for device_index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device_index)
