"""A real snapshot of a network's training state, restored in place.

PertNAS backed up ``model.state_dict()`` before scoring candidates. A state_dict holds *references* to the
live parameter tensors, so after fine-tuning candidate 1 the "backup" already held candidate 1's weights:
every candidate started from the previous candidate's weights and the final "restore" restored nothing.

:class:`Snapshot` holds copies instead:

- every parameter and buffer (BN running mean/var and ``num_batches_tracked`` included), cloned;
- the optimizer's state (momentum buffers, step counts, param-group learning rates), deep-copied;
- the RNG states of Python, numpy and torch (``launch.seeding.capture_rng_state``);
- the network's op masks (``SearchNetwork.mask_state()``), when it has them.

:meth:`Snapshot.restore` copies the values back INTO the existing tensors (``tensor.copy_``), so the
optimizer's references to the parameters stay valid, and hands the optimizer a fresh deep copy of its
saved state, so that later steps never write into the snapshot.
"""
from __future__ import annotations

import copy
import hashlib

import torch
import torch.nn as nn

from launch.distributed import unwrap_model
from launch.seeding import capture_rng_state, restore_rng_state


def tensors_digest(named_tensors) -> str:
    """SHA-256 (hex) of ``(name, tensor)`` pairs, sorted by name: names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        if data.numel():
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def state_digest(model: nn.Module) -> str:
    """:func:`tensors_digest` of every parameter and buffer of ``model`` (DDP unwrapped).

    Two models with equal digests hold bit-identical weights and BN statistics.
    """
    return tensors_digest(list(_named_tensors(unwrap_model(model))))


class Snapshot:
    """Copies of ``model``'s weights, buffers and masks, of ``optimizer``'s state and of the RNG states.

    Use::

        snap = Snapshot.capture(network, optimizer)
        ...fine-tune, change masks...
        snap.restore()          # network, optimizer and RNG exactly as at capture time
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                 tensors: dict[str, torch.Tensor], optimizer_state: dict | None, rng_state: dict,
                 mask_state: dict | None):
        self.model = unwrap_model(model)
        self.optimizer = optimizer
        self._tensors = tensors
        self._optimizer_state = optimizer_state
        self._rng_state = rng_state
        self._mask_state = mask_state

    @classmethod
    def capture(cls, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> "Snapshot":
        """Copy the current state of ``model`` (DDP unwrapped), ``optimizer`` and the RNGs."""
        module = unwrap_model(model)
        with torch.no_grad():
            tensors = {name: tensor.detach().clone() for name, tensor in _named_tensors(module)}
        optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
        masks = copy.deepcopy(module.mask_state()) if hasattr(module, "mask_state") else None
        return cls(module, optimizer, tensors, optimizer_state, capture_rng_state(), masks)

    def restore(self, rng: bool = True) -> None:
        """Put everything back as it was at :meth:`capture`, in place; gradients are cleared."""
        with torch.no_grad():
            for name, tensor in _named_tensors(self.model):
                tensor.copy_(self._tensors[name])
        for parameter in self.model.parameters():
            parameter.grad = None
        if self.optimizer is not None:
            # load_state_dict may keep the given tensors as the optimizer's own: give it a private copy.
            self.optimizer.load_state_dict(copy.deepcopy(self._optimizer_state))
        if self._mask_state is not None:
            self.model.load_mask_state(copy.deepcopy(self._mask_state))
        if rng:
            restore_rng_state(self._rng_state)

    def matches(self, model: nn.Module | None = None) -> bool:
        """True when ``model`` (default: the captured one) holds exactly the snapshot's weights and buffers."""
        module = self.model if model is None else unwrap_model(model)
        named = dict(_named_tensors(module))
        if named.keys() != self._tensors.keys():
            return False
        return all(torch.equal(named[name], saved) for name, saved in self._tensors.items())

    def digest(self) -> str:
        """:func:`state_digest` of the snapshot's weights (equal to the model's right after restore)."""
        return tensors_digest(list(self._tensors.items()))


def _named_tensors(module: nn.Module):
    """Parameters then buffers of ``module``, by qualified name (shared tensors once)."""
    yield from module.named_parameters()
    yield from module.named_buffers()
