"""TensorBoard's HPARAMS tab, made to compare runs: what was chosen, written when the run starts.

Lightning's ``log_hyperparams(params, metrics)`` writes every flattened config key (42
for dlkit's default run, ``_target_`` and ``_partial_`` among them), only when it is
given final metrics (dlkit used to call it after testing, so a crashed or running job was
missing), and an *experiment* summary per run, which TensorBoard takes as the column list
for every run it shows ("arbitrarily pick the first one", its hparams backend says), with
no column marked as differing. Booleans become numbers on the way (torch's ``hparams``
tests ``int`` before ``bool``).

:class:`HParamsSession` writes instead, on rank zero, one *session start* summary when
the run starts, with :func:`dlkit.run_output.run_hparams`' short list, and a *session end* summary
(success or failure) when it ends. No experiment summary: TensorBoard then builds the
columns from the sessions of all the runs it reads, marks the hparams whose values differ
and sorts those first, so a sweep's swept key (``optimizer.lr``) leads the table. The
metric columns are the run's own scalar curves (``val/acc``, ``val/acc_best``,
``test/acc``...), read at their last value: no ``hp/*`` copies.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L

__all__ = ["HParamsSession", "session_end", "session_start"]

HParam = bool | int | float | str

def _summary(tag: str, **plugin_data: Any) -> Any:
    """A TensorBoard summary holding one hparams plugin message (``session_start_info`` or ``session_end_info``)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = HParamsPluginData(version=0, **plugin_data)
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                      content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def session_start(hparams: dict[str, HParam]) -> Any:
    """The ``_hparams_/session_start_info`` summary of ``hparams`` (booleans stay booleans)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionStartInfo

    info = SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        if isinstance(value, bool):  # before int: True is an int too
            info.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[name].number_value = float(value)
        else:
            info.hparams[name].string_value = str(value)
    return _summary("_hparams_/session_start_info", session_start_info=info)


def session_end(status: str) -> Any:
    """The ``_hparams_/session_end_info`` summary: ``status`` is ``"success"`` or ``"failure"``."""
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo

    info = SessionEndInfo(status=Status.Value(f"STATUS_{status.upper()}"), end_time_secs=time.time())
    return _summary("_hparams_/session_end_info", session_end_info=info)


class HParamsSession(L.Callback):
    """Write the run's hparams to TensorBoard when it starts, and how it ended when each stage ends.

    ``dlkit-train`` adds it to every run with :func:`dlkit.run_output.run_hparams` of its
    config; the other loggers (CSV) get the same short list in their ``hparams.yaml``.
    The end is written after ``fit`` and again after ``test`` (TensorBoard keeps the
    last): ``success``, or ``failure`` once an error went through ``fit``/``test``.

    Args:
        hparams: ``{name: number | bool | str}``, e.g. from :func:`dlkit.run_output.run_hparams`.

    Example:
        >>> session = HParamsSession({"optimizer": "adam", "optimizer.lr": 1e-3})
        >>> trainer = L.Trainer(callbacks=[session], logger=TensorBoardLogger("logs"))
    """

    def __init__(self, hparams: dict[str, HParam]) -> None:
        self.hparams = dict(hparams)
        self.started = False
        self.status: str | None = None

    def _write(self, trainer: L.Trainer, summary: Any) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment._get_file_writer().add_summary(summary)  # as Lightning's log_hyperparams does
                logger.experiment.flush()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.started or not trainer.is_global_zero:
            return
        self.started = True
        for logger in trainer.loggers:
            logger.log_hyperparams(self.hparams)  # hparams.yaml; no events without metrics
        self._write(trainer, session_start(self.hparams))

    def _end(self, trainer: L.Trainer, status: str) -> None:
        if not self.started or not trainer.is_global_zero or self.status == "failure":
            return
        self.status = status
        self._write(trainer, session_end(status))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage in ("fit", "test"):
            self._end(trainer, "success")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._end(trainer, "failure")
