"""The slicing batch loader and the in-memory DataModule."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn

from dlkit import Classifier
from dlkit.data import TensorBatchLoader, TensorDataModule, stratified_split
from dlkit.data.transforms import RandomCrop


def test_loader_covers_every_sample_once_per_epoch() -> None:
    x, y = torch.arange(100).float().unsqueeze(1), torch.arange(100)
    loader = TensorBatchLoader(x, y, batch_size=32, shuffle=True, seed=3)
    assert len(loader) == 4
    epoch1 = torch.cat([b[1] for b in loader])
    epoch2 = torch.cat([b[1] for b in loader])
    assert sorted(epoch1.tolist()) == list(range(100)) and not torch.equal(epoch1, epoch2)
    again = TensorBatchLoader(x, y, batch_size=32, shuffle=True, seed=3)
    assert torch.equal(torch.cat([b[1] for b in again]), epoch1)  # same seed, same order
    for xb, yb in loader:
        assert torch.equal(xb.squeeze(1).long(), yb)  # inputs stay paired with targets


def test_loader_drop_last_dict_targets_and_predict_mode() -> None:
    x = torch.randn(10, 3)
    loader = TensorBatchLoader(x, {"a": torch.arange(10), "b": torch.zeros(10)}, batch_size=4, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2 and set(batches[0][1]) == {"a", "b"}
    assert [b.shape[0] for b in TensorBatchLoader(x, None, batch_size=4)] == [4, 4, 2]


def test_loader_bad_input() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        TensorBatchLoader(torch.zeros(3), torch.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="x has 3 samples but y has 4"):
        TensorBatchLoader(torch.zeros(3), torch.zeros(4))


def test_stratified_split_keeps_class_proportions() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    train, val, test = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) + len(test) == 200
    for part, frac in ((train, 0.6), (val, 0.2), (test, 0.2)):
        counts = np.bincount(labels[part], minlength=4)
        np.testing.assert_allclose(counts, frac * np.array([100, 50, 30, 20]), atol=1)
    same = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), same))
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(labels, (0.6, 0.6), seed=0)


def test_datamodule_without_val_split() -> None:
    dm = TensorDataModule(train=(torch.randn(8, 2), torch.zeros(8)), batch_size=4)
    assert len(dm.train_dataloader()) == 2 and dm.val_dataloader() == []
    with pytest.raises(ValueError, match="has no 'test' split"):
        dm.test_dataloader()


class _BatchRecorder(L.Callback):
    def __init__(self) -> None:
        self.per_epoch: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.per_epoch.setdefault(trainer.current_epoch, []).append(batch[0].clone())


@pytest.mark.parametrize("overfit", [0, 2])
def test_overfit_batches_repeats_the_same_batches(overfit: int) -> None:
    # Lightning stops shuffling for overfit_batches by swapping a DataLoader's sampler;
    # the in-memory loader must do it by itself, or "overfit" sees new data each epoch.
    g = torch.Generator().manual_seed(0)
    dm = TensorDataModule(train=(torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)),
                          batch_size=8)
    recorder = _BatchRecorder()
    clf = Classifier(nn.Linear(4, 3), num_classes=3)
    trainer = L.Trainer(max_epochs=2, overfit_batches=overfit, limit_train_batches=2 if not overfit else 1.0,
                        limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(clf, datamodule=dm)
    first, second = recorder.per_epoch[0], recorder.per_epoch[1]
    assert len(first) == len(second) == 2
    same = all(torch.equal(a, b) for a, b in zip(first, second))
    assert same == bool(overfit)


# ----------------------------------------------------------------------------- resuming
def _labels(batches) -> list[list[int]]:
    return [b[1].tolist() for b in batches]


def test_loader_state_continues_an_epoch_at_the_next_batch() -> None:
    x, y = torch.randn(10, 2), torch.arange(10)
    loader = TensorBatchLoader(x, y, batch_size=3, shuffle=True, seed=5)
    _labels(loader)  # epoch 0
    it = iter(loader)
    seen = _labels([next(it), next(it)])  # two batches of epoch 1
    state = loader.state_dict()
    assert (state["epoch"], state["batches"]) == (1, 2)
    rest_of_epoch, next_epoch = _labels(it), _labels(loader)

    resumed = TensorBatchLoader(x, y, batch_size=3, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    assert _labels(resumed) == rest_of_epoch and _labels(resumed) == next_epoch
    assert sorted(sum(seen + rest_of_epoch, [])) == list(range(10))


def test_loader_state_of_a_finished_epoch_starts_the_next_one() -> None:
    loader = TensorBatchLoader(torch.randn(6, 2), torch.arange(6), batch_size=3, shuffle=True)
    epoch0 = _labels(loader)
    resumed = TensorBatchLoader(torch.randn(6, 2), torch.arange(6), batch_size=3, shuffle=True)
    resumed.load_state_dict(loader.state_dict())
    assert _labels(resumed) == _labels(loader) != epoch0


def test_loader_follows_its_epoch_source() -> None:
    epoch = {"now": 3}
    loader = TensorBatchLoader(torch.randn(8, 2), torch.arange(8), batch_size=4, shuffle=True,
                               epoch_source=lambda: epoch["now"])
    counting = TensorBatchLoader(torch.randn(8, 2), torch.arange(8), batch_size=4, shuffle=True)
    for _ in range(3):
        _labels(counting)
    assert _labels(loader) == _labels(counting)  # epoch 3 either way
    # A restored position is for its own epoch: a source already past it starts afresh.
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    epoch["now"] = 4
    loader.load_state_dict(state)
    assert _labels(loader) == _labels(counting)  # epoch 4, from its first batch


def test_loader_refuses_a_state_from_other_settings() -> None:
    state = TensorBatchLoader(torch.randn(8, 2), None, batch_size=4, shuffle=True).state_dict()
    with pytest.raises(ValueError, match="batch_size: 4 -> 2"):
        TensorBatchLoader(torch.randn(8, 2), None, batch_size=2, shuffle=True).load_state_dict(state)


def test_datamodule_state_holds_its_augmentation_generator() -> None:
    def module() -> TensorDataModule:
        dm = TensorDataModule(train=(torch.randn(8, 1, 6, 6), torch.zeros(8)))
        dm.shift = RandomCrop(padding=2, generator=torch.Generator().manual_seed(0))
        return dm

    images = torch.rand(4, 1, 6, 6)
    dm = module()
    dm.shift(images)
    state = dm.state_dict()
    expected = dm.shift(images)
    restored = module()
    restored.load_state_dict(state)
    assert torch.equal(restored.shift(images), expected)
