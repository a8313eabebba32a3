"""Which sample indices each loader visits: the seeded search split and per-rank, per-epoch shards.

Everything here is a pure function of (seed, epoch, rank, world size), so every rank computes the same
split without talking to the others, and a rerun with the same seed visits the same samples in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Distinct random streams, so the split and each loader's orders are independent draws from one seed.
SPLIT_STREAM = 0


def search_split(num_train: int, portion: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices 0..num_train-1 into (search_train, search_val), disjoint and covering all.

    A permutation pi drawn from ``seed`` alone (never the rank): search_train = pi[:k],
    search_val = pi[k:], k = round(portion * num_train). Both keep pi's (random) order.
    """
    permutation = np.random.default_rng([seed, SPLIT_STREAM]).permutation(num_train)
    cut = int(round(portion * num_train))
    return permutation[:cut].astype(np.int64), permutation[cut:].astype(np.int64)


@dataclass(frozen=True)
class ShardPlan:
    """The samples one rank visits in each epoch of one loader.

    indices: the loader's sample indices (int64, any order); stream: tells loaders apart (different
    orders from one seed). shuffle: epoch e visits indices[pi_e], pi_e a permutation drawn from
    (seed, stream, e), identical on every rank; rank r then takes every world_size-th entry starting at r,
    so ranks are disjoint and each sees a different order. equal_shards: cut every rank to
    floor(n / world_size) samples (ranks step together, as DDP training needs); otherwise every sample is
    visited once (evaluation), and shards differ by at most one sample.

    draw_batch (> 0): the epoch is not a pass over a permutation but floor(shard_size() / draw_batch)
    independent batches, each ``draw_batch`` distinct samples drawn uniformly from all of ``indices`` by a
    generator seeded with (seed, stream, rank, epoch): DARTS's "random minibatch from the search queue with
    replacement" (its ``next(iter(valid_queue))``, the first batch of a fresh shuffle, for every step).
    Batches may share samples; ranks draw independently (``shuffle`` and the shards do not apply).
    """

    indices: np.ndarray
    seed: int
    stream: int
    rank: int = 0
    world_size: int = 1
    shuffle: bool = True
    equal_shards: bool = True
    draw_batch: int = 0

    def shard_size(self) -> int:
        count = len(self.indices)
        if self.equal_shards:
            return count // self.world_size
        return len(range(self.rank, count, self.world_size))

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Sample indices (int64) this rank visits in ``epoch``, in visiting order."""
        if self.draw_batch > 0:
            return self._drawn_batches(epoch)
        order = self.indices
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, self.stream, epoch]).permutation(len(order))]
        return order[self.rank::self.world_size][:self.shard_size()]

    def _drawn_batches(self, epoch: int) -> np.ndarray:
        """The ``draw_batch`` mode of :meth:`epoch_indices`: independent batches of distinct samples."""
        count, size = len(self.indices), self.draw_batch
        if size > count:
            raise ValueError(f"cannot draw batches of {size} distinct samples from {count}")
        generator = np.random.default_rng([self.seed, self.stream, self.rank, epoch])
        batches = [self.indices[generator.choice(count, size, replace=False)]
                   for _ in range(self.shard_size() // size)]
        return np.concatenate(batches) if batches else self.indices[:0]
