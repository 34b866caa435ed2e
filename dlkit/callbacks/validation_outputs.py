"""A base for callbacks that read a classifier's outputs on the validation batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor

__all__ = ["ValidationOutputs", "class_probabilities"]


def class_probabilities(logits: Tensor) -> Tensor:
    """``(B, C)`` class probabilities from logits: softmax, or sigmoid for one logit.

    Args:
        logits: ``(B, C)`` with ``C >= 2``, or ``(B,)`` / ``(B, 1)`` for a binary
            classifier (then ``C = 2``: probability of class 0, of class 1).

    Example:
        >>> class_probabilities(torch.zeros(2, 1))
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    logits = logits.float()
    if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
        p = torch.sigmoid(logits.reshape(-1))  # (B,)
        return torch.stack([1 - p, p], dim=1)  # (B, 2)
    if logits.ndim != 2:
        raise ValueError(f"expected (B, C) class logits, got shape {tuple(logits.shape)}.")
    return logits.softmax(dim=1)


class ValidationOutputs(L.Callback):
    """Hand each validation batch's inputs, logits and class targets to a subclass.

    On the epochs it is active (see :meth:`active`), the callback hooks the
    LightningModule's ``forward`` and keeps what it returned for the batch, so a task
    that calls ``self(x)`` in ``validation_step`` (dlkit's tasks do) costs no extra
    forward pass. When the module computed its outputs otherwise (no ``forward``
    call, or one on a different batch size), the callback runs ``pl_module(x)``
    itself: one more forward per validation batch, under the validation loop's
    no-grad mode. Only the first validation dataloader is read; a dict output is read
    at its ``"logits"`` key; one-hot or soft targets become class indices, 0/1 float targets integers.

    Subclasses implement :meth:`start`, :meth:`update` and :meth:`finish`.

    Args:
        every_n_epochs: Active on epochs ``N-1, 2N-1, ...`` (0-based, as Lightning's
            ``check_val_every_n_epoch``) and on the last epoch. Defaults to 1.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"{type(self).__name__}.every_n_epochs must be an integer >= 1, got {every_n_epochs!r}.")
        self.every_n_epochs = every_n_epochs
        self._on = False
        self._handle: Any = None
        self._captured: Any = None

    def active(self, trainer: L.Trainer) -> bool:
        """Whether this validation run is read (never during the sanity check)."""
        if trainer.sanity_checking:
            return False
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    # ---------------------------------------------------------------- subclass API
    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A validation run that is read begins."""

    def update(self, trainer: L.Trainer, pl_module: L.LightningModule, x: Tensor, logits: Tensor, y: Tensor) -> None:
        """One batch: inputs ``x``, ``(B, C)`` (or ``(B,)`` binary) logits, ``(B,)`` class targets."""

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The validation run ends; draw and write here."""

    # ------------------------------------------------------------- Lightning hooks
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._on = self.active(trainer)
        if self._on:
            self._handle = pl_module.register_forward_hook(self._keep)
            self.start(trainer, pl_module)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._captured = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._on or dataloader_idx != 0 or not isinstance(batch, (tuple, list)) or len(batch) != 2:
            return
        x, y = batch
        out = self._captured
        self._captured = None
        if isinstance(out, Mapping):
            out = out.get("logits")
        if not isinstance(out, Tensor) or out.shape[:1] != y.shape[:1]:
            try:
                out = pl_module(x)
            except NotImplementedError as err:
                raise TypeError(
                    f"{type(self).__name__} needs the network's outputs: {type(pl_module).__name__} neither "
                    "calls self(x) in validation_step nor defines forward."
                ) from err
            out = out.get("logits") if isinstance(out, Mapping) else out
        if not isinstance(out, Tensor):
            return
        if y.ndim == 2 and y.shape[1] > 1:
            y = y.argmax(dim=1)  # one-hot or soft targets -> (B,)
        y = y.reshape(-1)  # (B, 1) binary targets -> (B,)
        self.update(trainer, pl_module, x, out.detach(), (y.round() if y.is_floating_point() else y).long())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hook()
        if self._on:
            self._on = False
            self.finish(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._remove_hook()

    def _remove_hook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _keep(self, module: Any, args: Any, output: Any) -> None:
        self._captured = output
