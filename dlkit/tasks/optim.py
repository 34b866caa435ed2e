"""Building a task's optimiser and LR scheduler from the factories it was given.

A task receives ``optimizer`` and ``scheduler`` as factories (Hydra ``_partial_``
configs, or the partials :meth:`dlkit.tasks.Task.compile` makes from names); this module
turns them into objects for ``configure_optimizers``: torch's fused optimiser kernel
where one exists, and scheduler arguments a config leaves ``null`` filled from the run.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "OptimizerFactory",
    "SchedulerFactory",
    "build_optimizer",
    "check_lr",
    "fill_schedule_defaults",
    "model_d_model",
    "schedule_interval",
]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def build_optimizer(
    factory: OptimizerFactory, params: Sequence[Tensor], prefer_fused: bool = True
) -> torch.optim.Optimizer:
    """Call an optimiser factory, with torch's fused kernel when it has one for ``params``.

    ``torch.optim`` still defaults to its per-parameter loop on the CPU, while its fused
    kernel does the same update in one pass (results equal to float32 rounding; the
    README's overhead table has the measured difference). So when the factory is a
    ``torch.optim`` class taking ``fused`` (Adam, AdamW, SGD, Adagrad in torch 2.x), or a
    ``functools.partial`` of one, and the user chose no implementation
    (``fused``/``foreach`` unset), it is built with ``fused=True``; where torch refuses (a
    device or dtype without the kernel, ``differentiable=True``), with the factory's own
    defaults.

    Args:
        factory: ``f(params) -> Optimizer``, usually a Hydra ``_partial_`` or the
            partial :meth:`Task.compile` builds.
        params: The parameters to optimise.
        prefer_fused: False builds the factory as it is. :meth:`Task.configure_optimizers`
            passes False under ``*-mixed`` precision, where Lightning only unscales the
            gradients of optimisers that do not unscale them themselves (fused ones do),
            so gradient clipping and callbacks reading gradients need the unfused path;
            and for networks with sparse-gradient modules (``nn.Embedding(sparse=True)``),
            which fused kernels refuse.

    Returns:
        The optimiser.

    Example:
        >>> net = torch.nn.Linear(3, 1)
        >>> opt = build_optimizer(functools.partial(torch.optim.Adam, lr=1e-3), list(net.parameters()))
        >>> opt.param_groups[0]["fused"]
        True
        >>> build_optimizer(functools.partial(torch.optim.Adam, fused=False), list(net.parameters())).param_groups[0]["fused"]
        False
    """
    func, chosen = (factory.func, factory.keywords) if isinstance(factory, functools.partial) else (factory, {})
    if (
        prefer_fused
        and not {"fused", "foreach"} & chosen.keys()
        and inspect.isclass(func)
        and issubclass(func, torch.optim.Optimizer)
        and "fused" in inspect.signature(func).parameters
    ):
        try:
            return factory(params=params, fused=True)
        except (RuntimeError, ValueError):
            pass  # no fused kernel for these parameters: the factory's own defaults below
    return factory(params=params)


def check_lr(factory: Any) -> None:
    """Raise when an optimiser factory's bound ``lr`` is not a positive number.

    Args:
        factory: A ``functools.partial`` (or anything with ``keywords``); other
            callables pass unchecked.

    Raises:
        ValueError: Naming ``optimizer.lr`` and the value.

    Example:
        >>> check_lr(functools.partial(torch.optim.SGD, lr=0.0))
        Traceback (most recent call last):
        ValueError: optimizer.lr must be > 0, got 0.0.
    """
    lr = getattr(factory, "keywords", {}).get("lr")
    if isinstance(lr, (int, float)) and lr <= 0:
        raise ValueError(f"optimizer.lr must be > 0, got {lr}.")


def schedule_interval(factory: SchedulerFactory, task_interval: str = "epoch") -> str:
    """When a scheduler steps: its option's own ``interval``, else the task's ``scheduler_interval``.

    A schedule defined per optimiser step (``one_cycle``, ``noam``, ``cosine_restarts``)
    says ``interval: step`` in its ``conf/scheduler`` option, so ``scheduler=one_cycle``
    steps every step without another key; options with ``interval: null`` (and
    factories without the keyword) follow ``task.scheduler_interval``. An explicit
    ``scheduler.interval=epoch`` overrides an option's choice.

    Args:
        factory: ``f(optimizer) -> LRScheduler``; a ``functools.partial`` may carry an
            ``interval`` keyword (``"step"``, ``"epoch"`` or None).
        task_interval: The task's ``scheduler_interval``. Defaults to ``"epoch"``.

    Returns:
        ``"step"`` or ``"epoch"``.

    Raises:
        ValueError: An ``interval`` other than ``"step"``, ``"epoch"`` or None.

    Example:
        >>> schedule_interval(functools.partial(torch.optim.lr_scheduler.OneCycleLR, interval="step"))
        'step'
        >>> schedule_interval(functools.partial(torch.optim.lr_scheduler.StepLR, interval=None), "step")
        'step'
    """
    interval = getattr(factory, "keywords", {}).get("interval")
    if interval is None:
        return task_interval
    if interval not in ("step", "epoch"):
        raise ValueError(
            f"scheduler.interval must be 'step', 'epoch' or null (null: task.scheduler_interval), got {interval!r}."
        )
    return interval


def model_d_model(net: Any) -> int | None:
    """The width ``d_model`` of a network: ``net.cfg.d_model`` or ``net.d_model``, else None.

    Example:
        >>> model_d_model(torch.nn.TransformerEncoderLayer(d_model=32, nhead=4)) is None
        True
    """
    for owner in (getattr(net, "cfg", None), net):
        value = getattr(owner, "d_model", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def fill_schedule_defaults(
    factory: SchedulerFactory,
    *,
    max_epochs: int,
    total_steps: int | Callable[[], int],
    per_step: bool,
    monitor_mode: str,
    net: Any = None,
) -> SchedulerFactory:
    """Fill the scheduler arguments a config leaves ``null`` from the run.

    The horizons span the run in the schedule's interval: ``T_max`` (cosine,
    warmup_cosine, cosine_restarts, noam) and ``total_steps`` (one_cycle) become
    ``max_epochs``, or the run's optimiser steps when the schedule steps per optimiser
    step. ``mode`` (plateau) becomes the task's ``monitor_mode`` and ``d_model`` (noam)
    the network's (:func:`model_d_model`). The ``interval`` keyword, which is read by
    :func:`schedule_interval` and not the scheduler's, is dropped.

    Args:
        factory: ``f(optimizer) -> LRScheduler``, usually a ``functools.partial``.
        max_epochs: The trainer's ``max_epochs``.
        total_steps: Optimiser steps of the whole run, or a function giving them (called
            only when needed: ``lambda: trainer.estimated_stepping_batches`` may have to
            set up the data).
        per_step: Whether the scheduler steps every optimiser step (else every epoch).
        monitor_mode: ``"min"`` or ``"max"``, the direction of the monitored metric.
        net: The network trained, for ``d_model``. Defaults to None.

    Returns:
        The factory with the ``null`` arguments bound (the same object when none were).

    Raises:
        ValueError: A null ``d_model`` and a network without one (the message names
            ``scheduler.d_model``).

    Example:
        >>> f = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=None)
        >>> fill_schedule_defaults(f, max_epochs=20, total_steps=460, per_step=False, monitor_mode="min").keywords
        {'T_max': 20}
    """
    keywords = getattr(factory, "keywords", {})
    steps = (lambda: int(total_steps())) if callable(total_steps) else (lambda: int(total_steps))
    fills: dict[str, Any] = {}
    for key in ("T_max", "total_steps"):
        if key in keywords and keywords[key] is None:
            fills[key] = steps() if per_step else max_epochs
    if "mode" in keywords and keywords["mode"] is None:
        fills["mode"] = monitor_mode
    if "d_model" in keywords and keywords["d_model"] is None:
        d_model = model_d_model(net)
        if d_model is None:
            raise ValueError(
                f"scheduler.d_model is null and the network ({type(net).__name__}) has no `cfg.d_model` or "
                "`d_model` to fill it from: set scheduler.d_model."
            )
        fills["d_model"] = d_model
    if "interval" in keywords and isinstance(factory, functools.partial):
        kept = {k: v for k, v in keywords.items() if k != "interval"}
        return functools.partial(factory.func, *factory.args, **{**kept, **fills})
    return functools.partial(factory, **fills) if fills else factory
