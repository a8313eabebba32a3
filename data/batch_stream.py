"""Pull exactly n batches from a loader, across epoch boundaries, through one live iterator.

The searches "fine-tune K steps" and "evaluate on M search-val batches" with this: batches flow on from
where the last call stopped, a finished epoch rolls over to the next, and only one epoch iterator is open
at any time (it is closed before another is opened, so taking a few batches never leaks FFCV threads).
"""
from __future__ import annotations

from typing import Iterator

import torch

from data.errors import DataError


class BatchStream:
    """An endless stream of ``(images, labels)`` batches over ``loader``'s epochs, starting at ``start_epoch``.

    Position = (epoch, batch_in_epoch): the epoch being read and how many of its batches were handed out.
    """

    def __init__(self, loader, start_epoch: int = 0):
        if len(loader) == 0:
            raise DataError("the loader yields no batch per epoch (fewer samples per rank than one batch)")
        self.loader = loader
        self.epoch = int(start_epoch)
        self.batch_in_epoch = 0
        self._iterator: Iterator | None = None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch; when the current epoch is used up, the first batch of the next epoch."""
        if self.batch_in_epoch >= len(self.loader):
            self._close()
            self.epoch += 1
            self.batch_in_epoch = 0
        if self._iterator is None:
            self.loader.set_epoch(self.epoch)
            self._iterator = iter(self.loader)
        batch = next(self._iterator)
        self.batch_in_epoch += 1
        return batch

    def take(self, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield exactly ``count`` batches (lazily: each is pulled when the caller asks for it)."""
        for _ in range(count):
            yield self.next_batch()

    def state_dict(self) -> dict:
        """Position as ``{"epoch": e, "batch_in_epoch": b}`` (a finished epoch reads as the next one at 0)."""
        if self.batch_in_epoch >= len(self.loader):
            return {"epoch": self.epoch + 1, "batch_in_epoch": 0}
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Go back (or forward) to a position from :meth:`state_dict`.

        The epoch's iteration is restarted and its first ``batch_in_epoch`` batches are read and dropped, so
        the next batch is the same samples with the same augmentation draws as before (both loaders seed
        them per epoch).
        """
        epoch, skip = int(state["epoch"]), int(state["batch_in_epoch"])
        if not 0 <= skip <= len(self.loader):
            raise DataError(f"stream position {state} is outside an epoch of {len(self.loader)} batches")
        self.reset(epoch)
        for _ in range(skip):
            self.next_batch()

    def reset(self, epoch: int = 0) -> None:
        """Start over at the first batch of ``epoch`` (the same batches as the last time that epoch ran)."""
        self._close()
        self.epoch = int(epoch)
        self.batch_in_epoch = 0

    def close(self) -> None:
        """Close the live epoch iterator, if any (also done when the stream is garbage collected)."""
        self._close()

    def _close(self) -> None:
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            self._iterator = None

    def __del__(self) -> None:
        self._close()

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc) -> None:
        self._close()
