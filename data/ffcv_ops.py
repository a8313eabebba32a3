"""FFCV pipeline operation for images of any channel count (FFCV's own NormalizeImage is written for 3).

Compiled by FFCV's pipeline compiler with numba, like FFCV's operations: it runs in FFCV's worker threads
over whole batches without the GIL.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Tuple

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from data import augment


class NormalizeChannels(Operation):
    """uint8 (N, H, W, C) -> float32 (N, H, W, C), x_hat[n, y, x, c] = T[c, x[n, y, x, c]] for any C.

    T[c, v] = (v - mean_c) / std_c is :func:`data.augment.normalisation_table` (the same float64-then-float32
    table FFCV's NormalizeImage and the in-memory loader use), so the values are bit-identical to theirs.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.table = np.ascontiguousarray(augment.normalisation_table(mean, std).T)  # (256, C)

    def generate_code(self) -> Callable:
        table, channels = self.table, self.table.shape[1]
        batch_range = Compiler.get_iterator()

        def normalise(images, result, indices):
            values_per_image = images[0].size
            for i in batch_range(len(indices)):
                source = images[i].reshape(values_per_image)
                target = result[i].reshape(values_per_image)
                for value in range(values_per_image):
                    target[value] = table[source[value], value % channels]
            return result

        normalise.is_parallel = True
        normalise.with_indices = True
        return normalise

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Optional[AllocationQuery]]:
        if previous_state.shape[-1] != self.table.shape[1]:
            raise ValueError(f"NormalizeChannels has {self.table.shape[1]} channels, the images "
                             f"{previous_state.shape[-1]}")
        return (replace(previous_state, jit_mode=True, dtype=np.dtype(np.float32)),
                AllocationQuery(previous_state.shape, np.dtype(np.float32)))
