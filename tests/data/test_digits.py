"""scikit-learn's bundled digits and diabetes sets as DataModules."""

from __future__ import annotations

import pytest
import torch

from dlkit.data import DiabetesDataModule, DigitsDataModule


def test_digits_split_sizes_stratified_and_deterministic() -> None:
    dm = DigitsDataModule()
    dm.setup("fit")
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 1797 and sizes["val"] == pytest.approx(0.15 * 1797, abs=10)
    for _, y in dm.splits.values():
        counts = torch.bincount(y, minlength=10)
        assert counts.min() >= 0.08 * len(y)  # every class in every split
    again = DigitsDataModule()
    again.setup("fit")
    assert all(torch.equal(dm.splits[k][1], again.splits[k][1]) for k in dm.splits)
    other = DigitsDataModule(seed=7)
    other.setup("fit")
    assert not torch.equal(dm.splits["test"][0], other.splits["test"][0])


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [({}, (64, 1, 8, 8)), ({"resize": 32}, (64, 1, 32, 32)), ({"flatten": True}, (64, 64))],
)
def test_digits_shapes_and_scaling(kwargs: dict, shape: tuple) -> None:
    dm = DigitsDataModule(**kwargs)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == shape and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1 and dm.input_shape == shape[1:]


def test_digits_standard_scaling_uses_training_statistics() -> None:
    dm = DigitsDataModule(scaling="standard")
    dm.setup("fit")
    train_x = dm.splits["train"][0]
    assert abs(train_x.mean().item()) < 1e-5 and abs(train_x.std().item() - 1) < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scaling": "zscore"}, "data.scaling must be 'minmax' or 'standard'"),
        ({"batch_size": 0}, "data.batch_size must be a positive integer"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum to less than 1"),
        ({"resize": 0}, "data.resize must be a positive side length"),
    ],
)
def test_digits_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**kwargs)


def test_diabetes_standardised_with_training_statistics() -> None:
    dm = DiabetesDataModule()
    dm.setup("fit")
    x, y = dm.splits["train"]
    assert x.shape == (310, 10) and y.shape == (310, 1)
    assert x.mean(0).abs().max() < 1e-5 and abs(y.mean().item()) < 1e-5
    assert 100 < dm.target_mean < 200 and dm.target_std > 10
    assert sum(len(v[1]) for v in dm.splits.values()) == 442


class _Trainer:
    def __init__(self, training: bool) -> None:
        self.training = training


def test_digits_augmentation_shifts_training_batches_only() -> None:
    dm = DigitsDataModule(resize=32, augment=True, random_crop_padding=2)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    dm.trainer = _Trainer(training=True)
    shifted, same_y = dm.on_after_batch_transfer((x, y), 0)
    assert shifted.shape == x.shape and torch.equal(same_y, y)
    assert not torch.equal(shifted, x)
    # A shift of <= 2 px moves the digit; only ink within 2 px of the border is lost.
    kept = shifted.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert (kept <= 1 + 1e-6).all() and (kept > 0.7).all()
    dm.trainer = _Trainer(training=False)
    assert torch.equal(dm.on_after_batch_transfer((x, y), 0)[0], x)
    flat = DigitsDataModule(flatten=True, augment=True)
    assert not flat.augment  # shifting needs images
