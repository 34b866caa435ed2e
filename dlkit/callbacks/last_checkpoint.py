"""LastCheckpoint: ``last.ckpt`` is always the latest state, every epoch and every N steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

__all__ = ["LastCheckpoint"]


class LastCheckpoint(Checkpoint):
    """Write ``<dirpath>/last.ckpt`` after every epoch and every ``every_n_steps`` training steps.

    Lightning's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when it
    also saves a top-k checkpoint, so with a monitored metric a finished run's
    ``last.ckpt`` can be an early epoch. This callback writes it unconditionally, at
    the points a run can resume from bit for bit:

    - at the end of every epoch (``on_train_epoch_end``, after its validation and
      scheduler step; Lightning resumes it at the next epoch's start), and when
      training ends;
    - right after a training step (``on_train_batch_end``) every ``every_n_steps``
      steps, except an epoch's last step, which the epoch's end follows: Lightning
      would resume a checkpoint taken there as a finished epoch and skip its validation.

    The file is written through the trainer, so with dlkit's ``AtomicCheckpointIO``
    plugin it is replaced atomically: a crash during the write leaves the previous one.

    Args:
        dirpath: The checkpoint folder (``<run>/checkpoints``).
        every_n_steps: Training steps between periodic checkpoints, or None for
            epoch ends only. Defaults to None.
        filename: The file name. Defaults to ``"last.ckpt"``.

    Example:
        >>> trainer = L.Trainer(callbacks=[LastCheckpoint("run/checkpoints", every_n_steps=500)])
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None, filename: str = "last.ckpt") -> None:
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int)
                                          or every_n_steps < 1):
            raise ValueError(f"checkpoint.every_n_steps must be an integer >= 1 or null, got {every_n_steps!r}.")
        self.path = Path(dirpath) / filename
        self.every_n_steps = every_n_steps
        # (global step, epoch) of the state last written, so a resumed run does not
        # write the state it has just restored again.
        self._saved: tuple[int, int, str] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(path=str(self.path))

    def state_dict(self) -> dict[str, Any]:
        return {"saved": list(self._saved) if self._saved else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("saved")
        self._saved = (int(saved[0]), int(saved[1]), str(saved[2])) if saved else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # An epoch's last batch is left to the epoch's end (see the class docstring).
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not trainer.is_last_batch:
            self._save(trainer, "step")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "epoch")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "end")

    def _save(self, trainer: L.Trainer, when: str) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == 0:
            return
        position = (trainer.global_step, trainer.current_epoch, when)
        if position == self._saved:
            return
        # Recorded first: the written file then knows it holds this position.
        self._saved = position
        trainer.save_checkpoint(self.path, weights_only=False)
