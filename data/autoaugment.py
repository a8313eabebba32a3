"""AutoAugment's CIFAR-10 policy (Cubuk et al., 2019), batched in torch on the batch's own device.

The policy is 25 sub-policies; each is two operations ``(name, probability, magnitude bin)``. For every
image one sub-policy is drawn uniformly, then each of its two operations is applied in order with its
probability. Magnitude bins 0..9 map linearly onto each operation's range (as in the paper):

    ShearX/Y     shear s in [0, 0.3]              (sign drawn at random), about the top-left corner
    TranslateX/Y shift in [0, 0.45] * image size  (150/331 of the paper's 331-px images; random sign),
                 truncated to whole pixels as torchvision does
    Rotate       angle in [0, 30] degrees         (random sign), about the centre
    Brightness, Color, Contrast, Sharpness: blend factor f = 1 + m, m in [0, 0.9] (random sign), i.e.
                 out = degenerate + f * (image - degenerate) with degenerate = black, grey-scale image,
                 mean grey level, 3x3-smoothed image respectively
    Posterize    keep b bits, b = 8 - round(bin / 2.25) (8..4)
    Solarize     invert pixels >= threshold t, t in [1, 0] (bin 0 -> 1: nothing inverted)
    AutoContrast, Equalize, Invert: no magnitude

Images enter as normalised float batches ``(N, C, H, W)`` (``x_hat = (x / 255 - mean) / std``, mean and std on
the 0-1 scale); :class:`AutoAugment` un-normalises them to ``[0, 1]``, applies the policy and normalises
again, so it can sit right after a loader that already normalised on the device. Shape and dtype are kept.
No torchvision. Shear and translate resample as PIL's ``Image.transform(AFFINE, (a, b, c, d, e, f))``
(torchvision's AutoAugment calls it with ``center=[0, 0]``): output pixel (x, y) takes the input pixel at
(floor(a (x + .5) + b (y + .5) + c), floor(d (x + .5) + e (y + .5) + f)), black outside; rotation uses
``affine_grid`` / ``grid_sample`` about the centre (nearest, black fill). The paper's own code fills with the
mean colour instead of black.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: The CIFAR-10 policy found by AutoAugment: (op, probability, magnitude bin 0..9 or None) pairs.
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

MAGNITUDE_BINS = 10
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's "L" conversion


def _bin_value(bin_index: int, top: float) -> float:
    """Magnitude of bin b in 0..9 on a linear scale from 0 to ``top``."""
    return top * bin_index / (MAGNITUDE_BINS - 1)


def _random_sign(count: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """(count,) of +1 / -1 with probability 1/2 each."""
    return torch.where(torch.rand(count, device=device, generator=generator) < 0.5, -1.0, 1.0)


# --- operations on images in [0, 1], shape (n, C, H, W), float32; per-sample magnitudes of shape (n,) ---

def _affine(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Resample each image through its 2x3 affine map (normalised coordinates), nearest, black outside."""
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def pil_affine(images: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """PIL's affine transform with nearest sampling: coefficients (n, 6) = (a, b, c, d, e, f) per image map
    output pixel (x, y) to input pixel (floor(a (x + .5) + b (y + .5) + c), floor(d (x + .5) + e (y + .5) + f));
    pixels mapped outside the image are black. (n, C, H, W) -> same."""
    n, channels, height, width = images.shape
    a, b, c, d, e, f = (coefficients[:, i].view(n, 1, 1).to(torch.float64) for i in range(6))
    xs = torch.arange(width, device=images.device, dtype=torch.float64).view(1, 1, width) + 0.5
    ys = torch.arange(height, device=images.device, dtype=torch.float64).view(1, height, 1) + 0.5
    source_x = torch.floor(a * xs + b * ys + c).long()  # (n, H, W)
    source_y = torch.floor(d * xs + e * ys + f).long()
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    flat = (source_y.clamp(0, height - 1) * width + source_x.clamp(0, width - 1)).view(n, 1, -1)
    sampled = images.reshape(n, channels, -1).gather(2, flat.expand(n, channels, -1)).view(n, channels, height, width)
    return torch.where(inside[:, None], sampled, torch.zeros_like(sampled))


def _coefficients(n: int, device: torch.device) -> torch.Tensor:
    """(n, 6) identity affine coefficients (1, 0, 0, 0, 1, 0)."""
    coefficients = torch.zeros(n, 6, device=device, dtype=torch.float64)
    coefficients[:, 0] = 1.0
    coefficients[:, 4] = 1.0
    return coefficients


def shear(images: torch.Tensor, amount: torch.Tensor, horizontal: bool) -> torch.Tensor:
    """Shear by ``amount`` (n,) about the top-left corner: output (x, y) reads input (x + s y, y)
    (horizontal, PIL's (1, s, 0, 0, 1, 0)) or (x, y + s x) (vertical, (1, 0, 0, s, 1, 0))."""
    coefficients = _coefficients(images.shape[0], images.device)
    coefficients[:, 1 if horizontal else 3] = amount.to(torch.float64)
    return pil_affine(images, coefficients)


def translate(images: torch.Tensor, fraction: torch.Tensor, horizontal: bool) -> torch.Tensor:
    """Shift by ``fraction`` (n,) of the image width (horizontal) or height, truncated to whole pixels t
    (torchvision's ``int(magnitude)``): output (x, y) reads input (x + t, y) (PIL's (1, 0, t, 0, 1, 0)) or
    (x, y + t); black fills the gap."""
    height, width = images.shape[-2:]
    pixels = torch.trunc(fraction.to(torch.float64) * (width if horizontal else height))
    coefficients = _coefficients(images.shape[0], images.device)
    coefficients[:, 2 if horizontal else 5] = pixels
    return pil_affine(images, coefficients)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate about the centre by ``degrees`` (n,), counter-clockwise; black corners."""
    radians = degrees * math.pi / 180.0
    cos, sin = torch.cos(radians), torch.sin(radians)
    height, width = images.shape[-2:]
    matrices = torch.zeros(images.shape[0], 2, 3, device=images.device)
    matrices[:, 0, 0] = cos
    matrices[:, 0, 1] = -sin * height / width
    matrices[:, 1, 0] = sin * width / height
    matrices[:, 1, 1] = cos
    return _affine(images, matrices)


def grey(images: torch.Tensor) -> torch.Tensor:
    """Luma (n, 1, H, W) of RGB images; grey images are returned as they are."""
    if images.shape[1] != 3:
        return images[:, :1]
    weights = torch.tensor(_GREY_WEIGHTS, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``degenerate + f * (images - degenerate)`` clamped to [0, 1]; f (n,) per image (PIL's ImageEnhance)."""
    factor = factor.view(-1, 1, 1, 1)
    return (degenerate + factor * (images - degenerate)).clamp_(0.0, 1.0)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(torch.zeros_like(images), images, factor)


def color(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Saturation: blend with the grey-scale image (identity on grey images)."""
    return blend(grey(images).expand_as(images), images, factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean grey level."""
    mean = grey(images).mean(dim=(1, 2, 3), keepdim=True)
    return blend(mean.expand_as(images), images, factor)


def sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image smoothed by [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 (border pixels unsmoothed)."""
    channels = images.shape[1]
    kernel = torch.ones(3, 3, device=images.device, dtype=images.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(channels, 1, 3, 3)
    smooth = images.clone()
    if min(images.shape[-2:]) >= 3:
        smooth[..., 1:-1, 1:-1] = F.conv2d(images, kernel, groups=channels)
    return blend(smooth, images, factor)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` (n,) bits of each 8-bit pixel value."""
    levels = (images * 255.0).round().to(torch.int64)
    drop = (8 - bits).to(torch.int64).view(-1, 1, 1, 1)
    return ((levels >> drop) << drop).to(images.dtype) / 255.0


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert every pixel >= ``threshold`` (n,)."""
    return torch.where(images >= threshold.view(-1, 1, 1, 1), 1.0 - images, images)


def invert(images: torch.Tensor) -> torch.Tensor:
    return 1.0 - images


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch each channel linearly so its minimum becomes 0 and its maximum 1 (flat channels unchanged)."""
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    span = high - low
    stretched = (images - low) / span.clamp_min(1e-8)
    return torch.where(span > 0, stretched, images)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel on 256 levels: v -> round(255 * (cdf(v) - cdf_min) / (P - cdf_min)).

    P is the pixel count per channel, cdf_min the count of the darkest level present; a channel with a
    single level is left unchanged.
    """
    n, channels, height, width = images.shape
    levels = (images * 255.0).round().clamp_(0, 255).to(torch.int64).reshape(n * channels, height * width)
    histogram = torch.zeros(n * channels, 256, device=images.device, dtype=torch.float32)
    histogram.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float32))
    cdf = histogram.cumsum(dim=1)
    cdf_min = torch.where(histogram > 0, cdf, torch.full_like(cdf, float(height * width))).amin(dim=1, keepdim=True)
    denominator = float(height * width) - cdf_min
    table = ((cdf - cdf_min) / denominator.clamp_min(1.0) * 255.0).round().clamp_(0, 255)
    equalised = table.gather(1, levels) / 255.0
    flat = (denominator <= 0).expand_as(equalised)
    result = torch.where(flat, levels.to(torch.float32) / 255.0, equalised)
    return result.view(n, channels, height, width).to(images.dtype)


def apply_operation(images: torch.Tensor, name: str, magnitude_bin: int | None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """One named policy operation at ``magnitude_bin`` on images in [0, 1] (n, C, H, W) -> same shape."""
    n, device = images.shape[0], images.device
    if n == 0:
        return images
    signed = (lambda top: _bin_value(magnitude_bin, top) * _random_sign(n, device, generator))
    if name in ("ShearX", "ShearY"):
        return shear(images, signed(0.3), horizontal=name == "ShearX")
    if name in ("TranslateX", "TranslateY"):
        return translate(images, signed(150.0 / 331.0), horizontal=name == "TranslateX")
    if name == "Rotate":
        return rotate(images, signed(30.0))
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        factor = 1.0 + signed(0.9)
        return {"Brightness": brightness, "Color": color, "Contrast": contrast, "Sharpness": sharpness}[name](
            images, factor)
    if name == "Posterize":
        bits = 8 - round(magnitude_bin * 4 / (MAGNITUDE_BINS - 1))
        return posterize(images, torch.full((n,), bits, device=device))
    if name == "Solarize":
        return solarize(images, torch.full((n,), 1.0 - _bin_value(magnitude_bin, 1.0), device=device))
    if name == "AutoContrast":
        return autocontrast(images)
    if name == "Equalize":
        return equalize(images)
    if name == "Invert":
        return invert(images)
    raise ValueError(f"unknown AutoAugment operation {name!r}")


def apply_policy(images: torch.Tensor, policy=CIFAR10_POLICY,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [0, 1] (N, C, H, W) -> augmented images (N, C, H, W), float32.

    Each image gets one sub-policy drawn uniformly; each of its two operations fires with its probability.
    """
    images = images.to(torch.float32).clone()
    n, device = images.shape[0], images.device
    choice = torch.randint(0, len(policy), (n,), device=device, generator=generator)
    for stage in range(2):
        fires = torch.rand(n, device=device, generator=generator)
        for index, sub_policy in enumerate(policy):
            name, probability, magnitude_bin = sub_policy[stage]
            selected = ((choice == index) & (fires < probability)).nonzero().flatten()
            if selected.numel():
                images[selected] = apply_operation(images[selected], name, magnitude_bin, generator)
    return images


class AutoAugment:
    """Callable: normalised batch (N, C, H, W) -> AutoAugmented normalised batch, same shape, dtype, device.

    ``mean`` and ``std`` are per channel on the 0-255 pixel scale (as data.info.DatasetInfo holds them);
    ``generator`` (on the batch's device) makes the draws reproducible.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], policy=CIFAR10_POLICY,
                 generator: torch.Generator | None = None):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) / 255.0
        self.policy = policy
        self.generator = generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        pixels = (images.to(torch.float32) * std + mean).clamp_(0.0, 1.0)
        augmented = apply_policy(pixels, self.policy, self.generator)
        return ((augmented - mean) / std).to(images.dtype).contiguous(memory_format=_memory_format(images))


def _memory_format(images: torch.Tensor) -> torch.memory_format:
    if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
