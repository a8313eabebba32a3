"""The shape every network of the cell space shares, as the base of the three CLI configs' ``network``
sections (torch-free: configs import it).

Each CLI adds only what its network has: the search network (perturb.config.SearchNetworkConfig: stem
multiplier), the supernet (supernet.config.SupernetNetworkConfig: weighting, shared cell, candidate ops)
and the evaluation network (evaluation.recipe.EvalNetworkConfig: stem type, auxiliary head, drop path).
One class with every field would accept keys a CLI ignores, so they share this base instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError

__all__ = ["NetworkConfig"]


@dataclass
class NetworkConfig:
    """``channels`` (C: the first cells' width; doubled at each reduction) and ``layers`` (cells; reductions
    at layers//3 and 2*layers//3)."""

    channels: int = 16
    layers: int = 8

    def validate(self) -> None:
        if self.channels < 2 or self.channels % 2:
            raise ConfigError(f"must be an even number >= 2 (got {self.channels})", key="channels")
        if self.layers < 1:
            raise ConfigError(f"must be at least 1 (got {self.layers})", key="layers")
