"""EarlyStopping follows Keras' semantics epoch for epoch, restores the best weights, resumes."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from dlkit.callbacks import EarlyStopping

pytestmark = pytest.mark.usefixtures("one_thread")


class Scripted(L.LightningModule):
    """One weight vector trained by SGD; validation logs a scripted value per epoch."""

    def __init__(self, script: list[float], name: str = "val/score") -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(1.0, 2.0, 4))
        self.script, self.name = script, name

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return ((x @ self.w) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        self.log(self.name, self.script[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.linspace(-1, 1, 16).reshape(4, 4)), batch_size=4)


class WeightsPerEpoch(L.Callback):
    def __init__(self) -> None:
        self.weights: dict[int, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.weights[trainer.current_epoch] = pl_module.w.detach().clone()


def fit(script, stopper, max_epochs=None, tmp_path=None, ckpt_path=None, extra=()):
    model = Scripted(script)
    trainer = L.Trainer(
        max_epochs=max_epochs or len(script), callbacks=[stopper, *extra], logger=False,
        enable_checkpointing=bool(tmp_path), enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, loader(), loader(), ckpt_path=ckpt_path)
    return model, trainer


def keras_stop_epoch(values, patience, min_delta, baseline, start_from_epoch, mode="min"):
    """Keras 3's EarlyStopping.on_epoch_end, transcribed as a reference (None: never stops)."""
    sign = 1 if mode == "max" else -1
    delta = sign * abs(min_delta)
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)

    def improves(value, ref):
        return ref is None or better(value - delta, ref)

    wait, best = 0, None
    for epoch, current in enumerate(values):
        if epoch < start_from_epoch:
            continue
        wait += 1
        if improves(current, best):
            best = current
            if baseline is None or improves(current, baseline):
                wait = 0
            continue
        if wait >= patience and epoch > 0:
            return epoch
    return None


SCRIPT = [1.0, 0.8, 0.79, 0.85, 0.7, 0.71, 0.72, 0.73, 0.69, 0.9, 0.95, 0.99]


@pytest.mark.parametrize(
    ("patience", "min_delta", "baseline", "start_from_epoch"),
    list(itertools.product([0, 1, 2, 3], [0.0, 0.015], [None, 0.75], [0, 4])),
)
def test_stops_at_the_epoch_keras_stops(patience, min_delta, baseline, start_from_epoch) -> None:
    stopper = EarlyStopping("val/score", min_delta=min_delta, patience=patience, mode="min",
                            baseline=baseline, start_from_epoch=start_from_epoch)  # fmt: skip
    _, trainer = fit(SCRIPT, stopper)
    expected = keras_stop_epoch(SCRIPT, patience, min_delta, baseline, start_from_epoch)
    assert stopper.stopped_epoch == expected
    assert trainer.current_epoch == (len(SCRIPT) if expected is None else expected + 1)


@pytest.mark.parametrize(
    ("kwargs", "stopped"),
    [
        ({"patience": 2}, 6),  # best 0.7 at epoch 4; 0.71, 0.72 -> stop at 6
        ({"patience": 2, "min_delta": 0.05}, 3),  # 0.8 (epoch 1) is the last improvement by > 0.05
        ({"patience": 1, "baseline": 0.5}, 3),  # nothing beats the baseline: wait never resets
        ({"patience": 2, "start_from_epoch": 5}, 7),  # epochs 0-4 ignored; best 0.71 at 5
    ],
)
def test_hand_checked_stop_epochs(kwargs, stopped) -> None:
    stopper = EarlyStopping("val/score", mode="min", **kwargs)
    fit(SCRIPT, stopper)
    assert stopper.stopped_epoch == stopped


def test_mode_max_and_auto_from_the_metric_name() -> None:
    rising = [0.1, 0.5, 0.4, 0.45, 0.3]
    stopper = EarlyStopping("val/score", patience=1, mode="max")
    fit(rising, stopper)
    assert stopper.stopped_epoch == 2 and stopper.best == 0.5
    auto = EarlyStopping("val/loss", patience=1)  # auto: a loss is minimised
    model = Scripted([3.0, 2.0, 2.5, 2.6], name="val/loss")
    L.Trainer(max_epochs=4, callbacks=[auto], logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0).fit(model, loader(), loader())  # fmt: skip
    assert auto.direction == "min" and auto.stopped_epoch == 2


def test_auto_reads_higher_is_better_from_a_dlkit_task() -> None:
    from dlkit import Classifier, create_model

    clf = Classifier(create_model("mlp", num_classes=3, in_features=4, hidden_sizes=[8]))
    stopper = EarlyStopping("val/acc", patience=0)
    x, y = torch.randn(30, 4), torch.arange(30) % 3
    clf.fit(x, y, epochs=2, validation_split=0.3, callbacks=[stopper], verbose=False)
    assert stopper.direction == "max"


@pytest.mark.parametrize("stops_early", [True, False])
def test_restores_the_best_epochs_weights_bit_for_bit(stops_early: bool) -> None:
    script = SCRIPT if stops_early else [1.0, 0.5, 0.6, 0.7]
    stopper = EarlyStopping("val/score", patience=2 if stops_early else 10, mode="min", restore_best_weights=True)
    seen = WeightsPerEpoch()
    model, _ = fit(script, stopper, extra=[seen])
    assert (stopper.stopped_epoch is not None) is stops_early
    assert stopper.best_epoch == (4 if stops_early else 1)
    assert torch.equal(model.w.detach(), seen.weights[stopper.best_epoch])


def test_restores_when_another_callback_stops_the_run() -> None:
    class StopAt2(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                trainer.should_stop = True

    stopper = EarlyStopping("val/score", patience=10, mode="min", restore_best_weights=True)
    seen = WeightsPerEpoch()
    model, _ = fit([1.0, 0.5, 0.9, 0.8, 0.7], stopper, extra=[seen, StopAt2()])
    assert torch.equal(model.w.detach(), seen.weights[1])


def test_a_resumed_run_stops_at_the_same_epoch_with_the_same_weights(tmp_path: Path) -> None:
    make = lambda: EarlyStopping("val/score", patience=2, mode="min", restore_best_weights=True)  # noqa: E731
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    whole = make()
    reference, _ = fit(SCRIPT, whole, tmp_path=tmp_path / "a", extra=[every_epoch])
    resumed_stopper = make()
    # Epoch 4 (the best so far) is done; resume from its checkpoint in a new trainer.
    resumed, trainer = fit(SCRIPT, resumed_stopper, tmp_path=tmp_path / "b", ckpt_path=tmp_path / "ck" / "epoch=4.ckpt")
    assert resumed_stopper.stopped_epoch == whole.stopped_epoch == 6
    assert resumed_stopper.best_epoch == 4 and trainer.current_epoch == 7
    assert torch.equal(resumed.w.detach(), reference.w.detach())


def test_a_never_logged_metric_is_an_error_listing_the_logged_ones() -> None:
    with pytest.raises(ValueError, match=r"'val/acc', which is not logged\. Logged metrics: val/score"):
        fit(SCRIPT, EarlyStopping("val/acc", mode="max"))


def test_auto_mode_on_an_unknown_direction_asks_for_the_mode() -> None:
    with pytest.raises(ValueError, match="mode='max'"):
        fit(SCRIPT, EarlyStopping("val/score"))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"patience": -1}, "patience"), ({"mode": "up"}, "mode"), ({"start_from_epoch": -2}, "start_from_epoch"),
     ({"min_delta": math.inf}, "min_delta"), ({"baseline": math.nan}, "baseline"), ({"patience": 1.5}, "patience")],
)  # fmt: skip
def test_bad_arguments_name_the_key(kwargs, key) -> None:
    with pytest.raises(ValueError, match=f"early_stopping.{key}"):
        EarlyStopping("val/score", **kwargs)


def test_a_non_finite_metric_stops_and_the_restore_says_so(caplog) -> None:
    stopper = EarlyStopping("val/score", patience=5, mode="min", restore_best_weights=True)
    seen = WeightsPerEpoch()
    with caplog.at_level(logging.WARNING, logger="dlkit.callbacks.early_stopping"):
        model, _ = fit([1.0, 0.5, math.nan, 0.1], stopper, extra=[seen])
    assert stopper.stopped_epoch == 2 and "became nan" in stopper.stop_reason
    assert torch.equal(model.w.detach(), seen.weights[1])
    assert "restored the weights of epoch 1" in caplog.text and "became nan" in caplog.text


def test_the_config_builds_keras_early_stopping(compose_train) -> None:
    from hydra.utils import instantiate

    cfg = compose_train("callbacks.early_stopping.baseline=0.5", "callbacks.early_stopping.start_from_epoch=3")
    stopper = instantiate(cfg.callbacks.early_stopping)
    assert isinstance(stopper, EarlyStopping) and stopper.baseline == 0.5 and stopper.start_from_epoch == 3
