"""EpochLog: one line per epoch with its metrics, in the captured log and in a run's log file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlkit.callbacks import EpochLog
from dlkit.callbacks.epoch_log import format_epoch_line
from dlkit.train import train
from tests.conftest import FAST

SHORT = ("trainer.max_epochs=3", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false")
LINE = re.compile(r"^epoch (\d+)/2  train/loss \S+  train/acc \S+  val/loss \S+  val/acc \S+  val/acc_best \S+"
                  r"  lr \S+  \d+\.\d s$")


def epoch_lines(text: str) -> list[str]:
    return [line.partition(" - ")[2] or line for line in text.splitlines() if re.search(r"(^| - )epoch \d", line)]


def test_the_line_names_every_field(docstring_examples) -> None:
    line = format_epoch_line(4, 9, {"val/loss": float("nan")}, [0.1], 12.34)
    assert line == "epoch 4/9  val/loss nan  lr 1.0e-01  12.3 s"
    assert format_epoch_line(0, None, {}, [], None) == "epoch 0"
    docstring_examples(format_epoch_line)
    with pytest.raises(ValueError, match="digits"):
        EpochLog(digits=0)


def test_a_run_logs_one_line_per_epoch_to_the_console_log_and_the_run_log_file(
    compose_train, tmp_path: Path, caplog
) -> None:
    cfg = compose_train(*SHORT, *FAST)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Hydra's job logging: the root logger writes <run>/train.log.
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO):
            train(cfg)
    finally:
        root.removeHandler(handler)
        handler.close()
    records = [r for r in caplog.records if r.name == "dlkit.callbacks.epoch_log"]
    assert [LINE.match(r.getMessage()).group(1) for r in records] == ["0", "1", "2"]  # type: ignore[union-attr]
    assert epoch_lines((run_dir / "train.log").read_text()) == [r.getMessage() for r in records]


class Plain(L.LightningModule):
    """A linear model without validation: the line shows the training metrics only."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.lin(x).pow(2).mean()
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD([{"params": self.lin.weight, "lr": 0.1}, {"params": self.lin.bias, "lr": 0.01}])


def test_without_validation_the_line_holds_the_training_epoch(caplog) -> None:
    loader = DataLoader(TensorDataset(torch.ones(4, 2)), batch_size=2)
    trainer = L.Trainer(max_epochs=2, callbacks=[EpochLog()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with caplog.at_level(logging.INFO, logger="dlkit.callbacks.epoch_log"):
        trainer.fit(Plain(), loader)
    lines = [r.getMessage() for r in caplog.records if r.name == "dlkit.callbacks.epoch_log"]
    assert len(lines) == 2 and all("val/" not in line for line in lines)
    assert re.fullmatch(r"epoch 1/1  train/loss \S+  lr 1\.0e-02\.\.1\.0e-01  \d+\.\d s", lines[1])
