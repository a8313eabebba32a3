"""AutoAugment's CIFAR-10 policy (data/autoaugment.py): every op keeps shape, dtype and range, and does its job."""
import pytest
import torch

from data.autoaugment import (CIFAR10_POLICY, AutoAugment, apply_operation, apply_policy, autocontrast,
                              equalize, invert, posterize, solarize, translate)

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
    assert translate(dot, torch.tensor([0.25]), horizontal=True)[0, 0].nonzero().tolist() == [[4, 6]]
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
