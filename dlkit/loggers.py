"""Lightning's loggers with what dlkit's TensorBoard view needs: the curves first.

Lightning adds an ``epoch`` scalar to every batch of metrics it logs (so CSV rows say
which epoch they belong to). In TensorBoard that is one more chart, first in the
alphabetical order, of a straight staircase. :class:`TensorBoardLogger` leaves it out of
the event files; the CSV logger keeps it.

The x-axis of every chart is the optimiser step (Lightning's ``global_step`` of the
moment); epoch-level values (``train/*`` means, ``val/*``) sit at the step where their
epoch ended, so training and validation curves share one axis. TensorBoard's
"Relative" and "Wall" axes show time instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` without the ``epoch`` staircase chart.

    Args:
        *args: Lightning's arguments (``save_dir``, ``name``, ``version``...).
        **kwargs: Lightning's keyword arguments.

    Example:
        >>> logger = TensorBoardLogger("logs", name="tensorboard", version="")
        >>> trainer = L.Trainer(logger=logger)  # doctest: +SKIP
    """

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)
