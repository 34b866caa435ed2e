"""Stop a run with an error at the first NaN or infinite loss (Keras' ``TerminateOnNaN``, raising).

Keras stops training quietly; here the run ends with a :class:`NonFiniteLossError` that
names the step, so the command exits non-zero and the run is marked failed. The training
loss is checked before its backward pass, so the failing step never updates the weights
and no checkpoint of NaN weights is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from dlkit.data.checks import first_non_finite
from dlkit.run_output import NonFiniteLossError, check_finite_metrics

__all__ = ["NonFiniteLossError", "TerminateOnNaN"]


def _batch_parts(batch: Any) -> list[tuple[str, Tensor]]:
    if isinstance(batch, Tensor):
        return [("inputs", batch)]
    if isinstance(batch, Mapping):
        return [(f"batch[{k!r}]", v) for k, v in batch.items() if isinstance(v, Tensor)]
    if isinstance(batch, Sequence):
        names = ("inputs", "targets")
        return [(names[i] if i < 2 else f"batch[{i}]", v) for i, v in enumerate(batch) if isinstance(v, Tensor)]
    return []


class TerminateOnNaN(L.Callback):
    """Raise :class:`NonFiniteLossError` at the first non-finite training loss or monitored metric.

    ``Classifier.fit`` and ``dlkit-train`` add one to every run that has none. The message
    names the global step, the epoch and the batch, and says whether the batch itself held
    NaN/inf (then the data are at fault) or not (then training diverged).

    Args:
        monitor: Logged metrics checked after every validation run (sanity check included).
            Defaults to ``("val/loss",)``.

    Example:
        >>> trainer = L.Trainer(callbacks=[TerminateOnNaN()])
    """

    def __init__(self, monitor: Sequence[str] = ("val/loss",)) -> None:
        self.monitor = tuple(monitor)
        self._batch: Any = None
        self._batch_idx = -1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if bool(torch.isfinite(loss).all()):
            return
        value = loss.detach().float().flatten()[0].item()
        raise NonFiniteLossError(
            f"train/loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{self._batch_idx}); stopped before the backward pass, so the weights are those of the step "
            f"before. {self._cause(trainer)}"
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stage = "the sanity check" if trainer.sanity_checking else "validation"
        check_finite_metrics(
            trainer.callback_metrics, self.monitor,
            f"after {stage} at epoch {trainer.current_epoch} (step {trainer.global_step})",
        )  # fmt: skip

    def _cause(self, trainer: L.Trainer) -> str:
        for name, t in _batch_parts(self._batch):
            i = first_non_finite(t)
            if i is not None:
                return (f"The batch's {name} hold NaN/inf at sample {i} of the batch: clean the data "
                        "(drop or impute those samples).")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        now = f" (now {lr:g})" if isinstance(lr, (int, float)) else ""
        return (f"The batch is finite, so training diverged: lower optimizer.lr{now}, clip gradients "
                "(trainer.gradient_clip_val=1.0), or check the loss.")
