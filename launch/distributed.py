"""Process group from torchrun's environment, and the few collectives the project uses.

Under ``torchrun`` (one node or many, static master or c10d rendezvous) every worker gets RANK (global
rank), WORLD_SIZE, LOCAL_RANK (rank on this node), MASTER_ADDR and MASTER_PORT in its environment; the
process group is created from those (``init_method="env://"``). Without torchrun (plain
``python script.py``) the job is a world of one and no process group is created.

Backend: NCCL when the device is CUDA, gloo otherwise (overridable). Device: ``cuda:LOCAL_RANK`` when
CUDA is available, else the CPU (``device="cpu"`` forces the CPU).

Every helper below is a no-op (or the identity) in a world of one, so library code calls them
unconditionally. None of them pickles: only tensors travel.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from common.errors import LaunchError

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_BACKENDS = ("nccl", "gloo", "mpi")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job.

    ``rank`` is the global rank (0..world_size-1), ``local_rank`` the rank on this node (it picks the GPU),
    ``backend`` the process group's backend, or ``None`` when no process group exists (world of one).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """True on global rank 0, the one that writes files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def _int_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise LaunchError(f"environment variable {name}={raw!r} is not an integer") from None


def _launched_by_torchrun() -> bool:
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def _pick_device(requested: str | None, local_rank: int) -> torch.device:
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise LaunchError(f"device {requested!r} is not a device name (use 'cpu' or 'cuda')") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LaunchError(f"device {requested!r} requested but CUDA is not available on this machine")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise LaunchError(
                f"local rank {local_rank} needs GPU {index} but this node has {torch.cuda.device_count()}; "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise LaunchError(f"device {requested!r} is not supported (use 'cpu' or 'cuda')")
    return device


def _attempt_scoped_store(world_size: int):
    """The store for ``init_process_group`` when torchrun shares its agent's TCPStore, else None.

    Since torch 2.5 the c10d rendezvous hands workers the agent's own TCPStore, which outlives worker
    restarts; without a per-attempt prefix the restarted workers read the previous attempt's addresses
    and fail to connect (pytorch/pytorch#135712). Keys are scoped by TORCHELASTIC_RESTART_COUNT, which
    every agent increments when the whole job restarts. (Setting TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1,
    as launch/local.sh and launch/slurm.sbatch do, gives every attempt a fresh store instead.)
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    agent_store = dist.TCPStore(
        host_name=os.environ["MASTER_ADDR"],
        port=_int_from_env("MASTER_PORT", 0),
        world_size=world_size,
        is_master=False,
        timeout=default_pg_timeout,
    )
    return dist.PrefixStore(f"launch/attempt_{attempt}", agent_store)


def init_distributed(backend: str | None = None, device: str | None = None,
                     timeout_s: float | None = None) -> DistEnv:
    """Join the job's process group, if torchrun started this process, and pick this rank's device.

    Args:
        backend: "nccl", "gloo" or "mpi"; default NCCL for a CUDA device, gloo for the CPU.
        device: "cpu", "cuda" or "cuda:N"; default ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        timeout_s: how long a collective may wait for the other ranks before the job aborts (NCCL's
            watchdog, gloo's timeout); default torch's (10 minutes for NCCL, 30 for gloo). Long
            imbalanced work should end with :func:`wait_for_all` rather than a longer timeout.

    Returns the :class:`DistEnv`. Calling it again returns the same description of the existing group.
    Raises :class:`LaunchError` for a device or backend that cannot work here.
    """
    if backend is not None and backend not in _BACKENDS:
        raise LaunchError(f"backend {backend!r} is unknown (use one of {', '.join(_BACKENDS)})")
    launched = _launched_by_torchrun()
    rank = _int_from_env("RANK", 0) if launched else 0
    world_size = _int_from_env("WORLD_SIZE", 1) if launched else 1
    local_rank = _int_from_env("LOCAL_RANK", 0) if launched else 0
    if not 0 <= rank < world_size:
        raise LaunchError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")

    chosen_device = _pick_device(device, local_rank)
    if not launched:
        return DistEnv(rank=0, world_size=1, local_rank=0, device=chosen_device, backend=None)

    chosen_backend = backend or ("nccl" if chosen_device.type == "cuda" else "gloo")
    if chosen_backend == "nccl" and chosen_device.type != "cuda":
        raise LaunchError("backend 'nccl' needs a CUDA device; use backend 'gloo' on the CPU")
    if not dist.is_initialized():
        if not dist.is_backend_available(chosen_backend):
            raise LaunchError(f"backend {chosen_backend!r} is not available in this PyTorch build")
        kwargs = {"device_id": chosen_device} if chosen_device.type == "cuda" else {}
        if timeout_s is not None:
            kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
        store = _attempt_scoped_store(world_size)
        if store is None:
            dist.init_process_group(backend=chosen_backend, init_method="env://", **kwargs)
        else:
            dist.init_process_group(backend=chosen_backend, store=store, rank=rank, world_size=world_size, **kwargs)
    return DistEnv(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=chosen_device,
        backend=dist.get_backend(),
    )


def shutdown_distributed(wait_for_others: bool = False) -> None:
    """Destroy the process group if there is one (safe to call in a world of one, or twice).

    ``wait_for_others``: a barrier first, on a normal exit, so that no rank (rank 0 hosts the store) tears
    the group down while another still uses it; never after an error, when a rank may be gone.
    """
    if dist.is_available() and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


def _group_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def wait_for_all(name: str, poll_s: float = 0.5, on_wait: Callable[[float], None] | None = None) -> None:
    """Wait until every rank has called ``wait_for_all(name)``, OUTSIDE any collective.

    A barrier is a collective: a rank that waits in it for longer than the process group's timeout (NCCL's
    watchdog: 10 minutes by default) aborts the job. Here each rank sets ``name/<rank>`` in the job's
    key-value store and polls (``store.check``, which never blocks) until all ranks' keys exist, so an idle
    rank can wait for hours. ``name`` must be unique within the job. ``on_wait(seconds waited)`` is called
    about once a minute while waiting (progress logs).
    """
    world = _group_size()
    if world == 1:
        return
    store = dist.distributed_c10d._get_default_store()
    store.set(f"wait_for_all/{name}/{dist.get_rank()}", b"1")
    keys = [f"wait_for_all/{name}/{rank}" for rank in range(world)]
    abort = f"wait_for_all/{name}/abort"
    started = last_report = time.monotonic()
    while not store.check(keys):
        if store.check([abort]):
            raise LaunchError(f"rank {store.get(abort).decode()} failed before {name!r}; stopping this rank too")
        time.sleep(poll_s)
        if on_wait is not None and time.monotonic() - last_report >= 60.0:
            last_report = time.monotonic()
            on_wait(last_report - started)


@contextlib.contextmanager
def abort_waits_on_error(name: str) -> Iterator[None]:
    """If the block raises, tell the ranks waiting in ``wait_for_all(name)`` to stop (they raise too),
    instead of leaving them to wait for a rank that will never come. (A rank killed outright is torchrun's
    to notice: its agent stops the job.)"""
    try:
        yield
    except BaseException:
        if _group_size() > 1:
            try:
                dist.distributed_c10d._get_default_store().set(f"wait_for_all/{name}/abort", str(dist.get_rank()))
            except Exception:  # the store may be gone too: the original error is what matters
                pass
        raise


def barrier() -> None:
    """Wait until every rank gets here."""
    if _group_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it."""
    if _group_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a floating-point ``tensor`` over ranks, in place: t <- (1/W) * sum_r t_r; returns it."""
    world = _group_size()
    if world > 1:
        if not tensor.is_floating_point():
            raise TypeError(f"all_reduce_mean needs a floating-point tensor, got {tensor.dtype}")
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(world)
    return tensor


def all_gather_tensor(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor``, in rank order.

    Shapes may differ in the first dimension only (e.g. rank r holds n_r scores of shape (n_r, d));
    the other dimensions and the dtype must agree. In a world of one: ``[tensor]``.
    """
    world = _group_size()
    if world == 1:
        return [tensor]
    tensor = tensor.contiguous()
    if tensor.dim() == 0:
        gathered = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(gathered, tensor)
        return gathered
    local_length = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    lengths = [torch.empty_like(local_length) for _ in range(world)]
    dist.all_gather(lengths, local_length)
    lengths_list = [int(length.item()) for length in lengths]
    longest = max(lengths_list)
    padded = tensor
    if tensor.shape[0] < longest:
        padding = tensor.new_zeros((longest - tensor.shape[0],) + tuple(tensor.shape[1:]))
        padded = torch.cat([tensor, padding])
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return [piece[:length] for piece, length in zip(gathered, lengths_list)]


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order: shape (sum_r n_r, ...)."""
    pieces = all_gather_tensor(tensor)
    if tensor.dim() == 0:
        return torch.stack(pieces)
    return torch.cat(pieces)


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s values, in place; returns it."""
    if _group_size() > 1:
        dist.broadcast(tensor, src=src)
    return tensor


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite every tensor of ``tensors`` with rank ``src``'s values, in place, in one broadcast per
    dtype (a network's hundreds of small parameters and buffers would otherwise cost one collective each).
    All ranks must pass tensors of the same shapes and dtypes in the same order."""
    if _group_size() == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for group in by_dtype.values():
        flat = torch.cat([tensor.detach().reshape(-1) for tensor in group])
        dist.broadcast(flat, src=src)
        offset = 0
        with torch.no_grad():
            for tensor in group:
                tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()


@contextlib.contextmanager
def synced_batchnorm(model: torch.nn.Module, enabled: bool = True) -> Iterator[torch.nn.Module]:
    """Inside the block every BatchNorm of ``model`` is a SyncBatchNorm sharing the same parameter and buffer
    tensors, so a DDP-trained network normalises over the whole batch of all ranks, as one rank would;
    on exit the original modules are back (with the trained values, since the tensors are shared).

    Only for training phases in which every rank runs the same forward passes: a SyncBatchNorm in train
    mode all-reduces in every forward. torch's SyncBatchNorm runs on CUDA only; ``enabled=False`` (the
    CPU, or a world of one) leaves the model unchanged.
    """
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    if enabled:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
                        child, torch.nn.SyncBatchNorm):
                    synced = torch.nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                                    child.track_running_stats)
                    synced.weight, synced.bias = child.weight, child.bias
                    synced.running_mean, synced.running_var = child.running_mean, child.running_var
                    synced.num_batches_tracked = child.num_batches_tracked
                    synced.train(child.training)
                    setattr(parent, name, synced)
                    swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in reversed(swapped):
            synced = getattr(parent, name)
            child.train(synced.training)
            setattr(parent, name, child)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def wrap_ddp(model: torch.nn.Module, env: DistEnv, **ddp_kwargs) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when the job is distributed, else unchanged.

    The model must already be on ``env.device``; extra keyword arguments go to DDP.
    """
    if not env.is_distributed:
        return model
    if env.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [env.device.index])
    return torch.nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
