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

    Names: a dlkit task's optimiser has one group per layer group of its network (see
    :mod:`dlkit.tasks.param_groups`); ``train/lr`` is the last one's (the head's) rate, and
    once the groups' rates differ (discriminative rates) or a group is frozen, each group
    is logged as ``train/lr_<group>`` too, a frozen group at 0. Unnamed groups (an
    optimiser built by hand) are ``train/lr`` (the first) and ``train/lr_group<N>``; a
    second optimiser's are ``train/lr_opt<K>...``. Momentum (``momentum``, or Adam's
    ``betas[0]``) is logged as ``train/momentum...`` when a scheduler cycles it
    (``one_cycle``, ``CyclicLR``: their ``cycle_momentum``).

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
        self._per_group = False
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
        # Once layer groups differ (discriminative rates, a frozen group), each is logged
        # from then on, so its curve has no gap.
        self._per_group = self._per_group or layer_groups_differ(trainer.optimizers)
        values = learning_rates(trainer.optimizers, momentum=self._momentum, per_group=self._per_group)
        for name, value in values.items():
            pl_module.log(
                name, value, on_step=on_step, on_epoch=not on_step, prog_bar=self.prog_bar and name == "train/lr"
            )


def _effective_lr(group: dict[str, Any]) -> float:
    # A group whose parameters are all frozen trains at rate 0, whatever its schedule says.
    return float(group["lr"]) if any(p.requires_grad for p in group["params"]) else 0.0


def layer_groups_differ(optimizers: list[Optimizer]) -> bool:
    """Whether an optimiser has named layer groups (dlkit's) with different or frozen rates."""
    for optimizer in optimizers:
        groups = optimizer.param_groups
        named = len(groups) > 1 and all("name" in g for g in groups)
        if named and len({_effective_lr(g) for g in groups}) > 1:
            return True
    return False


def learning_rates(optimizers: list[Optimizer], momentum: bool = False, per_group: bool = False) -> dict[str, float]:
    """``{"train/lr": ..., "train/lr_group1": ..., "train/momentum": ...}`` of the optimisers' groups.

    Groups named by dlkit (one per layer group, a ``"name"`` key) are logged as
    ``train/lr_<name>`` when ``per_group`` is set, with a fully frozen group at rate 0, and
    ``train/lr`` is then the last group's (the head's) rate. Unnamed groups are
    ``train/lr`` (the first) and ``train/lr_group<N>``.

    Args:
        optimizers: The trainer's optimisers.
        momentum: Also give each group's momentum (``betas[0]`` for Adam-like ones);
            groups without either are left out.
        per_group: Log named layer groups one by one; else only ``train/lr``.
            Defaults to False.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
        >>> opt = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.01},
        ...                        {"params": net[1].parameters()}], lr=0.1, momentum=0.9)
        >>> learning_rates([opt], momentum=True)
        {'train/lr': 0.01, 'train/momentum': 0.9, 'train/lr_group1': 0.1, 'train/momentum_group1': 0.9}
        >>> opt = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.01, "name": "body"},
        ...                        {"params": net[1].parameters(), "name": "head"}], lr=0.1)
        >>> learning_rates([opt], per_group=True)
        {'train/lr': 0.1, 'train/lr_body': 0.01, 'train/lr_head': 0.1}
    """
    values: dict[str, float] = {}
    for k, optimizer in enumerate(optimizers):
        groups = optimizer.param_groups
        prefix = f"_opt{k}" if k else ""
        if len(groups) > 1 and all("name" in g for g in groups):
            head = groups[-1]
            values[f"train/lr{prefix}"] = float(head["lr"])
            if momentum and (value := _momentum(head)) is not None:
                values[f"train/momentum{prefix}"] = value
            if per_group:
                for group in groups:
                    values[f"train/lr{prefix}_{group['name']}"] = _effective_lr(group)
            continue
        for n, group in enumerate(groups):
            suffix = prefix + (f"_group{n}" if n else "")
            values[f"train/lr{suffix}"] = float(group["lr"])
            if momentum and (value := _momentum(group)) is not None:
                values[f"train/momentum{suffix}"] = value
    return values


def _momentum(group: dict[str, Any]) -> float | None:
    value = group["betas"][0] if "betas" in group else group.get("momentum")
    return None if value is None else float(value)
