"""Import FFCV without letting it change torch's thread count.

FFCV's ``Compiler.set_num_threads(n)`` sets numba's thread count AND ``torch.set_num_threads(n)``. FFCV
calls it when it is imported (n = 1) and at the start of every epoch, in its worker thread (n = the
loader's num_workers). torch's intra-op thread count belongs to the job (the configs' ``threads``): an
import reset it to 1, and every FFCV epoch set it to num_workers, under the training in the main thread
(measured here: the seeded augmentation took 65 instead of 9 ms per CIFAR batch of 256 on 2 cores).
:func:`load_ffcv` imports FFCV, puts torch's thread count back and makes FFCV set numba's threads only.
Every module of the data layer that imports FFCV calls it first.
"""
from __future__ import annotations

import torch

_loaded = False


def load_ffcv() -> None:
    """Import FFCV's pipeline compiler once, keeping torch's thread count; ImportError when ffcv is absent."""
    global _loaded
    if _loaded:
        return
    threads = torch.get_num_threads()
    from ffcv.pipeline.compiler import Compiler  # runs Compiler.set_num_threads(1): torch's count is reset
    import numba

    def set_numba_threads(cls, count: int) -> None:
        """FFCV's Compiler.set_num_threads without its torch.set_num_threads (count < 1 or more than the
        machine has: every core)."""
        cores = numba.config.NUMBA_NUM_THREADS
        cls.num_threads = min(count, cores) if count >= 1 else cores
        numba.set_num_threads(cls.num_threads)

    Compiler.set_num_threads = classmethod(set_numba_threads)
    torch.set_num_threads(threads)
    _loaded = True
