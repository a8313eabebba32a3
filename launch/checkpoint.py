"""Atomic, checksummed checkpoints with every rank's RNG state, and resume from the newest good one.

torchrun restarts all workers when one dies and "you lose progress up to the most recent checkpoint";
this module makes that checkpoint. ``run_dir/checkpoints/ckpt_<step>.pt`` files are laid out as::

    MAGIC (9 bytes) | payload (torch.save bytes) | payload length (8 bytes, little endian) | SHA-256 of payload (32) | END (8)

and the payload is ``{"format": 1, "step": s, "world_size": W, "rng": [state of rank 0, ..., rank W-1],
"state": <the caller's dict>}``. A truncated or altered file fails the length or checksum test before
anything is deserialised, and deserialising uses ``torch.load(weights_only=True)`` (no arbitrary pickles).

Saving is collective (every rank calls :meth:`CheckpointManager.save`): each rank serialises its own RNG
state (Python random, numpy, torch CPU/CUDA) to bytes, the byte tensors are all-gathered to rank 0, and
rank 0 alone writes the file: temp file, fsync, rename, fsync of the directory, so a crash at any moment
leaves either the old set of checkpoints or the old set plus the complete new one. Loading is done by
every rank from the same (shared) directory; each rank restores its own RNG entry.

The caller's state is serialised inside ``save``, so what is written is a copy of the weights at that
moment even if training continues right after. Put everything needed to resume into it: model,
optimizer and scheduler state_dicts, the loader epoch, the search state, the step.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import struct
import warnings
from pathlib import Path

import torch

from launch.atomic import write_atomically
from launch.distributed import DistEnv, all_gather_tensor, barrier, unwrap_model
from launch.seeding import capture_rng_state, restore_rng_state

MAGIC = b"NASCKPT1\n"
END = b"NASCKEND"
_FOOTER = struct.Struct("<Q32s8s")
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


class CheckpointCorrupt(Exception):
    """A checkpoint file failed its length/checksum test or could not be deserialised."""


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A real copy of the model's state_dict on the CPU (DDP / compile wrappers removed from the keys)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in unwrap_model(model).state_dict().items()}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool = True):
    """Load a :func:`model_state` dict into ``model`` (unwrapping DDP first); returns load_state_dict's result."""
    return unwrap_model(model).load_state_dict(state, strict=strict)


def _tensor_to_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _bytes_to_object(data: bytes) -> object:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def encode_checkpoint(payload: dict) -> bytes:
    """The file bytes for ``payload``: magic, torch.save bytes, length, SHA-256, end marker."""
    body = _tensor_to_bytes(payload)
    return MAGIC + body + _FOOTER.pack(len(body), hashlib.sha256(body).digest(), END)


def decode_checkpoint(data: bytes, name: str = "checkpoint") -> dict:
    """Check and deserialise file bytes made by :func:`encode_checkpoint`; raises :class:`CheckpointCorrupt`."""
    if len(data) < len(MAGIC) + _FOOTER.size or not data.startswith(MAGIC):
        raise CheckpointCorrupt(f"{name} is truncated or not a checkpoint ({len(data)} bytes)")
    length, digest, end = _FOOTER.unpack(data[-_FOOTER.size:])
    body = data[len(MAGIC):-_FOOTER.size]
    if end != END or length != len(body):
        raise CheckpointCorrupt(f"{name} is truncated (footer missing or length mismatch)")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointCorrupt(f"{name} is corrupt (SHA-256 mismatch)")
    try:
        payload = _bytes_to_object(body)
    except Exception as error:  # checksum matched, so this is a version/format problem
        raise CheckpointCorrupt(f"{name} cannot be loaded: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointCorrupt(f"{name} has an unknown layout")
    return payload


class CheckpointManager:
    """Saves ``run_dir/checkpoints/ckpt_<step>.pt`` atomically, keeps the newest ``keep``, resumes.

    Typical use::

        manager = CheckpointManager(run_dir, env)
        resumed = manager.load_latest()          # also restores this rank's RNG state
        if resumed is not None:
            model.load_state_dict(resumed["model"]); optimizer.load_state_dict(resumed["optimizer"])
            start = resumed["step"]
        ...
        manager.save(step, {"model": model_state(model), "optimizer": optimizer.state_dict(), "step": step})
    """

    def __init__(self, run_dir: str | os.PathLike, env: DistEnv, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(run_dir) / "checkpoints"
        self.env = env
        self.keep = keep
        self.loaded_step: int | None = None
        if env.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            for leftover in self.directory.glob(".ckpt_*.tmp"):  # from a write that died before its rename
                leftover.unlink(missing_ok=True)
        barrier()

    def path_for(self, step: int) -> Path:
        """The file of the checkpoint at ``step``."""
        return self.directory / f"ckpt_{int(step):09d}.pt"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every checkpoint file, newest (highest step) first, good or not."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def _gathered_rng_states(self) -> list[dict]:
        """Every rank's RNG state, in rank order, on rank 0 (an empty list elsewhere). Collective."""
        own = torch.frombuffer(bytearray(_tensor_to_bytes(capture_rng_state())), dtype=torch.uint8)
        pieces = all_gather_tensor(own.to(self.env.device))
        if not self.env.is_main:
            return []
        return [_bytes_to_object(piece.cpu().numpy().tobytes()) for piece in pieces]

    def save(self, step: int, state: dict) -> Path:
        """Write ``state`` (plus every rank's RNG state) as the checkpoint of ``step``. Every rank calls it.

        Rank 0 writes; all ranks return once the file is complete. Then only the ``keep`` newest
        checkpoints up to this step are kept (this one included). Returns the file's path.
        """
        if int(step) < 0:
            raise ValueError(f"checkpoint step must be >= 0, got {step}")
        rng_states = self._gathered_rng_states()
        path = self.path_for(step)
        if self.env.is_main:
            payload = {
                "format": FORMAT_VERSION,
                "step": int(step),
                "world_size": self.env.world_size,
                "rng": rng_states,
                "state": state,
            }
            write_atomically(path, encode_checkpoint(payload))
            # Keep this one and the keep-1 newest before it; files of later steps (e.g. a corrupt one
            # that was skipped at resume) are left alone and never counted as kept.
            older = [old_path for old_step, old_path in self.list_checkpoints() if old_step < int(step)]
            for old_path in older[self.keep - 1:]:
                old_path.unlink(missing_ok=True)
        barrier()
        return path

    def load(self, path: str | os.PathLike, restore_rng: bool = True) -> dict:
        """The caller's state saved in ``path`` (tensors on the CPU); raises :class:`CheckpointCorrupt`.

        With ``restore_rng`` this rank's RNG state (saved by the same rank) is put back.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CheckpointCorrupt(f"{path} cannot be read: {error}") from None
        payload = decode_checkpoint(data, name=str(path))
        if restore_rng:
            rng_states = payload["rng"]
            if payload["world_size"] != self.env.world_size:
                warnings.warn(
                    f"checkpoint {path.name} was written by {payload['world_size']} ranks, this job has "
                    f"{self.env.world_size}: RNG states are restored only for ranks present in both",
                    stacklevel=2,
                )
            if self.env.rank < len(rng_states):
                restore_rng_state(rng_states[self.env.rank])
        self.loaded_step = int(payload["step"])
        return payload["state"]

    def load_latest(self, restore_rng: bool = True) -> dict | None:
        """The newest checkpoint that passes its checks, or None when there is none.

        Corrupt or truncated files are skipped with a warning (and left on disk). Call it after building
        the model and optimizer and before training, since it restores the RNG state.
        """
        for step, path in self.list_checkpoints():
            try:
                return self.load(path, restore_rng=restore_rng)
            except CheckpointCorrupt as error:
                message = f"skipping checkpoint of step {step}: {error}"
                warnings.warn(message, stacklevel=2)
                log.warning(message)
        return None
