"""dlkit.loggers.TensorBoardLogger: the curves without Lightning's ``epoch`` chart."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dlkit.loggers import TensorBoardLogger


def test_the_epoch_series_stays_out_of_the_event_files(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    logger.log_metrics({"train/loss": 0.5, "epoch": 0}, step=10)
    logger.log_metrics({"val/acc": 0.9, "epoch": 0}, step=10)
    logger.finalize("success")
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["train/loss", "val/acc"]
    assert acc.Scalars("val/acc")[0].step == 10
