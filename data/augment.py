"""Batched augmentation and normalisation in torch, on whatever device the batch lives (both loaders).

On uint8 images (N, C, H, W), every random draw from the caller's seeded torch.Generator:

- flip with p = 0.5; translate by up to ``padding`` pixels with black fill (= pad and random crop, as
  torchvision's RandomCrop(padding)); cutout as DARTS's ``utils.Cutout`` (centre anywhere, square clipped
  at the border), filled with the mean colour (DARTS zeroes the normalised image: the same colour, up to
  the rounding of the mean to uint8);
- DARTS's ImageNet recipe as its torchvision (0.2.0) defines it: :func:`random_resized_crop`
  (RandomResizedCrop: area scale [0.08, 1], aspect ratio [3/4, 4/3] swapped with p 1/2, 10 tries, then a
  centre square; bilinear resize with antialiasing), :func:`center_crop` (CenterCrop) and
  :func:`color_jitter` (ColorJitter: brightness, contrast, saturation, hue in a random order per image);

then normalise through the same per-channel lookup table FFCV's NormalizeImage builds, so both loaders give
bit-identical un-augmented batches.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from data.autoaugment import brightness, color, contrast


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


def random_cutout(images: torch.Tensor, size: int, fill: torch.Tensor, generator: torch.Generator,
                  inside: bool = False) -> torch.Tensor:
    """Cutout on each image (N, C, H, W): a square set to ``fill`` (C,).

    DARTS's (default): centre (c_y, c_x) uniform over all H x W pixels, rows [c_y - size // 2,
    c_y + size // 2) and columns likewise, clipped at the border; at 32 x 32 with size 16 it covers
    14^2 = 196 pixels on average. ``inside`` (FFCV's Cutout, PertNAS's pipeline): the size x size square's
    top-left corner uniform over [0, H - size] x [0, W - size], so it always lies fully inside.
    """
    count, _, height, width = images.shape
    half = size // 2
    if inside:
        top = torch.randint(0, height - size + 1, (count,), device=images.device, generator=generator)
        left = torch.randint(0, width - size + 1, (count,), device=images.device, generator=generator)
        first_y, last_y, first_x, last_x = top, top + size, left, left + size
    else:
        centre_y = torch.randint(0, height, (count,), device=images.device, generator=generator)
        centre_x = torch.randint(0, width, (count,), device=images.device, generator=generator)
        first_y, last_y, first_x, last_x = centre_y - half, centre_y + half, centre_x - half, centre_x + half
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    inside_rows = (rows[None, :] >= first_y[:, None]) & (rows[None, :] < last_y[:, None])
    inside_cols = (cols[None, :] >= first_x[:, None]) & (cols[None, :] < last_x[:, None])
    square = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]  # (N, 1, H, W)
    return torch.where(square, fill.view(1, -1, 1, 1).to(images.dtype), images)


def resized_crop_boxes(count: int, height: int, width: int, generator: torch.Generator,
                       scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """RandomResizedCrop boxes as torchvision 0.2.0 (DARTS's) draws them: (count, 4) int64 (top, left, h, w).

    Per image, up to 10 tries: area a = H W s with s ~ U(scale), aspect r ~ U(ratio), w = round(sqrt(a r)),
    h = round(sqrt(a / r)), w and h swapped with probability 1/2; the first box that fits is placed
    uniformly at random. If none fits, the centred square of side min(H, W). (Later torchvision draws
    log r uniformly, without the swap, and falls back to the whole image clamped to ``ratio``.)
    """
    tries = 10
    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(count, tries, device=device, generator=generator))
    aspect = ratio[0] + (ratio[1] - ratio[0]) * torch.rand(count, tries, device=device, generator=generator)
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    swap = torch.rand(count, tries, device=device, generator=generator) < 0.5
    w, h = torch.where(swap, h, w), torch.where(swap, w, h)
    fits = (w <= width) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    found = fits.any(dim=1)
    side = min(height, width)
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.full((count,), side, device=device))
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.full((count,), side, device=device))
    draws = torch.rand(count, 2, device=device, generator=generator)
    top = torch.where(found, (draws[:, 0] * (height - h + 1)).long(), (height - h) // 2)
    left = torch.where(found, (draws[:, 1] * (width - w + 1)).long(), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image (N, C, H, W) uint8 cut to its box (top, left, h, w) and resized to size x size (bilinear,
    antialiased when shrinking, as torchvision's resize), rounded back to uint8."""
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=images.dtype, device=images.device)
    for index, (top, left, h, w) in enumerate(boxes.tolist()):
        crop = images[index:index + 1, :, top:top + h, left:left + w].float()
        if (h, w) != (size, size):
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[index] = crop[0].round().clamp_(0, 255).to(images.dtype)
    return out


def random_resized_crop(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(size) on each image: (N, C, H, W) uint8 -> (N, C, size, size) uint8."""
    count, _, height, width = images.shape
    boxes = resized_crop_boxes(count, height, width, generator, device=images.device)
    return crop_and_resize(images, boxes, size)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """CenterCrop(size): the central size x size window, top-left at ((H - size) // 2, (W - size) // 2)."""
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size].contiguous()


def jitter_draws(count: int, strengths: tuple[float, float, float, float], generator: torch.Generator,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """ColorJitter's random parameters for ``count`` images: factors (count, 4) and orders (count, 4).

    strengths (b, c, s, h): brightness, contrast and saturation factors ~ U[max(0, 1 - x), 1 + x], hue
    shift ~ U[-h, h] (a fraction of the hue circle); orders[n] is a random permutation of the 4 operations.
    """
    b, c, s, h = strengths
    low = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h], device=device)
    high = torch.tensor([1 + b, 1 + c, 1 + s, h], device=device)
    factors = low + (high - low) * torch.rand(count, 4, device=device, generator=generator)
    orders = torch.rand(count, 4, device=device, generator=generator).argsort(dim=1)
    return factors, orders


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the circle)."""
    red, green, blue = images.unbind(1)
    value, _ = images.max(dim=1)
    low, _ = images.min(dim=1)
    chroma = value - low
    grey = chroma == 0
    safe_chroma = torch.where(grey, torch.ones_like(chroma), chroma)
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    hue = torch.where(value == red, (green - blue) / safe_chroma,
                      torch.where(value == green, 2.0 + (blue - red) / safe_chroma, 4.0 + (red - green) / safe_chroma))
    hue = torch.where(grey, torch.zeros_like(hue), torch.remainder(hue / 6.0, 1.0))
    return torch.stack([hue, saturation, value], dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) HSV in [0, 1] -> RGB in [0, 1]."""
    hue, saturation, value = images.unbind(1)
    sector = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    sector = torch.remainder(sector, 6).long()
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    table = torch.stack([torch.stack(channel, dim=1) for channel in (
        (value, q, p, p, t, value), (t, value, value, q, p, p), (p, p, t, value, value, q))], dim=1)  # (N, 3, 6, H, W)
    return table.gather(2, sector[:, None, None].expand(-1, 3, 1, -1, -1)).squeeze(2)


def shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images in [0, 1] (N, 3, H, W) by ``shift`` (N,) turns; grey images unchanged."""
    if images.shape[1] != 3:
        return images
    hsv = rgb_to_hsv(images)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(hsv).clamp_(0.0, 1.0)


def color_jitter(images: torch.Tensor, strengths: tuple[float, float, float, float],
                 generator: torch.Generator) -> torch.Tensor:
    """ColorJitter(brightness, contrast, saturation, hue) on uint8 images (N, C, H, W) -> uint8.

    Brightness blends with black, contrast with the mean grey level, saturation with the grey image (the
    PIL ImageEnhance operations of data.autoaugment), hue rotates the HSV hue; each image applies the four
    in its own random order (:func:`jitter_draws`); an operation of strength 0 is skipped.
    """
    factors, orders = jitter_draws(images.shape[0], strengths, generator, device=images.device)
    operations = (brightness, contrast, color, shift_hue)
    pixels = images.float() / 255.0
    for position in range(4):
        for operation in range(4):
            if strengths[operation] == 0:
                continue
            chosen = (orders[:, position] == operation).nonzero().flatten()
            if chosen.numel():
                pixels[chosen] = operations[operation](pixels[chosen], factors[chosen, operation])
    return (pixels * 255.0).round_().clamp_(0, 255).to(images.dtype)
