"""AutoAugment's CIFAR-10 policy (data/autoaugment.py): every op keeps shape, dtype and range, and does its job."""
import pytest
import torch

import numpy as np
from PIL import Image

from data.autoaugment import (CIFAR10_POLICY, AutoAugment, apply_operation, apply_policy, autocontrast,
                              equalize, invert, posterize, shear, solarize, translate)

OPS = sorted({op for sub_policy in CIFAR10_POLICY for op, _, _ in sub_policy})


def test_policy_has_25_sub_policies_of_two_known_ops():
    assert len(CIFAR10_POLICY) == 25
    assert all(len(sub) == 2 for sub in CIFAR10_POLICY)
    # the CIFAR-10 policy uses 13 of AutoAugment's 16 ops (no ShearX, Cutout or SamplePairing)
    assert len(OPS) == 13 and "ShearX" not in OPS


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_keeps_shape_dtype_and_range(name, channels):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, channels, 12, 10, generator=generator)
    for magnitude in (0, 5, 9):
        out = apply_operation(images, name, magnitude, generator)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_ops_do_what_they_say():
    images = torch.rand(4, 3, 8, 8)
    assert torch.allclose(invert(images), 1 - images)
    assert torch.equal(solarize(images, torch.full((4,), 2.0)), images)  # threshold above every pixel
    assert torch.allclose(solarize(images, torch.zeros(4)), 1 - images)
    levels = (posterize(images, torch.full((4,), 2)) * 255).round()
    assert set(levels.unique().tolist()) <= {0.0, 64.0, 128.0, 192.0}
    stretched = autocontrast(images * 0.5 + 0.2)
    assert torch.allclose(stretched.amin(dim=(2, 3)), torch.zeros(4, 3), atol=1e-6)
    assert torch.allclose(stretched.amax(dim=(2, 3)), torch.ones(4, 3), atol=1e-6)
    dot = torch.zeros(1, 1, 8, 8)
    dot[0, 0, 4, 4] = 1.0
    # t = trunc(0.25 * 8) = 2 px: output x reads input x + 2, so the dot moves from column 4 to column 2
    assert translate(dot, torch.tensor([0.25]), horizontal=True)[0, 0].nonzero().tolist() == [[4, 2]]
    assert translate(dot, torch.tensor([-0.3]), horizontal=False)[0, 0].nonzero().tolist() == [[6, 4]]
    # equalisation spreads a narrow histogram over the whole range
    narrow = (torch.randint(100, 110, (2, 1, 16, 16)) / 255.0)
    flat = equalize(narrow)
    assert flat.min() == 0.0 and flat.max() == 1.0


def test_policy_is_reproducible_and_changes_images():
    images = torch.rand(32, 3, 16, 16)
    first = apply_policy(images, generator=torch.Generator().manual_seed(3))
    again = apply_policy(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    changed = (first - images).abs().flatten(1).amax(dim=1) > 1e-6
    assert changed.float().mean() > 0.5  # most images get at least one op


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_normalised_batch_keeps_shape_dtype_and_layout(dtype):
    augment = AutoAugment((125.3, 123.0, 113.9), (63.0, 62.1, 66.7), generator=torch.Generator().manual_seed(0))
    batch = torch.randn(8, 3, 32, 32).to(dtype)
    out = augment(batch)
    assert out.shape == batch.shape and out.dtype == dtype
    channels_last = batch.contiguous(memory_format=torch.channels_last)
    assert augment(channels_last).is_contiguous(memory_format=torch.channels_last)
    grey = AutoAugment((33.3,), (78.6,))(torch.randn(4, 1, 28, 28))
    assert grey.shape == (4, 1, 28, 28)


def test_policy_that_never_fires_is_the_identity_after_renormalising():
    never = tuple(((op, 0.0, mag), (op, 0.0, mag)) for (op, _, mag), _ in CIFAR10_POLICY)
    mean, std = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
    pixels = torch.rand(5, 3, 8, 8)
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1) / 255) / (torch.tensor(std).view(1, 3, 1, 1) / 255)
    assert torch.allclose(AutoAugment(mean, std, policy=never)(normalised), normalised, atol=1e-5)


# AutoAugment paper (Cubuk et al., CVPR 2019, arXiv 1805.09501), appendix table "Policy learned on reduced
# CIFAR-10": sub-policy i = (operation 1, probability, magnitude), (operation 2, probability, magnitude).
# Written from the paper's table; Invert, AutoContrast and Equalize take no magnitude (the table lists one).
PAPER_CIFAR10 = [
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
]
NO_MAGNITUDE = {"Invert", "AutoContrast", "Equalize"}


def test_policy_equals_the_papers_cifar10_table():
    assert len(CIFAR10_POLICY) == len(PAPER_CIFAR10) == 25
    for index, (ours, paper) in enumerate(zip(CIFAR10_POLICY, PAPER_CIFAR10)):
        for (name, probability, magnitude), (paper_name, paper_probability, paper_magnitude) in zip(ours, paper):
            assert (name, probability) == (paper_name, paper_probability), index
            assert magnitude == (None if name in NO_MAGNITUDE else paper_magnitude), index


def test_shear_is_about_the_top_left_corner_hand_computed():
    """s = 0.5 on a 4 x 4 image: output (x, y) reads input floor(x + 0.5 + s (y + 0.5)) of row y, i.e.
    x + 0, x + 1, x + 1, x + 2 for rows 0..3; row 0 stays (the corner is the fixed point), black beyond."""
    image = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    expected = torch.tensor([[1.0, 2, 3, 4], [6, 7, 8, 0], [10, 11, 12, 0], [15, 16, 0, 0]])
    torch.testing.assert_close(shear(image, torch.tensor([0.5]), horizontal=True)[0, 0], expected)
    torch.testing.assert_close(shear(image.transpose(2, 3), torch.tensor([0.5]), horizontal=False)[0, 0],
                               expected.t())
    # about the centre (the old behaviour) the middle rows would stay and row 0 would move
    assert torch.equal(shear(image, torch.tensor([0.5]), horizontal=True)[0, 0, 0], image[0, 0, 0])


@pytest.mark.parametrize("amount", [0.3, -0.2, 0.0667])
@pytest.mark.parametrize("horizontal", [True, False])
def test_shear_and_translate_equal_pil_affine_transform(amount, horizontal):
    pixels = np.random.default_rng(0).integers(1, 256, (13, 9)).astype(np.uint8)
    image = Image.fromarray(pixels)
    batch = torch.from_numpy(pixels).float().view(1, 1, 13, 9)
    ours = lambda op, value: op(batch, torch.tensor([value], dtype=torch.float64), horizontal=horizontal)[0, 0].numpy()
    data = (1, amount, 0, 0, 1, 0) if horizontal else (1, 0, 0, amount, 1, 0)
    pil = np.asarray(image.transform(image.size, Image.AFFINE, data, resample=Image.NEAREST))
    np.testing.assert_array_equal(ours(shear, amount), pil)
    shift = int(amount * (9 if horizontal else 13))
    data = (1, 0, shift, 0, 1, 0) if horizontal else (1, 0, 0, 0, 1, shift)
    pil = np.asarray(image.transform(image.size, Image.AFFINE, data, resample=Image.NEAREST))
    np.testing.assert_array_equal(ours(translate, amount), pil)
