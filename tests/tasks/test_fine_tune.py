"""Task.fine_tune: fastai's recipe (head only, then everything with discriminative rates)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dlkit import Classifier, create_model
from dlkit.callbacks import LearningRateLogger

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    images = torch.from_numpy((x / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
    return torch.nn.functional.interpolate(images, size=32, mode="bilinear").numpy(), y


class Seen(L.Callback):
    """What trains in each phase, and at which rates."""

    def __init__(self) -> None:
        self.phases: list[dict] = []

    def on_train_start(self, trainer, module) -> None:
        opt = trainer.optimizers[0]
        self.phases.append({"trainable": module.net.trainable_groups(),
                            "peaks": [g.get("max_lr", g["lr"]) for g in opt.param_groups],
                            "schedulers": [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs]})


def test_fine_tune_trains_the_head_then_everything_with_spread_rates(digits) -> None:
    x, y = digits
    L.seed_everything(0, verbose=False)
    net = create_model("lenet5")
    stem = net.group_parameters()[0][1][0].detach().clone()
    clf = Classifier(net).compile(optimizer="adam", metrics=["accuracy"])
    seen = Seen()
    history = clf.fine_tune((x, y), epochs=2, freeze_epochs=1, base_lr=2e-2, callbacks=[seen],
                            validation_split=0.2, batch_size=64, verbose=False)
    assert history.epoch == [0, 1, 2] and len(history.history["val/acc"]) == 3
    first, second = seen.phases
    assert first["trainable"] == ["head"] and second["trainable"] == net.group_names()
    assert first["schedulers"] == second["schedulers"] == ["OneCycleLR"]
    assert math.isclose(first["peaks"][-1], 2e-2) and math.isclose(first["peaks"][0], 2e-3)
    assert math.isclose(second["peaks"][-1], 1e-2) and math.isclose(second["peaks"][0], 1e-4)
    assert not torch.equal(net.group_parameters()[0][1][0], stem)  # unfrozen in the second phase
    assert clf.scheduler_factory is None and clf.lr_spread is None  # the task's own settings are back
    assert history.history["val/acc"][-1] > 0.5


def test_fine_tune_refuses_a_network_without_groups_and_bad_arguments(digits) -> None:
    x, y = digits
    with pytest.raises(TypeError, match="needs a network with layer groups"):
        Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))).fine_tune((x, y), epochs=1)
    clf = Classifier(create_model("lenet5"))
    with pytest.raises(ValueError, match=r"fine_tune\(epochs=\) must be an integer >= 1, got 0"):
        clf.fine_tune((x, y), epochs=0)
    with pytest.raises(ValueError, match=r"fine_tune\(base_lr=\) must be a number > 0, got -1"):
        clf.fine_tune((x, y), epochs=1, base_lr=-1)
