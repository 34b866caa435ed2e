"""LearningRateLogger: every group's rate (and cycled momentum), per step or per epoch as the schedule moves."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import dlkit.callbacks.lr_logger
from dlkit.callbacks import History, LearningRateLogger
from dlkit.config import instantiate_node
from dlkit.schedulers import one_cycle

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS, PER_EPOCH = 3, 4


class TwoGroups(L.LightningModule):
    """A linear model whose two layers have their own rates; the schedule is chosen per test."""

    def __init__(self, scheduler: str | None, interval: str = "step") -> None:
        super().__init__()
        self.body, self.head = nn.Linear(3, 3), nn.Linear(3, 1)
        self.scheduler, self.interval = scheduler, interval

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.head(self.body(x)).squeeze(1), y)

    def configure_optimizers(self):
        groups = [{"params": self.body.parameters(), "lr": 0.01}, {"params": self.head.parameters()}]
        opt = torch.optim.Adam(groups, lr=0.1)
        if self.scheduler is None:
            return opt
        if self.scheduler == "one_cycle":
            sched = one_cycle(opt, total_steps=EPOCHS * PER_EPOCH if self.interval == "step" else EPOCHS + 1)
        else:
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.interval}}


class Seen(L.Callback):
    """The optimiser's values before each step and the logged ones after it."""

    def __init__(self) -> None:
        self.before: list[dict[str, float]] = []
        self.logged: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        g0, g1 = trainer.optimizers[0].param_groups
        self.before.append({"lr": g0["lr"], "lr1": g1["lr"], "beta1": g0["betas"][0]})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.logged.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def _fit(module: L.LightningModule, *callbacks: L.Callback) -> L.Trainer:
    x = torch.randn(PER_EPOCH * 4, 3, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, x.sum(1)), batch_size=4)
    trainer = L.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=list(callbacks))  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def test_a_per_step_schedule_is_logged_every_step_with_every_group_and_momentum() -> None:
    seen, history = Seen(), History()
    _fit(TwoGroups("one_cycle"), LearningRateLogger(), seen, history)
    assert len(seen.logged) == EPOCHS * PER_EPOCH
    for before, logged in zip(seen.before, seen.logged):
        assert logged["train/lr"] == pytest.approx(before["lr"])
        assert logged["train/lr_group1"] == pytest.approx(before["lr1"]) == pytest.approx(10 * before["lr"])
        assert logged["train/momentum"] == pytest.approx(before["beta1"])
    assert len({round(s["lr"], 9) for s in seen.before}) == EPOCHS * PER_EPOCH  # it did move every step
    assert {"train/lr", "train/lr_group1", "train/momentum", "train/momentum_group1"} <= history.history.keys()


def test_a_per_epoch_schedule_is_logged_once_an_epoch_without_momentum() -> None:
    seen, history = Seen(), History()
    _fit(TwoGroups("exponential", interval="epoch"), LearningRateLogger(), seen, history)
    np.testing.assert_allclose(history.history["train/lr"], [0.01, 0.005, 0.0025])
    np.testing.assert_allclose(history.history["train/lr_group1"], [0.1, 0.05, 0.025])
    assert "train/momentum" not in history.history  # ExponentialLR does not cycle it
    assert "train/lr" not in seen.logged[0]  # an epoch value: in callback_metrics once the epoch ends


def test_without_a_scheduler_the_rate_is_logged_per_epoch() -> None:
    history = History()
    _fit(TwoGroups(None), LearningRateLogger(), history)
    assert history.history["train/lr"] == pytest.approx([0.01] * EPOCHS)
    assert history.history["train/lr_group1"] == pytest.approx([0.1] * EPOCHS)


def test_momentum_and_interval_can_be_forced() -> None:
    seen = Seen()
    forced = LearningRateLogger(logging_interval="step", log_momentum=True)
    _fit(TwoGroups("exponential", interval="epoch"), forced, seen)
    assert all(logged["train/momentum"] == pytest.approx(0.9) for logged in seen.logged)
    with pytest.raises(ValueError, match=r"LearningRateLogger.logging_interval must be 'auto', 'step' or 'epoch'"):
        LearningRateLogger(logging_interval="batch")


def test_it_is_in_the_default_callbacks(compose_train) -> None:
    cfg = compose_train()
    assert isinstance(instantiate_node(cfg.callbacks.lr_logger, "callbacks.lr_logger"), LearningRateLogger)


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(dlkit.callbacks.lr_logger.learning_rates)
