"""data/augment.py against the semantics it claims: DARTS's Cutout, torchvision's (0.2.0, DARTS's)
RandomResizedCrop, CenterCrop and ColorJitter (as DARTS's ImageNet recipe uses them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data import augment
from data.errors import DataConfigError
from data.loaders import DataConfig, build_loaders

CPU = torch.device("cpu")


def cutout_masks(count: int, height: int, width: int, size: int, seed: int = 0) -> torch.Tensor:
    images = torch.zeros(count, 1, height, width, dtype=torch.uint8)
    out = augment.random_cutout(images, size, torch.tensor([1], dtype=torch.uint8), torch.Generator().manual_seed(seed))
    return out[:, 0].bool()


def test_cutout_covers_196_pixels_on_average_at_32x32_length_16():
    """DARTS: centre uniform over the image, square clipped at the border: E[area] = 14^2 = 196 of 256."""
    masks = cutout_masks(20000, 32, 32, 16)
    areas = masks.sum(dim=(1, 2)).float()
    assert abs(areas.mean().item() - 196.0) < 0.03 * 196.0
    assert areas.max().item() == 256 and areas.min().item() == 64  # whole square inside / centre in a corner
    assert (areas < 256).float().mean() > 0.5  # most squares are clipped (a fully-inside cutout never is)


def test_cutout_square_is_centred_on_a_pixel_and_clipped():
    masks = cutout_masks(500, 10, 12, 4, seed=1)
    for mask in masks:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert mask.sum() == len(rows) * len(cols)  # a rectangle
        # rows [c - 2, c + 2) clipped to the image, for some centre c in 0..9
        assert any(rows.tolist() == [r for r in range(c - 2, c + 2) if 0 <= r < 10] for c in range(10))
        assert any(cols.tolist() == [x for x in range(c - 2, c + 2) if 0 <= x < 12] for c in range(12))


def test_random_resized_crop_boxes_follow_torchvision_ranges():
    """RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3)) as torchvision 0.2.0: area fraction and w/h in range
    (r uniform, w and h swapped half the time, so w/h is as often below 1 as above), boxes inside, random place."""
    boxes = augment.resized_crop_boxes(5000, 256, 256, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T.double()
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 256).all() and (left + w <= 256).all()
    fraction = h * w / 256 ** 2
    assert fraction.min() >= 0.075 and fraction.max() <= 1.0
    assert fraction.min() < 0.09 and fraction.max() > 0.95  # the whole scale range is used
    ratio = w / h
    rounding = 1.0 / h + 1.0 / w  # w and h are rounded to whole pixels
    assert (ratio >= 3 / 4 * (1 - rounding)).all() and (ratio <= 4 / 3 * (1 + rounding)).all()
    assert ratio.min() < 0.78 and ratio.max() > 1.28
    assert abs((ratio > 1).double().mean().item() - (ratio < 1).double().mean().item()) < 0.05  # the swap
    assert len(set(top.tolist())) > 100  # placed at random


def test_random_resized_crop_falls_back_to_the_centred_square():
    """No box fits (scale above 1): torchvision 0.2.0 takes the centred square of side min(H, W)."""
    boxes = augment.resized_crop_boxes(3, 20, 40, torch.Generator().manual_seed(0), scale=(1.5, 2.0))
    assert boxes.tolist() == [[0, 10, 20, 20]] * 3


def test_crop_and_resize_is_identity_on_a_full_box_and_resizes_bilinearly():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    full = torch.tensor([[0, 0, 16, 16]] * 2)
    assert torch.equal(augment.crop_and_resize(images, full, 16), images)
    ramp = torch.arange(8, dtype=torch.uint8).repeat(1, 1, 4, 1) * 10  # (1, 1, 4, 8): columns 0, 10, ..., 70
    out = augment.crop_and_resize(ramp, torch.tensor([[0, 2, 4, 4]]), 8)  # columns 20..50 stretched to 8
    assert out.shape == (1, 1, 8, 8)
    # bilinear with half-pixel centres: output column i reads source (i + 0.5) / 2 - 0.5 (clamped to the crop),
    # value 20 + 10 * source: 20, 22.5, 27.5, 32.5, ..., 50, rounded half to even
    expected = torch.tensor([20, 22, 28, 32, 38, 42, 48, 50], dtype=torch.uint8)
    assert torch.equal(out[0, 0, 0], expected) and torch.equal(out[0, 0, 0], out[0, 0, 7])


def test_center_crop_is_torchvisions():
    images = torch.arange(2 * 3 * 10 * 9, dtype=torch.float32).view(2, 3, 10, 9)
    assert torch.equal(augment.center_crop(images, 4), images[..., 3:7, 2:6])


def test_color_jitter_factor_ranges_and_order():
    """ColorJitter(0.4, 0.4, 0.4, 0.2): factors ~ U[0.6, 1.4], hue shift ~ U[-0.2, 0.2], a random order."""
    factors, orders = augment.jitter_draws(20000, (0.4, 0.4, 0.4, 0.2), torch.Generator().manual_seed(0))
    assert factors[:, :3].min() >= 0.6 and factors[:, :3].max() <= 1.4
    assert factors[:, :3].min() < 0.61 and factors[:, :3].max() > 1.39
    assert factors[:, 3].min() >= -0.2 and factors[:, 3].max() <= 0.2 and factors[:, 3].abs().max() > 0.19
    assert abs(factors[:, 3].mean().item()) < 0.01 and abs(factors[:, 0].mean().item() - 1.0) < 0.01
    assert (orders.sort(dim=1).values == torch.arange(4)).all()  # permutations
    assert len({tuple(o) for o in orders.tolist()}) == 24  # every order occurs
    strong, _ = augment.jitter_draws(10, (1.5, 0, 0, 0), torch.Generator().manual_seed(0))
    assert strong[:, 0].min() >= 0.0 and (strong[:, 1:3] == 1.0).all()  # max(0, 1 - b); strength 0: factor 1


def test_color_jitter_operations():
    generator = torch.Generator().manual_seed(0)
    grey = torch.full((64, 3, 2, 2), 100, dtype=torch.uint8)
    bright = augment.color_jitter(grey, (0.4, 0.0, 0.0, 0.0), generator).float()
    assert bright.min() >= 60 - 1 and bright.max() <= 140 + 1 and bright.std() > 10  # 100 * U[0.6, 1.4]
    assert torch.equal(augment.color_jitter(grey, (0.0, 0.4, 0.4, 0.2), generator), grey)  # nothing to change
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    green = augment.shift_hue(red, torch.tensor([1 / 3]))
    torch.testing.assert_close(green.flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    images = torch.rand(4, 3, 5, 5)
    torch.testing.assert_close(augment.hsv_to_rgb(augment.rgb_to_hsv(images)), images, atol=1e-6, rtol=0)
    torch.testing.assert_close(augment.shift_hue(images, torch.ones(4)), images, atol=1e-6, rtol=0)  # a full turn


def imagefolder(tmp_path, size=(40, 30), count=4):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.random.default_rng(index).integers(0, 256, (*size[::-1], 3)).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return tmp_path


def test_imagenet_style_loaders_crop_train_randomly_and_test_centrally(tmp_path):
    cfg = DataConfig(dataset="imagefolder", data_dir=str(imagefolder(tmp_path)), backend="memory", image_size=16,
                     crop_size=12, color_jitter=[0.4, 0.4, 0.4, 0.2], translate=0, flip=True, batch_size=4)
    loaders = build_loaders(cfg, seed=0, device=CPU)
    assert loaders.image_size == (12, 12)
    images, _ = next(iter(loaders.train))
    assert images.shape == (4, 3, 12, 12)
    test_images, _ = next(iter(loaders.test))
    stored = loaders._arrays["test"].images[:4]  # (N, 16, 16, 3)
    table = torch.from_numpy(augment.normalisation_table(loaders.info.mean, loaders.info.std))
    expected = augment.normalise(torch.from_numpy(stored).permute(0, 3, 1, 2)[..., 2:14, 2:14].contiguous(), table)
    torch.testing.assert_close(test_images, expected)  # Resize(16) + CenterCrop(12), no randomness
    with pytest.raises(DataConfigError, match="crop_size 20 exceeds"):
        build_loaders(DataConfig(dataset="digits", backend="memory", crop_size=20), device=CPU)
    with pytest.raises(DataConfigError, match="color_jitter"):
        DataConfig(color_jitter=[0.4, 0.4, 0.4, 0.7]).validate()


def test_cutout_inside_is_ffcvs_square_fully_inside_the_image():
    """data.cutout_inside (FFCV's Cutout, PertNAS's pipeline): always a whole size x size square, placed
    uniformly, so every position of the top-left corner in [0, H - size] x [0, W - size] occurs."""
    images = torch.zeros(4000, 1, 10, 12, dtype=torch.uint8)
    out = augment.random_cutout(images, 4, torch.tensor([255], dtype=torch.uint8),
                                torch.Generator().manual_seed(0), inside=True)
    masks = out[:, 0] == 255
    assert (masks.sum(dim=(1, 2)) == 16).all()
    corners = {(int(m.any(dim=1).nonzero()[0]), int(m.any(dim=0).nonzero()[0])) for m in masks}
    assert corners == {(y, x) for y in range(7) for x in range(9)}
