"""The names of the DARTS cell space's candidate operations, torch-free (configs and genotypes import them).

The modules that implement them live in :mod:`space.ops`.
"""
from __future__ import annotations

PRIMITIVES: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
NONE_OP = "none"
SEARCH_OPS: tuple[str, ...] = PRIMITIVES + (NONE_OP,)
