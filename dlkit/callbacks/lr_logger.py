"""Log the learning rate of every parameter group, and momentum where a schedule cycles it."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from torch.optim import Optimizer

__all__ = ["LearningRateLogger"]

Interval = Literal["auto", "step", "epoch"]


class LearningRateLogger(L.Callback):
    """Log ``train/lr`` (and ``train/lr_group<N>``, ``train/momentum``) when the rate can change.

    The value logged is the one the coming updates use: with a scheduler stepped every
    optimiser step (Lightning's ``interval="step"``) it is logged before every training
    step; otherwise once, at the start of every training epoch. Unlike Lightning's
    ``LearningRateMonitor`` it logs through ``pl_module.log``, so runs without a logger
    have it in ``trainer.callback_metrics`` and the :class:`~dlkit.callbacks.History` too.

    Names: ``train/lr`` is the first parameter group of the first optimiser;
    ``train/lr_group<N>`` the group ``N >= 1`` when there are several (discriminative
    rates, a fine-tuned backbone); a second optimiser's are ``train/lr_opt<K>`` and
    ``train/lr_opt<K>_group<N>``. Momentum (``momentum``, or Adam's ``betas[0]``) is
    logged the same way as ``train/momentum...`` when a scheduler cycles it (``one_cycle``,
    ``CyclicLR``: their ``cycle_momentum``).

    Args:
        logging_interval: ``"step"``, ``"epoch"`` or ``"auto"`` (step when any scheduler
            steps per step, else epoch). Defaults to ``"auto"``.
        log_momentum: Log momentum: None logs it when a scheduler cycles it. Defaults
            to None.
        prog_bar: Show ``train/lr`` in the progress bar. Defaults to False.

    Example:
        >>> logger = LearningRateLogger()
        >>> clf.fit(data, epochs=5, callbacks=[logger])  # doctest: +SKIP
        >>> trainer.callback_metrics["train/lr"]  # doctest: +SKIP
    """

    def __init__(
        self, logging_interval: Interval = "auto", log_momentum: bool | None = None, prog_bar: bool = False
    ) -> None:
        if logging_interval not in ("auto", "step", "epoch"):
            raise ValueError(
                f"LearningRateLogger.logging_interval must be 'auto', 'step' or 'epoch', got {logging_interval!r}."
            )
        self.logging_interval, self.log_momentum, self.prog_bar = logging_interval, log_momentum, prog_bar
        self._per_step = False
        self._momentum = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._logged_epoch: int | None = None
        configs = trainer.lr_scheduler_configs
        if self.logging_interval == "auto":
            self._per_step = any(c.interval == "step" for c in configs)
        else:
            self._per_step = self.logging_interval == "step"
        cycles = any(getattr(c.scheduler, "cycle_momentum", False) for c in configs)
        self._momentum = cycles if self.log_momentum is None else self.log_momentum

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._per_step:
            self._log(trainer, pl_module, on_step=True)
        elif self._logged_epoch != trainer.current_epoch:
            # At the epoch's first batch, not in on_train_epoch_start: a run resumed
            # mid-epoch does not start the epoch again but still logs its rate.
            self._log(trainer, pl_module, on_step=False)
            self._logged_epoch = trainer.current_epoch

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, on_step: bool) -> None:
        values = learning_rates(trainer.optimizers, momentum=self._momentum)
        for name, value in values.items():
            pl_module.log(
                name, value, on_step=on_step, on_epoch=not on_step, prog_bar=self.prog_bar and name == "train/lr"
            )


def learning_rates(optimizers: list[Optimizer], momentum: bool = False) -> dict[str, float]:
    """``{"train/lr": ..., "train/lr_group1": ..., "train/momentum": ...}`` of the optimisers' groups.

    Args:
        optimizers: The trainer's optimisers.
        momentum: Also give each group's momentum (``betas[0]`` for Adam-like ones);
            groups without either are left out.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
        >>> opt = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.01},
        ...                        {"params": net[1].parameters()}], lr=0.1, momentum=0.9)
        >>> learning_rates([opt], momentum=True)
        {'train/lr': 0.01, 'train/momentum': 0.9, 'train/lr_group1': 0.1, 'train/momentum_group1': 0.9}
    """
    values: dict[str, float] = {}
    for k, optimizer in enumerate(optimizers):
        for n, group in enumerate(optimizer.param_groups):
            suffix = (f"_opt{k}" if k else "") + (f"_group{n}" if n else "")
            values[f"train/lr{suffix}"] = float(group["lr"])
            if momentum:
                value = group["betas"][0] if "betas" in group else group.get("momentum")
                if value is not None:
                    values[f"train/momentum{suffix}"] = float(value)
    return values
