"""fastai's one-call transfer-learning recipe, ``fine_tune``, for any dlkit task."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dlkit.callbacks.history import History
from dlkit.config import instantiate_option
from dlkit.models.freezing import Freezable
from dlkit.tasks.param_groups import GroupRates

if TYPE_CHECKING:  # the task class imports this module
    from dlkit.tasks.base import Task

__all__ = ["fine_tune"]


def fine_tune(
    task: Task,
    data: Any,
    epochs: int,
    freeze_epochs: int = 1,
    base_lr: float = 2e-3,
    lr_mult: float = 100.0,
    pct_start: float = 0.3,
    div: float = 5.0,
    bn: str = "inference",
    **fit_kwargs: Any,
) -> History:
    """Train the head with the backbone frozen, then everything with discriminative rates.

    fastai's ``Learner.fine_tune``: ``freeze_epochs`` epochs of one-cycle training with
    every layer group but the head frozen (their BatchNorm as ``bn`` says, Keras'
    inference mode by default) at ``base_lr``; then every group unfrozen and ``epochs``
    epochs of one-cycle training with rates spread geometrically from
    ``base_lr / 2 / lr_mult`` (the first group) to ``base_lr / 2`` (the head). Each phase is
    one :meth:`~dlkit.tasks.Task.fit` with a fresh optimiser of the task's kind (one
    parameter group per layer group); the task's own optimiser rate and schedule come
    back afterwards, the network stays unfrozen.

    Args:
        task: The task; its network must have layer groups (every dlkit model does).
        data: What :meth:`~dlkit.tasks.Task.fit` takes (a DataModule, arrays, loaders).
        epochs: Epochs of the unfrozen phase (> 0).
        freeze_epochs: Epochs of the head-only phase (>= 0). Defaults to 1.
        base_lr: The head's peak rate in the first phase; half of it in the second.
            Defaults to 2e-3.
        lr_mult: Ratio of the head's rate to the first group's in the second phase.
            Defaults to 100.
        pct_start: Share of the second phase spent warming up. Defaults to 0.3.
        div: The second phase starts at ``peak / div``. Defaults to 5.
        bn: What frozen BatchNorm layers do in the first phase. Defaults to ``"inference"``.
        **fit_kwargs: Passed to both :meth:`~dlkit.tasks.Task.fit` calls (``callbacks``,
            ``batch_size``, ``verbose``, trainer arguments...).

    Returns:
        One :class:`~dlkit.callbacks.History` of both phases, epochs numbered on.

    Raises:
        TypeError: A network without layer groups.
        ValueError: Bad epochs or rates, naming the argument.

    Example:
        >>> clf = Classifier(create_model("resnet18", num_classes=10, pretrained=True))  # doctest: +SKIP
        >>> history = clf.fine_tune(data, epochs=3, freeze_epochs=1, base_lr=2e-3)  # doctest: +SKIP
    """
    net = task.net
    if not isinstance(net, Freezable):
        raise TypeError(
            f"fine_tune needs a network with layer groups (dlkit.models.Freezable); got {type(net).__name__}."
        )
    for name, value, low in (("epochs", epochs, 1), ("freeze_epochs", freeze_epochs, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"fine_tune({name}=) must be an integer >= {low}, got {value!r}.")
    for name, value in (("base_lr", base_lr), ("lr_mult", lr_mult), ("div", div)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"fine_tune({name}=) must be a number > 0, got {value!r}.")
    saved = task.scheduler_factory, task.lr_spread
    history = History()
    try:
        if freeze_epochs:
            net.freeze_to(-1, bn=bn)
            task.lr_spread = GroupRates(max=base_lr, others=0.1)
            task.scheduler_factory = instantiate_option("scheduler", "one_cycle", pct_start=0.99)
            _append(history, task.fit(data, epochs=freeze_epochs, **fit_kwargs))
        net.unfreeze()
        peak = base_lr / 2
        task.lr_spread = GroupRates(max=peak, min=peak / lr_mult)
        task.scheduler_factory = instantiate_option("scheduler", "one_cycle", pct_start=pct_start, div_factor=div)
        _append(history, task.fit(data, epochs=epochs, **fit_kwargs))
    finally:
        task.scheduler_factory, task.lr_spread = saved
    return history


def _append(history: History, phase: History) -> None:
    offset = history.epoch[-1] + 1 if history.epoch else 0
    done = len(history.epoch)
    for key in phase.history.keys() - history.history.keys():
        history.history[key] = [math.nan] * done
    history.epoch += [offset + e for e in phase.epoch]
    for key, values in history.history.items():
        values += phase.history.get(key, [math.nan] * len(phase.epoch))
