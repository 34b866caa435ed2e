"""What a dlkit-train run prints and leaves in train.log: a quiet start, a stop that says why, a failure
after its epoch lines."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlkit.callbacks import EarlyStopping
from dlkit.run_output import route_lightning_logs
from dlkit.train import train
from tests.conftest import FAST

SHORT = ("+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false", *FAST)
RANK_ZERO = "lightning.pytorch.utilities.rank_zero"


class RaiseAtEpoch(L.Callback):
    """Fails the run when the given epoch starts (built by _target_ from the test's config)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"boom at epoch {self.epoch}")


def run_with_log_file(cfg, caplog) -> Path:
    """Train ``cfg`` with the root logger writing <run>/train.log, as Hydra's job logging does."""
    log_file = Path(cfg.paths.output_dir) / "train.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.INFO):
            train(cfg)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return log_file


def test_a_run_starts_without_tips_or_absent_accelerators(compose_train, caplog, capsys) -> None:
    with caplog.at_level(logging.INFO):
        train(compose_train("trainer.max_epochs=1", *SHORT))
    printed = caplog.text + "".join(capsys.readouterr())
    assert "`Trainer.fit` stopped" in caplog.text  # Lightning's own lines do come through
    for noise in ("Tip:", "litlogger", "GPU available: False", "TPU available", "Trainer already configured"):
        assert noise not in printed


def test_the_filter_keeps_a_gpu_that_exists(caplog) -> None:
    route_lightning_logs()
    with caplog.at_level(logging.INFO, logger=RANK_ZERO):
        for message in ("GPU available: True (cuda), used: True", "GPU available: False, used: False",
                        "TPU available: False, using: 0 TPU cores", "💡 Tip: try litmodels"):
            logging.getLogger(RANK_ZERO).info(message)
    assert [r.getMessage() for r in caplog.records] == ["GPU available: True (cuda), used: True"]


def test_the_console_handler_follows_sys_stdout(monkeypatch) -> None:
    # A live progress bar swaps sys.stdout for a proxy that prints above it.
    handler = logging.StreamHandler(sys.stdout)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        route_lightning_logs()
        swapped = io.StringIO()
        monkeypatch.setattr(sys, "stdout", swapped)
        logging.getLogger("dlkit.test").warning("above the bar")
    finally:
        root.removeHandler(handler)
    assert swapped.getvalue() == "above the bar\n"


def test_a_failed_run_keeps_its_epoch_lines_then_the_traceback(compose_train, caplog) -> None:
    cfg = compose_train("trainer.max_epochs=4", *SHORT, f"+callbacks.boom._target_={__name__}.RaiseAtEpoch",
                        "+callbacks.boom.epoch=2")
    with pytest.raises(RuntimeError, match="boom at epoch 2"):
        run_with_log_file(cfg, caplog)
    text = (Path(cfg.paths.output_dir) / "train.log").read_text()
    epochs = [i for i, line in enumerate(text.splitlines()) if " - epoch " in line]
    failed = text.splitlines().index(next(line for line in text.splitlines() if "Run failed: RuntimeError" in line))
    assert len(epochs) == 2 and max(epochs) < failed
    assert "Traceback (most recent call last)" in text and "boom at epoch 2" in text
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["status"] == "failed"


def test_early_stopping_logs_one_line_with_the_best_and_restored_epoch(compose_train, caplog) -> None:
    cfg = compose_train("trainer.max_epochs=5", *SHORT, "callbacks.early_stopping.patience=0",
                        "callbacks.early_stopping.min_delta=1e9", "callbacks.early_stopping.restore_best_weights=true")
    text = run_with_log_file(cfg, caplog).read_text()
    lines = [r.getMessage() for r in caplog.records if r.name == "dlkit.callbacks.early_stopping"]
    assert len(lines) == 1
    line = lines[0]
    # Epoch 0 sets the best; no later epoch can beat it by 1e9, so epoch 1 stops with patience 0.
    assert line.startswith("EarlyStopping: stopped after epoch 1 (")
    assert f"best {cfg.task.monitor}=" in line and "at epoch 0" in line
    assert line.endswith("restored the weights of epoch 0.")
    assert line in text and sum(" - epoch " in t for t in text.splitlines()) == 2


class Scripted(L.LightningModule):
    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))
        self.values = values

    def training_step(self, batch, batch_idx):
        return (batch[0] @ self.w).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.values[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_stop_line_says_when_the_last_weights_are_kept(caplog) -> None:
    loader = DataLoader(TensorDataset(torch.ones(2, 2)), batch_size=2)
    trainer = L.Trainer(max_epochs=6, callbacks=[EarlyStopping(patience=2)], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with caplog.at_level(logging.INFO, logger="dlkit.callbacks.early_stopping"):
        trainer.fit(Scripted([1.0, 0.5, 0.7, 0.6, 0.4, 0.3]), loader, loader)
    expected = ("EarlyStopping: stopped after epoch 3 (val/loss did not improve for 2 epochs); "
                "best val/loss=0.5 at epoch 1; kept the weights of epoch 3 (restore_best_weights=False).")
    assert [r.getMessage() for r in caplog.records] == [expected]
