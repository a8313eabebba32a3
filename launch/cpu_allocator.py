"""glibc malloc settings that stop CPU training from faulting in fresh pages at every step.

A search network's step allocates hundreds of activation tensors of 1-16 MiB and frees them at the end of
the step. With glibc's defaults each freed block at the top of the heap is given back to the kernel
(``M_TRIM_THRESHOLD``, 128 KiB, raised dynamically) and blocks above the mmap threshold are mmap'd and
munmap'd one by one, so the next step touches fresh pages again: ~100,000 minor page faults per DARTS
supernet weight step at C=16, batch 64 (``getrusage().ru_minflt``). :func:`tune_cpu_allocator` raises both
thresholds, so the freed memory stays in the process and is reused: the faults drop to ~0 after the first
step. Values are unchanged (this only decides where tensors live); the peak RSS is what the step needed
anyway (bench/search_step.py measures both).

Nothing is changed where the process does not use glibc, on a CUDA device (activations live on the GPU),
or where the user set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (or ``MALLOC_`` settings of
any kind) in the environment: their choice stands.
"""
from __future__ import annotations

import ctypes
import os
import platform

import torch

__all__ = ["tune_cpu_allocator", "MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES"]

_M_TRIM_THRESHOLD = -1  # mallopt parameters, <malloc.h>
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap and are reused (glibc's largest accepted value on 64-bit).
MMAP_THRESHOLD_BYTES = 32 * 2**20
#: Free memory at the top of the heap kept before any is returned to the kernel.
TRIM_THRESHOLD_BYTES = 2**30


def tune_cpu_allocator(device: torch.device | str) -> bool:
    """Raise glibc's mmap and trim thresholds (module docstring) when ``device`` is the CPU; True when set."""
    if torch.device(device).type != "cpu":
        return False
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
