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

    On the CPU the loss is read before every backward pass, which costs nothing. On an
    accelerator that read would make the host wait for the device at every step, so the
    check there stays on the device (a flag or-ed step by step) and is read every
    ``trainer.log_every_n_steps`` steps, before every validation and at the end of each
    epoch: the run still stops, naming the window of steps, but the steps inside the
    window have been taken.

    Args:
        monitor: Logged metrics checked after every validation run (sanity check included).
            Defaults to ``("val/loss",)``.
        check_every_n_steps: Read the loss check back every this many steps; None for
            every step on the CPU and ``trainer.log_every_n_steps`` on an accelerator.
            Defaults to None.

    Raises:
        ValueError: If ``check_every_n_steps`` is not a positive integer.

    Example:
        >>> trainer = L.Trainer(callbacks=[TerminateOnNaN()])
    """

    def __init__(self, monitor: Sequence[str] = ("val/loss",), check_every_n_steps: int | None = None) -> None:
        # type() rather than isinstance: True is an int too.
        if check_every_n_steps is not None and (type(check_every_n_steps) is not int or check_every_n_steps < 1):
            raise ValueError(f"TerminateOnNaN.check_every_n_steps must be a positive integer or None, got "
                             f"{check_every_n_steps!r}.")  # fmt: skip
        self.monitor = tuple(monitor)
        self.check_every_n_steps = check_every_n_steps
        self._batch: Any = None
        self._batch_idx = -1
        # Deferred check (accelerators): a device flag "some loss since window_start was non-finite".
        self._pending: Tensor | None = None
        self._window_start = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch = None

    def every_n_steps(self, trainer: L.Trainer, loss: Tensor) -> int:
        """How many steps apart the loss check is read back (1: before every backward pass)."""
        if self.check_every_n_steps is not None:
            return self.check_every_n_steps
        return 1 if loss.device.type == "cpu" else max(int(trainer.log_every_n_steps), 1)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        every = self.every_n_steps(trainer, loss)
        if every > 1:
            bad = ~torch.isfinite(loss.detach()).all()
            if self._pending is None:
                self._pending, self._window_start = bad, trainer.global_step
            else:
                self._pending = self._pending | bad
            if (trainer.global_step + 1) % every == 0:
                self._read_pending(trainer, f"checked every {every} steps")
            return
        if bool(torch.isfinite(loss).all()):
            return
        value = loss.detach().float().flatten()[0].item()
        raise NonFiniteLossError(
            f"train/loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{self._batch_idx}); stopped before the backward pass, so the weights are those of the step "
            f"before. {self._cause(trainer)}"
        )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._read_pending(trainer, "checked before validation")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read_pending(trainer, "checked at the end of the epoch")

    def _read_pending(self, trainer: L.Trainer, when: str) -> None:
        pending, self._pending = self._pending, None
        if pending is None or not bool(pending):
            return
        raise NonFiniteLossError(
            f"train/loss was NaN or infinite at a step between {self._window_start} and {trainer.global_step} "
            f"(epoch {trainer.current_epoch}; {when}, so that the device is not waited for at every step: "
            f"those steps were taken). TerminateOnNaN(check_every_n_steps=1) stops before the backward pass "
            "of the first bad step. If the data hold NaN/inf, clean them; otherwise training diverged: lower "
            "optimizer.lr, clip gradients (trainer.gradient_clip_val=1.0), or check the loss."
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
