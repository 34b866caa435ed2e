"""History across checkpoints: a resumed fit continues it, testing a checkpoint leaves it alone."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from dlkit import Classifier, create_model
from dlkit.callbacks import History
from dlkit.data import DigitsDataModule

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(history: History, epochs: int, tmp_path: Path, ckpt_path: str | None = None) -> L.Trainer:
    dm = DigitsDataModule(batch_size=256)
    L.seed_everything(0, verbose=False)
    task = Classifier(create_model("mlp", in_features=64, hidden_sizes=(16,), num_classes=10)).compile(lr=1e-2)
    every = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[history, every], logger=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
    trainer.datamodule_for_test = dm
    return trainer


def test_testing_an_earlier_checkpoint_keeps_the_whole_history(tmp_path: Path) -> None:
    history = History()
    trainer = _fit(history, 3, tmp_path)
    assert history.epoch == [0, 1, 2]
    trainer.test(ckpt_path=str(tmp_path / "epoch=0.ckpt"), datamodule=trainer.datamodule_for_test, verbose=False)
    assert history.epoch == [0, 1, 2]  # not cut back to the checkpoint's single epoch


def test_a_resumed_fit_continues_the_history(tmp_path: Path) -> None:
    _fit(History(), 2, tmp_path)
    resumed = History()
    _fit(resumed, 3, tmp_path, ckpt_path=str(tmp_path / "epoch=1.ckpt"))
    assert resumed.epoch == [0, 1, 2]
    assert all(len(v) == 3 for v in resumed.history.values())
