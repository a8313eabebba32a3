"""Atomic, checksummed checkpoints with every rank's RNG state, and resume from the newest good one.

torchrun restarts all workers when one dies and "you lose progress up to the most recent checkpoint";
this module makes that checkpoint. ``run_dir/checkpoints/ckpt_<step>.pt`` files are laid out as::

    MAGIC (9 bytes) | payload (torch.save bytes) | payload length (8 bytes, little endian) | SHA-256 of payload (32) | END (8)

and the payload is ``{"format": 1, "step": s, "world_size": W, "rng": [state of rank 0, ..., rank W-1],
"state": <the caller's dict>}``. A truncated or altered file fails the length or checksum test before
anything is deserialised (:class:`CheckpointCorrupt`: skipped, with a warning, by ``load_latest``), and
deserialising uses ``torch.load(weights_only=True)`` (no arbitrary pickles). A file that passes its checksum
is then checked for structure (the layout above, every RNG entry, the keys and types the caller expects);
one that fails, or whose state does not fit the run (another architecture's weights: see
:func:`load_model_state` and :meth:`CheckpointManager.restoring`), raises :class:`CheckpointInvalid`, one
line, before the caller changes anything.

Saving is collective (every rank calls :meth:`CheckpointManager.save`): each rank serialises its own RNG
state (Python random, numpy, torch CPU/CUDA) to bytes, the byte tensors are all-gathered to rank 0, and
rank 0 alone writes the file: temp file, fsync, rename, fsync of the directory, so a crash at any moment
leaves either the old set of checkpoints or the old set plus the complete new one. Resuming is collective
too: rank 0 picks the newest good checkpoint and broadcasts its bytes, so ranks on nodes without a shared
filesystem resume from the same one; each rank restores its own RNG entry.

The caller's state is serialised inside ``save``, so what is written is a copy of the weights at that
moment even if training continues right after. Put everything needed to resume into it: model,
optimizer and scheduler state_dicts, the loader epoch, the search state, the step.

The resume protocol of the three drivers (as torchtitan's): every piece of a run's state is a component
with ``state_dict()`` / ``load_state_dict(state)`` (optimizers and schedulers as they are; a model through
:class:`ModelWeights`; a search's or a training's progress, the loaders' position: their own classes), and
one manager saves them all under their names (:meth:`CheckpointManager.save_components`) and loads the
newest checkpoint back into them (:meth:`CheckpointManager.resume`), or deletes every old checkpoint when
the run starts anew.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import struct
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import torch

from common.atomic import write_atomically
from launch.distributed import DistEnv, all_gather_tensor, barrier, broadcast_tensor, unwrap_model
from common.errors import UserInputError
from launch.seeding import capture_rng_state, restore_rng_state, rng_state_problem

MAGIC = b"NASCKPT1\n"
END = b"NASCKEND"
_FOOTER = struct.Struct("<Q32s8s")
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


START_ANEW = "delete it, or start anew (another --note or --run-dir, or --set resume=false)"


class CheckpointCorrupt(UserInputError):
    """A checkpoint file failed its length/checksum test (damaged bytes): resume skips it."""


class CheckpointInvalid(UserInputError):
    """A checkpoint that passes its checksum but cannot resume this run: a wrong structure, or the state of
    another architecture or optimizer. Resume stops here, in one line, before anything is changed."""


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A real copy of the model's state_dict on the CPU (DDP / compile wrappers removed from the keys)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in unwrap_model(model).state_dict().items()}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool = True,
                     source: str = "the checkpoint"):
    """Load a :func:`model_state` dict into ``model`` (unwrapping DDP first); returns load_state_dict's result.

    ``state`` comes from a file: anything but a dict of tensors, or tensors that do not fit the model
    (another architecture), is a :class:`CheckpointInvalid` naming ``source``.
    """
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise CheckpointInvalid(f"{source} holds no model weights (a dict of tensors); {START_ANEW}")
    try:
        return unwrap_model(model).load_state_dict(state, strict=strict)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:200]
        raise CheckpointInvalid(f"{source} holds the weights of another architecture ({detail}); "
                                f"{START_ANEW}") from None


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
    """Check and deserialise file bytes made by :func:`encode_checkpoint`.

    Raises :class:`CheckpointCorrupt` for damaged bytes and :class:`CheckpointInvalid` for a file that
    passes its checksum but is not a checkpoint of this layout (see :func:`payload_problem`).
    """
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
    except Exception as error:  # checksum matched, so this is a version/format problem, or a crafted file
        detail = " ".join(str(error).split())[:200]
        raise CheckpointInvalid(f"{name} passes its checksum but cannot be loaded ({detail}); {START_ANEW}") \
            from None
    problem = payload_problem(payload)
    if problem:
        raise CheckpointInvalid(f"{name} passes its checksum but {problem}; {START_ANEW}")
    return payload


def payload_problem(payload: object) -> str | None:
    """What makes ``payload`` not the layout of the module docstring, or None (RNG entries included)."""
    if not isinstance(payload, dict) or type(payload.get("format")) is not int or payload["format"] != FORMAT_VERSION:
        return "has an unknown layout"
    step, world_size, rng, state = (payload.get(key) for key in ("step", "world_size", "rng", "state"))
    if type(step) is not int or step < 0:
        return "has no step"
    if type(world_size) is not int or world_size < 1:
        return "has no world size"
    if not isinstance(rng, list) or len(rng) != world_size:
        return f"has no RNG state per rank (expected {world_size})"
    for rank, entry in enumerate(rng):
        problem = rng_state_problem(entry)
        if problem:
            return f"has {problem} in the RNG state of rank {rank}"
    if not isinstance(state, dict):
        return "has no state"
    return None


def state_problem(state: dict, expect: Mapping[str, type | tuple[type, ...]]) -> str | None:
    """What ``state`` lacks of ``expect`` (key -> type), or None."""
    for key, kind in expect.items():
        if key not in state:
            return f"has no {key!r} entry"
        value = state[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            return f"has a {key!r} entry of type bool"
        if not isinstance(value, kind):
            return f"has a {key!r} entry of type {type(value).__name__}"
    return None


class Stateful(Protocol):
    """A component of a run's resumable state (torch.distributed.checkpoint.stateful.Stateful's protocol)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class ModelWeights:
    """A model as a checkpoint component: its weights copied to the CPU (DDP unwrapped), loaded back with the
    checks of :func:`load_model_state` (another architecture's weights: one :class:`CheckpointInvalid` line
    naming the checkpoint file)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.source = "the checkpoint"  # the file being loaded: set by CheckpointManager.resume

    def state_dict(self) -> dict[str, torch.Tensor]:
        return model_state(self.model)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        load_model_state(self.model, state, source=self.source)


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
        self.loaded_path: Path | None = None
        if env.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            for leftover in self.directory.glob(".ckpt_*.tmp"):  # from a write that died before its rename
                leftover.unlink(missing_ok=True)
        problem = None
        if env.is_main:  # rank 0 writes and reads the checkpoints: its folder is the one that counts
            problem = next((f"{path} is not a file, but a checkpoint is written there; remove it"
                            for _, path in self.list_checkpoints() if not path.is_file()), None)
        problem = self._rank0_bytes(problem.encode() if problem else b"", status=2 if problem else 0)[1]
        if problem:
            raise CheckpointInvalid(problem.decode(errors="replace"))

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

    def save_components(self, step: int, components: Mapping[str, Stateful]) -> Path:
        """:meth:`save` of ``{name: component.state_dict()}`` (every rank calls it)."""
        return self.save(step, {name: component.state_dict() for name, component in components.items()})

    def start_anew(self) -> None:
        """Delete every checkpoint of the run directory (rank 0), then wait for all ranks. Collective."""
        if self.env.is_main:
            for _, path in self.list_checkpoints():
                path.unlink(missing_ok=True)
        barrier()

    def resume(self, components: Mapping[str, Stateful], *, allow: bool = True,
               expect: Mapping[str, type | tuple[type, ...]] | None = None) -> bool:
        """Load the newest good checkpoint into ``components`` (in their order); True when one was loaded.

        ``allow=False``: :meth:`start_anew` instead (old checkpoints deleted) and False. Each component's
        ``load_state_dict`` gets the entry of its name (``expect`` adds type checks of other entries,
        :meth:`load`); a state that does not fit is one :class:`CheckpointInvalid` line (:meth:`restoring`).
        This rank's RNG state is restored. Collective.
        """
        if not allow:
            self.start_anew()
            return False
        expect = {**{name: object for name in components}, **(expect or {})}
        saved = self.load_latest(expect=expect)
        if saved is None:
            return False
        with self.restoring():
            for name, component in components.items():
                if isinstance(component, ModelWeights):
                    component.source = str(self.loaded_path)
                component.load_state_dict(saved[name])
        return True

    def load(self, path: str | os.PathLike, restore_rng: bool = True,
             expect: Mapping[str, type | tuple[type, ...]] | None = None) -> dict:
        """The caller's state saved in ``path`` (tensors on the CPU), read by this rank alone.

        Raises :class:`CheckpointCorrupt` (damaged bytes) or :class:`CheckpointInvalid` (checksum fine, but
        a wrong layout, or a state without the ``expect``-ed keys of the expected types, e.g.
        ``{"model": dict, "epoch": int}``). With ``restore_rng`` this rank's RNG state (saved by the same
        rank) is put back, once everything is checked.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CheckpointCorrupt(f"{path} cannot be read: {error.strerror or error}") from None
        return self._load_bytes(data, path, restore_rng, expect)

    def _load_bytes(self, data: bytes, path: Path, restore_rng: bool,
                    expect: Mapping[str, type | tuple[type, ...]] | None, payload: dict | None = None) -> dict:
        payload = payload if payload is not None else decode_checkpoint(data, name=str(path))
        problem = state_problem(payload["state"], expect or {})
        if problem:
            raise CheckpointInvalid(f"{path} passes its checksum but {problem}; {START_ANEW}")
        if restore_rng:
            rng_states = payload["rng"]
            if payload["world_size"] != self.env.world_size:
                warnings.warn(
                    f"checkpoint {path.name} was written by {payload['world_size']} ranks, this job has "
                    f"{self.env.world_size}: RNG states are restored only for ranks present in both",
                    stacklevel=2,
                )
            if self.env.rank < len(rng_states):
                try:
                    restore_rng_state(rng_states[self.env.rank])
                except (ValueError, TypeError, OverflowError, RuntimeError) as error:
                    raise CheckpointInvalid(f"{path} holds an RNG state that cannot be restored ({error}); "
                                            f"{START_ANEW}") from None
        self.loaded_step = payload["step"]
        self.loaded_path = path
        return payload["state"]

    def _newest_good(self, expect: Mapping[str, type | tuple[type, ...]] | None) -> tuple[Path, bytes, dict] | None:
        """The path, bytes and decoded payload of the newest checkpoint that passes its checks (corrupt ones
        skipped with a warning), or None; CheckpointInvalid as in :meth:`load`."""
        for step, path in self.list_checkpoints():
            try:
                data = path.read_bytes()
                payload = decode_checkpoint(data, name=str(path))
            except OSError as error:
                message = f"skipping checkpoint of step {step}: {path} cannot be read: {error.strerror or error}"
            except CheckpointCorrupt as error:
                message = f"skipping checkpoint of step {step}: {error}"
            else:
                problem = state_problem(payload["state"], expect or {})
                if problem:
                    raise CheckpointInvalid(f"{path} passes its checksum but {problem}; {START_ANEW}")
                return path, data, payload
            warnings.warn(message, stacklevel=3)
            log.warning(message)
        return None

    def load_latest(self, restore_rng: bool = True,
                    expect: Mapping[str, type | tuple[type, ...]] | None = None) -> dict | None:
        """The newest checkpoint that passes its checks, or None when there is none. Collective.

        Rank 0 picks it in its run directory and broadcasts its bytes, so every rank resumes from the same
        checkpoint even without a shared filesystem (each node its own run directory). Corrupt or
        truncated files are skipped with a warning (and left on disk); a file that passes its checksum
        but fails the structure checks (see :meth:`load`) stops the resume with :class:`CheckpointInvalid`
        on every rank. Call it after building the model and optimizer and before training, since it
        restores the RNG state.
        """
        status, blob, path, payload = 0, b"", self.directory / "(rank 0's checkpoint)", None
        if self.env.is_main:
            try:
                found = self._newest_good(expect)
            except CheckpointInvalid as error:
                status, blob = 2, str(error).encode()
            else:
                if found is not None:
                    (path, blob, payload), status = found, 1
        status, blob = self._rank0_bytes(blob, status)
        if status == 2:
            raise CheckpointInvalid(blob.decode(errors="replace"))
        if status == 0:
            return None
        return self._load_bytes(blob, path, restore_rng, expect, payload)

    def _rank0_bytes(self, blob: bytes, status: int) -> tuple[int, bytes]:
        """Rank 0's ``(status, blob)`` on every rank (two broadcasts; none in a world of one). Collective."""
        if not self.env.is_distributed:
            return status, blob
        header = broadcast_tensor(torch.tensor([status, len(blob)], dtype=torch.int64, device=self.env.device))
        status, length = (int(v) for v in header.tolist())
        if length:
            data = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if self.env.is_main else \
                torch.empty(length, dtype=torch.uint8)
            blob = broadcast_tensor(data.to(self.env.device)).cpu().numpy().tobytes()
        return status, blob

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        """Wrap the caller's ``load_state_dict`` calls on the loaded state: an optimizer, scheduler or
        other state that does not fit this run becomes one :class:`CheckpointInvalid` line."""
        try:
            yield
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            raise CheckpointInvalid(f"{self.loaded_path or 'the checkpoint'} does not fit this run ({detail}); "
                                    f"{START_ANEW}") from None
