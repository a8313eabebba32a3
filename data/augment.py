"""Batched augmentation and normalisation in torch, on whatever device the batch lives (both loaders).

Same operations, same semantics as the FFCV pipeline (data.ffcv_loader): on uint8 images, flip with
p = 0.5, translate by up to ``padding`` pixels with black fill (= pad and random crop), cutout of a
size x size square (fully inside the image) filled with the mean colour, then normalise through the same
per-channel lookup table FFCV's NormalizeImage builds, so both loaders give bit-identical un-augmented batches.
"""
from __future__ import annotations

import numpy as np
import torch


def normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(C, 256) float32 table T[c, v] = (v - mean_c) / std_c, computed in float64 as FFCV does."""
    mean_arr, std_arr = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    return ((np.arange(256)[None, :] - mean_arr[:, None]) / std_arr[:, None]).astype(np.float32)


def normalise(images: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W), x_hat[n, c] = table[c, x[n, c]] (table on the same device)."""
    channels = images.shape[1]
    flat = images.reshape(images.shape[0], channels, -1).long()
    offsets = (torch.arange(channels, device=images.device) * 256).view(1, channels, 1)
    return table.reshape(-1)[flat + offsets].view(images.shape)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image (N, C, H, W) left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


def random_translate(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image (N, C, H, W) by (dy, dx), each uniform in [-padding, padding]; black fills the gap.

    Implemented as zero-padding by ``padding`` then cropping H x W at offset (padding + dy, padding + dx).
    """
    count, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offset_y, offset_x = torch.randint(0, 2 * padding + 1, (2, count), device=images.device, generator=generator)
    rows = (offset_y[:, None] + torch.arange(height, device=images.device))[:, :, None]  # (N, H, 1)
    cols = (offset_x[:, None] + torch.arange(width, device=images.device))[:, None, :]   # (N, 1, W)
    sample = torch.arange(count, device=images.device)[:, None, None]
    return padded[sample, :, rows, cols].permute(0, 3, 1, 2)  # advanced indexing gives (N, H, W, C)


def random_cutout(images: torch.Tensor, size: int, fill: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill one size x size square per image (N, C, H, W), placed uniformly fully inside, with ``fill`` (C,)."""
    count, _, height, width = images.shape
    top = torch.randint(0, height - size + 1, (count,), device=images.device, generator=generator)
    left = torch.randint(0, width - size + 1, (count,), device=images.device, generator=generator)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    inside_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < (top + size)[:, None])
    inside_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < (left + size)[:, None])
    square = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]  # (N, 1, H, W)
    return torch.where(square, fill.view(1, -1, 1, 1).to(images.dtype), images)
