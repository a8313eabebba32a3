"""Search split, rank shards, DataConfig validation, BatchStream and the in-memory loader's contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.errors import DataConfigError
from data.loaders import BatchStream, DataConfig, build_loaders
from data.splits import ShardPlan, search_split

CPU = torch.device("cpu")


def test_search_split_disjoint_covering_and_seeded():
    train, val = search_split(1000, 0.3, seed=7)
    assert len(train) == 300 and len(val) == 700
    assert not set(train) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    again_train, again_val = search_split(1000, 0.3, seed=7)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)
    other_train, _ = search_split(1000, 0.3, seed=8)
    assert not np.array_equal(np.sort(train), np.sort(other_train))


@pytest.mark.parametrize("shuffle, equal", [(True, True), (False, False)])
def test_rank_shards_are_disjoint_and_ordered_per_epoch(shuffle, equal):
    indices = np.random.default_rng(0).permutation(103)
    plans = [ShardPlan(indices, seed=3, stream=1, rank=r, world_size=4, shuffle=shuffle, equal_shards=equal)
             for r in range(4)]
    shards = [plan.epoch_indices(0) for plan in plans]
    union = np.concatenate(shards)
    assert len(set(union)) == len(union)  # disjoint
    if equal:
        assert {len(s) for s in shards} == {103 // 4}
    else:
        np.testing.assert_array_equal(np.sort(union), np.sort(indices))  # every sample once
    if shuffle:
        assert not np.array_equal(plans[0].epoch_indices(0), plans[0].epoch_indices(1))
    np.testing.assert_array_equal(plans[0].epoch_indices(1), plans[0].epoch_indices(1))


@pytest.mark.parametrize("field, value, message", [
    ("search_portion", 1.0, "search_portion"), ("batch_size", 0, "batch_size"), ("dataset", "svhn", "svhn"),
    ("backend", "dali", "backend"), ("cutout", -1, "cutout"), ("train_subset", 1, "train_subset")])
def test_config_validation_names_the_setting(field, value, message):
    cfg = DataConfig(**{field: value})
    with pytest.raises(DataConfigError, match=message):
        cfg.validate()


def test_cutout_larger_than_image_and_too_small_splits_are_refused():
    with pytest.raises(DataConfigError, match="cutout 9 exceeds"):
        build_loaders(DataConfig(cutout=9), device=CPU)
    loaders = build_loaders(DataConfig(batch_size=64, train_subset=100, search_portion=0.5), world_size=2, device=CPU)
    with pytest.raises(DataConfigError, match="fewer than one batch"):
        loaders.search_train


@pytest.fixture(scope="module")
def digits_loaders():
    cfg = DataConfig(dataset="digits", backend="memory", batch_size=50, eval_batch_size=40, cutout=4)
    return build_loaders(cfg, seed=5, device=CPU)


def test_memory_loader_output_contract(digits_loaders):
    loaders = digits_loaders
    assert loaders.backend == "memory" and loaders.info.in_channels == 1
    assert len(loaders.search_train) == 719 // 50 and len(loaders.search_val) == 18  # ceil(719 / 40)
    images, labels = next(iter(loaders.search_val))
    assert images.shape == (40, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (40,) and labels.dtype == torch.int64
    # un-augmented search_val batches are the normalised pixels of the split's samples, in the split's order
    from data.readers import read_dataset

    raw = read_dataset("digits", None, "train")
    first = loaders.search_val_indices[:40]
    expected = (torch.from_numpy(raw.images[first]).permute(0, 3, 1, 2).float() - loaders.info.mean[0]) / loaders.info.std[0]
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), raw.labels[first])


def test_memory_augmentation_is_seeded_per_epoch(digits_loaders):
    loader = digits_loaders.search_train
    loader.set_epoch(3)
    first = [images for images, _ in loader]
    loader.set_epoch(3)
    again = [images for images, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    different = next(iter(loader))[0]  # epoch 4 now
    assert not torch.equal(different, first[0])
    # same seed without augmentation: same samples in the same order, but other pixels
    plain = build_loaders(DataConfig(dataset="digits", backend="memory", batch_size=50, augment=False), seed=5,
                          device=CPU).search_train
    plain.set_epoch(3)
    plain_batches = list(plain)
    loader.set_epoch(3)
    augmented = list(loader)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(plain_batches, augmented))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(plain_batches, augmented))


def test_batch_stream_take_crosses_epochs_and_restores(digits_loaders):
    loader = digits_loaders.search_val  # 18 batches per epoch, fixed order
    epoch0 = [labels for _, labels in loader]
    stream = BatchStream(loader)
    taken = [labels for _, labels in stream.take(20)]
    assert len(taken) == 20
    assert all(torch.equal(a, b) for a, b in zip(taken[:18], epoch0))
    assert torch.equal(taken[18], epoch0[0]) and stream.state_dict() == {"epoch": 1, "batch_in_epoch": 2}
    later = [labels for _, labels in stream.take(3)]
    stream.load_state_dict({"epoch": 1, "batch_in_epoch": 2})
    restored = [labels for _, labels in stream.take(3)]
    assert all(torch.equal(a, b) for a, b in zip(restored, later))
    stream.reset(0)
    assert torch.equal(stream.next_batch()[1], epoch0[0])
    stream.close()

    shuffled = BatchStream(digits_loaders.search_train, start_epoch=2)
    per_epoch = len(digits_loaders.search_train)
    labels = torch.cat([y for _, y in shuffled.take(per_epoch + 1)])
    digits_loaders.search_train.set_epoch(2)
    expected = torch.cat([y for _, y in digits_loaders.search_train])
    assert torch.equal(labels[:len(expected)], expected)
    assert shuffled.state_dict() == {"epoch": 3, "batch_in_epoch": 1}


def test_seeded_training_subset():
    from data.loaders import training_subset

    np.testing.assert_array_equal(training_subset(100, None, 3), np.arange(100))
    np.testing.assert_array_equal(training_subset(100, 10, None), np.arange(10))  # the first N
    drawn = training_subset(1000, 50, 3)
    assert len(set(drawn)) == 50 and drawn.max() < 1000 and np.all(np.diff(drawn) > 0)
    np.testing.assert_array_equal(drawn, training_subset(1000, 50, 3))
    assert not np.array_equal(drawn, training_subset(1000, 50, 4)) and not np.array_equal(drawn, np.arange(50))
    # the loaders split the drawn subset (and only it) into search-train / search-val
    cfg = DataConfig(dataset="digits", backend="memory", batch_size=8, train_subset=200, train_subset_seed=5)
    loaders = build_loaders(cfg, seed=1, device=CPU)
    subset = training_subset(loaders.info.train_count, 200, 5)
    np.testing.assert_array_equal(loaders.train_indices, subset)
    both = np.concatenate([loaders.search_train_indices, loaders.search_val_indices])
    np.testing.assert_array_equal(np.sort(both), subset)


def test_drawn_batches_are_independent_draws_of_distinct_samples():
    """ShardPlan draw_batch: DARTS's next(iter(valid_queue)) per step, a fresh random batch every time."""
    indices = np.random.default_rng(1).permutation(np.arange(100, 140))
    plan = ShardPlan(indices, seed=3, stream=5, rank=0, world_size=1, draw_batch=8)
    order = plan.epoch_indices(0)
    assert len(order) == 40 // 8 * 8
    batches = order.reshape(-1, 8)
    assert all(len(set(batch)) == 8 for batch in batches)  # distinct within a batch
    assert set(order) <= set(indices)
    counts = np.bincount(np.concatenate([plan.epoch_indices(e) for e in range(200)]) - 100)
    assert len(set(np.concatenate([plan.epoch_indices(e)[:8] for e in range(20)]))) > 8  # not a fixed batch
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()  # uniform over the split
    assert any(len(set(order)) < len(order) for order in (plan.epoch_indices(e) for e in range(5)))  # replacement
    np.testing.assert_array_equal(order, plan.epoch_indices(0))  # seeded
    assert not np.array_equal(order, plan.epoch_indices(1))
    other_rank = ShardPlan(indices, seed=3, stream=5, rank=1, world_size=2, draw_batch=8)
    assert len(other_rank.epoch_indices(0)) == 16 and not np.array_equal(other_rank.epoch_indices(0), order[:16])


def test_arch_val_loader_augments_and_redraws_while_search_val_stays_fixed(digits_loaders):
    loaders = digits_loaders
    assert loaders.arch_val.batch_size == 50 and loaders.arch_val.augmentation.active
    assert len(loaders.arch_val) == len(loaders.search_val_indices) // 50
    first, again = (next(iter(loaders.search_val))[1] for _ in range(2))
    torch.testing.assert_close(first, again)  # the measuring batches never move
    loaders.arch_val.set_epoch(0)
    a = next(iter(loaders.arch_val))
    loaders.arch_val.set_epoch(1)
    b = next(iter(loaders.arch_val))
    assert not torch.equal(a[1], b[1])
    loaders.arch_val.set_epoch(0)
    torch.testing.assert_close(next(iter(loaders.arch_val))[0], a[0])  # reproducible, augmentation included
