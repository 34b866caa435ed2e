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

__all__ = ["OptimizerFactory", "SchedulerFactory", "build_optimizer", "check_lr", "fill_schedule_defaults"]

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


def fill_schedule_defaults(
    factory: SchedulerFactory,
    *,
    max_epochs: int,
    total_steps: int | Callable[[], int],
    per_step: bool,
    monitor_mode: str,

) -> SchedulerFactory:
    """Fill the scheduler arguments a config leaves ``null`` from the run.

    ``T_max`` (cosine) becomes ``max_epochs`` (or ``total_steps`` when the schedule
    steps per optimiser step), ``total_steps`` (one-cycle) the run's optimiser steps,
    and ``mode`` (plateau) the task's ``monitor_mode``, so a schedule spans the run and
    follows the monitored metric the right way up by default.

    Args:
        factory: ``f(optimizer) -> LRScheduler``, usually a ``functools.partial``.
        max_epochs: The trainer's ``max_epochs``.
        total_steps: Optimiser steps of the whole run, or a function giving them (called
            only when needed: ``lambda: trainer.estimated_stepping_batches`` may have to
            set up the data).
        per_step: Whether the scheduler steps every optimiser step (else every epoch).
        monitor_mode: ``"min"`` or ``"max"``, the direction of the monitored metric.

    Returns:
        The factory with the ``null`` arguments bound (the same object when none were).

    Example:
        >>> f = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=None)
        >>> fill_schedule_defaults(f, max_epochs=20, total_steps=460, per_step=False, monitor_mode="min").keywords
        {'T_max': 20}
    """
    keywords = getattr(factory, "keywords", {})
    steps = (lambda: int(total_steps())) if callable(total_steps) else (lambda: int(total_steps))
    fills: dict[str, Any] = {}
    if "T_max" in keywords and keywords["T_max"] is None:
        fills["T_max"] = steps() if per_step else max_epochs
    if "total_steps" in keywords and keywords["total_steps"] is None:
        fills["total_steps"] = steps()
    if "mode" in keywords and keywords["mode"] is None:
        fills["mode"] = monitor_mode
    return functools.partial(factory, **fills) if fills else factory
