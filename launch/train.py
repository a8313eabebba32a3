"""The one train step, train epoch and evaluate loop shared by every CLI, and the GPU speed switches.

Devices are never hard-coded. By default (``precision="auto"``, ``channels_last=None``) the forward pass
runs under bf16 autocast and models/images use channels_last on CUDA, and both are plain float32 and
contiguous on the CPU. Each switch can also be forced either way on any device, which is how the CPU-only
test suite runs the GPU code paths (bf16 autocast, channels_last, torch.compile: :func:`maybe_compile`) at
tiny shapes. Batches come from the data layer already on the model's device; one that is not is moved
with ``non_blocking=True``.

A model may return ``logits`` of shape (N, classes) or a tuple ``(logits, aux_logits_or_None)`` (the
DARTS evaluation network's auxiliary head). The loss of a train step is

    L = CE(logits, y) + aux_weight * CE(aux_logits, y)      (the second term only when aux_logits exist)

computed in float32 from the (possibly bf16) logits. Accuracies are percentages (0-100), as in the DARTS papers.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from launch.distributed import DistEnv, all_reduce_sum, unwrap_model
from launch.rundir import progress

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: A per-batch hook of :func:`train_epoch`: ``before_step(index, images, labels)``.
BeforeStep = Callable[[int, torch.Tensor, torch.Tensor], None]


#: Forward-pass precisions: "auto" = bf16 autocast on CUDA, float32 on the CPU; "bf16" = bf16 autocast on
#: any device (on the CPU, convolutions and matmuls then run in bf16); "fp32" = no autocast.
PRECISIONS = ("auto", "bf16", "fp32")


def autocast_context(device: torch.device | str, precision: str = "auto"):
    """The autocast context of a forward pass on ``device`` at ``precision`` (see :data:`PRECISIONS`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_channels_last(model: torch.nn.Module, device: torch.device | str,
                     enabled: bool | None = None) -> torch.nn.Module:
    """``model`` converted to channels_last memory format in place when ``enabled`` (None: on CUDA only).

    Convolutions whose weights are channels_last produce channels_last outputs from any input, so the
    batches need no conversion; the values are the same as with contiguous tensors up to float rounding.
    """
    if enabled is None:
        enabled = torch.device(device).type == "cuda"
    if enabled:
        model.to(memory_format=torch.channels_last)
    return model


def maybe_compile(model: torch.nn.Module, enabled: bool, mode: str | None = None,
                  backend: str | Callable = "inductor") -> torch.nn.Module:
    """``torch.compile(model, mode=mode, backend=backend)`` when ``enabled``, else ``model`` itself.

    The compiled module shares ``model``'s parameters and buffers (``launch.distributed.unwrap_model``
    returns ``model``). Python state that changes the graph, such as a SearchNetwork's op masks, is
    guarded: a changed mask recompiles (or reuses an earlier graph for a mask set seen before), so results
    follow the masks exactly; each new mask set costs one compilation.
    """
    return torch.compile(model, mode=mode, backend=backend) if enabled else model


def _model_device(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _without_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / DataParallel, so evaluation runs no collective; a torch.compile wrapper
    around the plain module is kept (evaluation runs compiled too), one around DDP is removed with it."""
    parallel = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    if isinstance(getattr(model, "_orig_mod", None), parallel):
        return unwrap_model(model)
    while isinstance(model, parallel):
        model = model.module
    return model


def _on_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    if images.device != device:
        images = images.to(device, non_blocking=True)
    if labels.device != device:
        labels = labels.to(device, non_blocking=True)
    if device.type == "cuda" and images.dim() == 4 and not images.is_contiguous(memory_format=torch.channels_last):
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels


def split_outputs(outputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, aux_logits or None)`` from a model's output: a tensor or a (logits, aux) tuple."""
    if isinstance(outputs, (tuple, list)):
        logits = outputs[0]
        aux = outputs[1] if len(outputs) > 1 else None
        return logits, aux
    return outputs, None


def count_correct(logits: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the k highest logits, for each k: shape (len(topk),).

    logits (N, classes), labels (N,). k larger than the number of classes counts every sample.
    """
    max_k = min(max(topk), logits.shape[-1])
    top_classes = logits.topk(max_k, dim=-1).indices  # (N, max_k)
    hits = top_classes.eq(labels.view(-1, 1))  # (N, max_k)
    return torch.stack([hits[:, : min(k, max_k)].any(dim=1).sum() for k in topk]).to(torch.float64)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Top-k accuracies in percent, one per k: 100 * (#samples with the label among the k best) / N."""
    if labels.numel() == 0:
        return [float("nan")] * len(topk)
    return (count_correct(logits, labels, topk) * (100.0 / labels.numel())).tolist()


def _train_step_on_device(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                          optimizer: torch.optim.Optimizer, *, criterion: Criterion | None = None,
                          grad_clip: float | None = 5.0, aux_weight: float = 0.0, scheduler=None,
                          precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The step of :func:`train_step`, returning ``(loss, correct)`` as 0-d tensors on the model's device
    (the float32 loss, detached, and the float64 number of top-1 hits) without reading them back, so a
    CUDA stream never waits for the host inside an epoch."""
    criterion = criterion or F.cross_entropy
    device = _model_device(model)
    images, labels = _on_device(images, labels, device)
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device, precision):
        logits, aux_logits = split_outputs(model(images))
    loss = criterion(logits.float(), labels)
    if aux_logits is not None and aux_weight:
        loss = loss + aux_weight * criterion(aux_logits.float(), labels)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), count_correct(logits.detach(), labels, topk=(1,))[0]


def train_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, *, criterion: Criterion | None = None,
               grad_clip: float | None = 5.0, aux_weight: float = 0.0, scheduler=None,
               precision: str = "auto") -> dict:
    """One optimisation step on a batch; returns ``{"loss": float, "top1": float}`` (top1 in percent).

    images (N, C, H, W), labels (N,). Forward under :func:`autocast_context` at ``precision``, loss as in the module
    docstring (``criterion`` defaults to cross-entropy), backward, gradient-norm clipping to
    ``grad_clip`` (None: no clipping), ``optimizer.step()``, then ``scheduler.step()`` if given.
    The model's train/eval mode is left as the caller set it. Reading the two floats waits for the device;
    :func:`train_epoch` takes the same step without reading anything back.
    """
    loss, correct = _train_step_on_device(model, images, labels, optimizer, criterion=criterion,
                                          grad_clip=grad_clip, aux_weight=aux_weight, scheduler=scheduler,
                                          precision=precision)
    return {"loss": loss.item(), "top1": (correct * (100.0 / labels.numel())).item()}


#: train_epoch's progress bar shows the running loss every this many steps (each display reads the device).
POSTFIX_EVERY = 20


def train_epoch(model: torch.nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, *,
                env: DistEnv, max_steps: int | None = None, desc: str = "train", sync: bool = True,
                before_step: BeforeStep | None = None, **train_step_kwargs) -> dict:
    """Train over ``batches`` of ``(images, labels)`` (at most ``max_steps``); returns averages.

    Returns ``{"loss", "top1", "steps", "count"}``: sample-weighted mean loss and top-1 (percent) over
    the epoch, summed across ranks when distributed and ``sync`` (every rank must call it then), the
    number of steps of this rank and the number of samples of all ranks. ``sync=False`` reports this rank
    alone and runs no collective (for work that differs between ranks, such as per-rank search members).
    ``before_step(index, images, labels)``, if given, is called before each step with the batch's index in
    this call (0, 1, ...) and the batch as ``batches`` yields it (the DARTS architecture step of
    supernet/search.py); what it changes (parameters, learning rates) the step then sees.
    Sets ``model.train()``. Other keyword arguments go to :func:`train_step` (criterion, grad_clip,
    aux_weight, scheduler, precision). The sums stay on the model's device and are read once at the end
    (and every :data:`POSTFIX_EVERY` steps for the progress bar, where it is shown).
    """
    model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=_model_device(model))  # loss * n, correct top-1, n
    steps = 0
    total = max_steps
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)
    bar = progress(batches, env, desc=desc, total=total, leave=False)
    for index, (images, labels) in enumerate(bar if max_steps != 0 else ()):
        if before_step is not None:
            before_step(index, images, labels)
        loss, correct = _train_step_on_device(model, images, labels, optimizer, **train_step_kwargs)
        count = labels.shape[0]
        sums[0] += loss.double() * count
        sums[1] += correct
        sums[2] += count
        steps += 1
        if not bar.disable and (steps - 1) % POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", top1=f"{100.0 * correct.item() / count:.1f}")
        if max_steps is not None and steps >= max_steps:
            break  # checked after the step so no batch is drawn and dropped
    bar.close()
    sums = all_reduce_sum(sums.to(env.device)).cpu() if sync else sums.cpu()
    count = sums[2].item()
    return {
        "loss": sums[0].item() / count if count else math.nan,
        "top1": 100.0 * sums[1].item() / count if count else math.nan,
        "steps": steps,
        "count": int(count),
    }


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches: Iterable, *, env: DistEnv, max_batches: int | None = None,
             criterion: Criterion | None = None, desc: str = "eval", sync: bool = True,
             precision: str = "auto", per_sample: bool = False) -> dict:
    """Loss and top-1/top-5 accuracy (percent) over ``batches``, summed over all ranks.

    Returns ``{"loss", "top1", "top5", "count", "correct"}`` where count is the number of samples of all
    ranks and correct the number of top-1 hits (top1 = 100 * correct / count);
    with a distributed job every rank must call it (one all_reduce of [loss sum, correct@1, correct@5, n]).
    ``sync=False`` scores this rank's batches alone and runs no collective (per-rank candidates).
    Runs the unwrapped model (no DDP collectives; a torch.compile wrapper is kept) under
    torch.inference_mode, in eval mode at ``precision`` (see :data:`PRECISIONS`), and restores its previous
    mode afterwards.
    ``criterion`` must return the batch mean (default cross-entropy); only the main logits are scored.
    ``per_sample``: also return this rank's ``per_sample_correct`` and ``per_sample_loss``, float64 CPU
    tensors (n,) in batch order (1.0 where top-1 is right; cross-entropy of each sample).
    """
    criterion = criterion or F.cross_entropy
    network = _without_ddp(model)
    was_training = network.training
    network.eval()
    device = _model_device(network)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss * n, correct@1, correct@5, n
    sample_correct, sample_loss = [], []
    try:
        bar = progress(batches, env, desc=desc, total=max_batches, leave=False)
        for index, (images, labels) in enumerate(bar if max_batches != 0 else ()):
            images, labels = _on_device(images, labels, device)
            with autocast_context(device, precision):
                logits, _ = split_outputs(network(images))
            logits = logits.float()
            count = labels.shape[0]
            sums[0] += criterion(logits, labels).double() * count
            sums[1:3] += count_correct(logits, labels, topk=(1, 5)).to(device)
            sums[3] += count
            if per_sample:
                sample_correct.append(logits.topk(1, dim=-1).indices[:, 0].eq(labels).to(torch.float64))  # as count_correct
                sample_loss.append(F.cross_entropy(logits, labels, reduction="none").to(torch.float64))
            if max_batches is not None and index + 1 >= max_batches:
                break
        bar.close()
    finally:
        network.train(was_training)
    if sync:
        sums = all_reduce_sum(sums.to(env.device))
    sums = sums.cpu()
    count = sums[3].item()
    result = {"loss": math.nan, "top1": math.nan, "top5": math.nan, "count": 0, "correct": 0}
    if count:
        result = {
            "loss": sums[0].item() / count,
            "top1": 100.0 * sums[1].item() / count,
            "top5": 100.0 * sums[2].item() / count,
            "count": int(count),
            "correct": int(sums[1].item()),
        }
    if per_sample:
        empty = torch.zeros(0, dtype=torch.float64)
        result["per_sample_correct"] = torch.cat(sample_correct).cpu() if sample_correct else empty
        result["per_sample_loss"] = torch.cat(sample_loss).cpu() if sample_loss else empty
    return result
