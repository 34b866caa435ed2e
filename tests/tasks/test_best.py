"""``val/<name>_best``: the best validation value so far, kept across a resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dlkit import Classifier, create_model
from dlkit.data.tensor import arrays_to_datamodule
from dlkit.tasks.best import BestValueLogging

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}


class _WreckFromEpoch(L.Callback):
    """Zeroes the network before validating epochs >= ``epoch``: their accuracy falls to chance."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch and not trainer.sanity_checking:
            with torch.no_grad():
                for p in module.parameters():
                    p.zero_()


def _task_and_data() -> tuple[Classifier, L.LightningDataModule]:
    x, y = load_digits(return_X_y=True)
    dm = arrays_to_datamodule((x / 16.0).astype(np.float32), y, batch_size=64, validation_split=0.2)
    net = create_model("mlp", in_features=64, hidden_sizes=(32,), num_classes=10)
    return Classifier(net).compile(optimizer="adam", lr=3e-3, metrics=["accuracy"]), dm


def test_a_resumed_run_keeps_the_best_value_of_the_epochs_before_the_kill(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    task, dm = _task_and_data()
    first = L.Trainer(max_epochs=2, **QUIET)
    first.fit(task, datamodule=dm)
    best_before = float(first.callback_metrics["val/acc"])
    assert best_before > 0.5 and float(first.callback_metrics["val/acc_best"]) == best_before
    ckpt = tmp_path / "epoch1.ckpt"
    first.save_checkpoint(ckpt)

    resumed_task, dm = _task_and_data()
    resumed = L.Trainer(max_epochs=3, callbacks=[_WreckFromEpoch(2)], **QUIET)
    resumed.fit(resumed_task, datamodule=dm, ckpt_path=ckpt)
    assert float(resumed.callback_metrics["val/acc"]) < 0.2  # the wrecked epoch after the resume
    assert float(resumed.callback_metrics["val/acc_best"]) == best_before


def test_the_sanity_check_is_not_counted() -> None:
    L.seed_everything(0, verbose=False)
    task, dm = _task_and_data()
    trainer = L.Trainer(max_epochs=1, num_sanity_val_steps=2, callbacks=[_WreckFromEpoch(0)], **QUIET)
    trainer.fit(task, datamodule=dm)
    # The untrained network validated by the sanity check may beat the wrecked epoch 0.
    assert float(trainer.callback_metrics["val/acc_best"]) == float(trainer.callback_metrics["val/acc"])


def test_best_values_are_plain_tensors_in_the_checkpoint(tmp_path: Path) -> None:
    task, dm = _task_and_data()
    trainer = L.Trainer(max_epochs=1, **QUIET)
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    stored = torch.load(tmp_path / "a.ckpt", weights_only=True)[BestValueLogging.BEST_STATE_KEY]
    assert set(stored) == {"acc"} and stored["acc"].ndim == 0


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(BestValueLogging)
