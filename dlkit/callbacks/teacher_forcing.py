"""Scheduled sampling: lower the teacher-forcing ratio of a seq2seq task epoch by epoch."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L

__all__ = ["TeacherForcingSchedule"]

_KINDS = ("linear", "exponential", "inverse_sigmoid")


class TeacherForcingSchedule(L.Callback):
    """Move ``task.teacher_forcing`` from ``start`` to ``end`` over the epochs (scheduled sampling).

    A decoder trained only on reference prefixes never sees its own mistakes; feeding
    it its own predictions more and more often (Bengio et al., 2015) closes that gap
    between training and decoding. The ratio is set at the start of every training
    epoch and logged as ``train/teacher_forcing``.

    Args:
        start: Ratio of the first epoch. Defaults to 1.0.
        end: Ratio reached after ``num_epochs`` epochs and kept afterwards.
            Defaults to 0.5.
        num_epochs: Epochs the change takes. Defaults to ``trainer.max_epochs - 1``,
            so the last epoch trains with ``end``.
        kind: Shape of the curve from ``start`` to ``end`` with progress
            ``p = min(1, epoch / num_epochs)``: ``"linear"`` moves evenly;
            ``"exponential"`` moves geometrically (quick at first); ``"inverse_sigmoid"``
            stays near ``start``, then moves through a logistic step centred on the
            middle of the schedule (Bengio et al.'s shape). Defaults to ``"linear"``.

    Example:
        >>> task.fit(dm, epochs=20, callbacks=[TeacherForcingSchedule(1.0, 0.5)])
    """

    def __init__(
        self,
        start: float = 1.0,
        end: float = 0.5,
        num_epochs: int | None = None,
        kind: Literal["linear", "exponential", "inverse_sigmoid"] = "linear",
    ) -> None:
        for name, value in (("start", start), ("end", end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TeacherForcingSchedule.{name} must lie in [0, 1], got {value}.")
        if num_epochs is not None and (isinstance(num_epochs, bool) or num_epochs < 1):
            raise ValueError(f"TeacherForcingSchedule.num_epochs must be >= 1 or None, got {num_epochs!r}.")
        if kind not in _KINDS:
            raise ValueError(f"TeacherForcingSchedule.kind must be one of {', '.join(_KINDS)}, got {kind!r}.")
        if kind == "exponential" and min(start, end) == 0.0 and start != end:
            raise ValueError("An exponential schedule cannot reach or leave 0; use kind='linear' or end > 0.")
        self.start, self.end, self.num_epochs, self.kind = float(start), float(end), num_epochs, kind

    def ratio(self, epoch: int, num_epochs: int) -> float:
        """The ratio of (0-based) ``epoch`` for a schedule spanning ``num_epochs`` epochs.

        Example:
            >>> TeacherForcingSchedule(1.0, 0.5).ratio(5, 10)
            0.75
        """
        p = min(1.0, epoch / max(1, num_epochs))
        if self.kind == "linear" or self.start == self.end:
            return self.start + (self.end - self.start) * p
        if self.kind == "exponential":
            return self.start * (self.end / self.start) ** p
        # The logistic step rescaled to weigh 1 at p=0 and 0 at p=1.
        w = (_logistic_step(p) - _logistic_step(1.0)) / (_logistic_step(0.0) - _logistic_step(1.0))
        return self.end + (self.start - self.end) * w

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "teacher_forcing"):
            raise TypeError(
                f"TeacherForcingSchedule drives a task's `teacher_forcing` ratio (dlkit.tasks.Seq2Seq); "
                f"{type(pl_module).__name__} has none."
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        span = self.num_epochs or max(1, (trainer.max_epochs or 1) - 1)
        value = self.ratio(trainer.current_epoch, span)
        pl_module.teacher_forcing = value  # type: ignore[assignment]
        pl_module.log("train/teacher_forcing", value, on_step=False, on_epoch=True)


def _logistic_step(p: float, steepness: float = 10.0) -> float:
    """Falls from ~1 to ~0 as ``p`` goes from 0 to 1, steepest at 0.5."""
    return 1.0 / (1.0 + math.exp(steepness * (p - 0.5)))
