"""Learning-rate schedules that ``torch.optim.lr_scheduler`` builds from parts but has no name for.

Each is a plain function of the optimiser returning a torch scheduler, so a Hydra
config can name it (``_target_``, ``_partial_: true``) like torch's own, and its
state (including every part's) goes into checkpoints as usual. Each checks its
arguments and names the ``scheduler.*`` key and the allowed range when one is out of it,
before the first step: ``warmup_cosine`` (linear warm-up, cosine decay), ``one_cycle``
(torch's ``OneCycleLR``, peak rate from the optimiser), ``noam`` (the Transformer's
inverse-square-root schedule) and ``cosine_restarts`` (SGDR).
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LambdaLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    SequentialLR,
)

__all__ = ["cosine_restarts", "noam", "noam_factor", "one_cycle", "warmup_cosine"]


def warmup_cosine(
    optimizer: Optimizer,
    T_max: int,
    warmup: int | None = None,
    start_factor: float = 0.01,
    eta_min: float = 0.0,
) -> LRScheduler:
    """Linear warm-up from ``start_factor * lr`` to ``lr``, then cosine annealing to ``eta_min``.

    The usual recipe for large batches and fresh heads on pretrained backbones (Goyal
    et al., 2017): the first updates, taken while batch-norm statistics and the loss
    surface are far from settled, use a small rate. Intervals are epochs, or optimiser
    steps when the task steps its scheduler per step (``task.scheduler_interval=step``).

    Args:
        optimizer: The optimiser whose rate is scheduled.
        T_max: Length of the whole schedule, warm-up included (dlkit fills a null
            ``T_max`` with ``trainer.max_epochs``, or the run's steps).
        warmup: Intervals of linear warm-up; 0 gives plain cosine annealing. Defaults
            to 5 % of ``T_max``, at least one interval when ``T_max > 1``, so the default
            fits a run of any length.
        start_factor: Fraction of ``lr`` the warm-up starts from, in (0, 1].
        eta_min: Rate at the end of the schedule.

    Returns:
        A ``SequentialLR`` of ``LinearLR`` and ``CosineAnnealingLR``.

    Raises:
        ValueError: ``warmup`` not in ``[0, T_max)`` or ``start_factor`` not in (0, 1]
            (the message names the ``scheduler.*`` key).

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> sched = warmup_cosine(opt, T_max=10, warmup=2)
        >>> rates = []
        >>> for _ in range(10):
        ...     rates.append(round(opt.param_groups[0]["lr"], 4))
        ...     opt.step()
        ...     sched.step()
        >>> rates[:4]
        [0.001, 0.0505, 0.1, 0.0962]
    """
    if warmup is None:
        warmup = min(max(1, round(0.05 * T_max)), T_max - 1)
    if not 0 <= warmup < T_max:
        raise ValueError(
            f"scheduler.warmup must lie in [0, T_max) = [0, {T_max}), got {warmup}: the warm-up has to end "
            "before the schedule does (T_max is trainer.max_epochs, or the run's steps, unless set)."
        )
    if not 0 < start_factor <= 1:
        raise ValueError(f"scheduler.start_factor must lie in (0, 1], got {start_factor}.")
    cosine = CosineAnnealingLR(optimizer, T_max=T_max - warmup, eta_min=eta_min)
    if warmup == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, schedulers=[linear, cosine], milestones=[warmup])


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    max_lr: float | list[float] | None = None,
    pct_start: float = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    cycle_momentum: bool | None = None,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> OneCycleLR:
    """Smith's one-cycle policy: torch's ``OneCycleLR`` with the peak taken from the optimiser.

    The rate rises from ``max_lr / div_factor`` to ``max_lr`` over the first
    ``pct_start`` of the run, then anneals to ``max_lr / (div_factor * final_div_factor)``;
    momentum (or Adam's beta1) moves the other way, ``max_momentum`` -> ``base_momentum``
    -> ``max_momentum``. The defaults are torch's (``pct_start=0.3, div_factor=25,
    final_div_factor=1e4``), so ``one_cycle(opt, n)`` gives the rates of
    ``OneCycleLR(opt, max_lr=lr, total_steps=n)``; fastai's ``fit_one_cycle`` uses
    ``pct_start=0.25, final_div_factor=1e5``.

    Args:
        optimizer: The optimiser whose rate is scheduled.
        total_steps: Scheduler steps of the whole cycle (dlkit fills a null
            ``total_steps`` with the run's optimiser steps).
        max_lr: Peak rate, or one per parameter group. Defaults to each group's own
            ``lr``, so ``optimizer.lr`` is the peak and per-group ratios are kept.
        pct_start: Fraction of the cycle spent rising, in (0, 1) (below 0.5 with
            ``three_phase``). Defaults to 0.3.
        anneal_strategy: ``"cos"`` or ``"linear"``. Defaults to ``"cos"``.
        div_factor: ``max_lr / div_factor`` is the starting rate; > 0. Defaults to 25.
        final_div_factor: The final rate is the starting rate divided by this; > 0.
            Defaults to 1e4.
        three_phase: Fall back to the starting rate symmetrically, then anneal
            (fastai's shape is two-phase). Defaults to False.
        cycle_momentum: Cycle momentum / beta1 inversely to the rate. Defaults to
            cycling when every group has ``betas`` or a momentum > 0, so plain SGD does
            not silently gain momentum (torch would cycle it from 0.95).
        base_momentum: Momentum at the peak rate. Defaults to 0.85.
        max_momentum: Momentum at the start and the end. Defaults to 0.95.

    Returns:
        A ``torch.optim.lr_scheduler.OneCycleLR``.

    Raises:
        ValueError: ``total_steps`` not a positive integer, ``pct_start`` outside (0, 1),
            a rise of less than one step, non-positive divisors or ``max_lr``, or
            ``base_momentum > max_momentum``.

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
        >>> sched = one_cycle(opt, total_steps=10)
        >>> rates = []
        >>> for _ in range(10):
        ...     rates.append(round(opt.param_groups[0]["lr"], 4))
        ...     opt.step()
        ...     sched.step()
        >>> rates[0], max(rates), rates[-1]
        (0.004, 0.1, 0.0)
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"scheduler.total_steps must be an integer >= 1, got {total_steps!r}.")
    upper = 0.5 if three_phase else 1.0
    if not 0 < pct_start < upper:
        raise ValueError(f"scheduler.pct_start must lie in (0, {upper:g}), got {pct_start}.")
    if pct_start * total_steps < 2:
        raise ValueError(
            f"scheduler.pct_start * total_steps must be >= 2 (a rise of at least 2 steps), got "
            f"{pct_start} * {total_steps} = {pct_start * total_steps:g}: raise pct_start or train longer "
            "(total_steps is the run's optimiser steps unless set)."
        )
    for key, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
        if not value > 0:
            raise ValueError(f"scheduler.{key} must be > 0, got {value}.")
    if base_momentum > max_momentum:
        raise ValueError(
            f"scheduler.base_momentum ({base_momentum}) must be <= scheduler.max_momentum ({max_momentum})."
        )
    if max_lr is None:
        max_lr = [group["lr"] for group in optimizer.param_groups]
    peaks = max_lr if isinstance(max_lr, (list, tuple)) else [max_lr]
    if any(not lr > 0 for lr in peaks):
        raise ValueError(f"scheduler.max_lr must be > 0 (null: the optimiser's lr), got {max_lr}.")
    if cycle_momentum is None:
        cycle_momentum = all("betas" in g or g.get("momentum", 0) > 0 for g in optimizer.param_groups)
    return OneCycleLR(
        optimizer,
        max_lr=list(max_lr) if isinstance(max_lr, (list, tuple)) else max_lr,
        total_steps=total_steps,
        pct_start=float(pct_start),
        anneal_strategy=anneal_strategy,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
    )


def noam_factor(step: int, d_model: int, warmup: int) -> float:
    """The Transformer's rate factor ``d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)``.

    It rises linearly for ``warmup`` steps, peaks at ``(d_model · warmup)^-0.5`` and then
    falls as ``step^-0.5`` (Vaswani et al., 2017, eq. 3). ``step`` counts updates from 1.

    Example:
        >>> round(noam_factor(4000, d_model=512, warmup=4000), 6)
        0.000699
    """
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def noam(
    optimizer: Optimizer,
    d_model: int,
    warmup: int | None = None,
    T_max: int | None = None,
) -> LambdaLR:
    """The Transformer's ("Noam") schedule: rate = ``lr · noam_factor(step, d_model, warmup)``.

    The optimiser's ``lr`` scales the factor: ``lr=1`` with Adam ``betas=(0.9, 0.98)``,
    ``eps=1e-9`` is the paper's recipe, where ``d_model=512, warmup=4000`` peak at 7e-4.
    The first update uses ``step=1``.

    Args:
        optimizer: The optimiser whose rate is scheduled.
        d_model: Width of the model (dlkit fills a null ``d_model`` from the network's
            ``cfg.d_model`` or ``d_model``).
        warmup: Steps of the linear rise, >= 1. Defaults to 5 % of ``T_max`` (at least 1;
            the paper's 4000 steps were 4 % of its 100k), so a short run gets a short rise.
        T_max: Length of the run in scheduler steps, used to default and check ``warmup``
            (dlkit fills a null ``T_max`` from the run). None leaves ``warmup`` unchecked.

    Returns:
        A ``LambdaLR``.

    Raises:
        ValueError: ``d_model < 1``, ``warmup`` not in ``[1, T_max)``, or no ``warmup`` and
            no ``T_max`` to derive it from.

    Example:
        >>> opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=1.0)
        >>> sched = noam(opt, d_model=16, warmup=2)
        >>> rates = []
        >>> for _ in range(4):
        ...     rates.append(round(opt.param_groups[0]["lr"], 4))
        ...     opt.step()
        ...     sched.step()
        >>> rates
        [0.0884, 0.1768, 0.1443, 0.125]
    """
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
        raise ValueError(f"scheduler.d_model must be an integer >= 1, got {d_model!r}.")
    if T_max is not None and T_max < 1:
        raise ValueError(f"scheduler.T_max must be >= 1, got {T_max}.")
    if warmup is None:
        if T_max is None:
            raise ValueError("scheduler.warmup is needed when scheduler.T_max (the run's length) is unknown.")
        warmup = min(max(1, round(0.05 * T_max)), T_max - 1)
    upper = f"T_max) = [1, {T_max})" if T_max is not None else "inf)"
    if warmup < 1 or (T_max is not None and warmup >= T_max):
        raise ValueError(
            f"scheduler.warmup must lie in [1, {upper}, got {warmup}: the warm-up has to end before the run "
            "does (T_max is the run's steps unless set)."
        )
    return LambdaLR(optimizer, lambda i: noam_factor(i + 1, d_model, warmup))


def cosine_restarts(
    optimizer: Optimizer,
    T_max: int | None = None,
    T_0: int | None = None,
    T_mult: int = 2,
    cycles: int = 3,
    eta_min: float = 0.0,
) -> CosineAnnealingWarmRestarts:
    """Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).

    The rate falls from ``lr`` to ``eta_min`` along a half cosine over ``T_0`` steps,
    jumps back to ``lr``, and repeats with each cycle ``T_mult`` times longer than the
    last: torch's ``CosineAnnealingWarmRestarts``.

    Args:
        optimizer: The optimiser whose rate is scheduled.
        T_max: Length of the run in scheduler steps, used to default and check ``T_0``
            (dlkit fills a null ``T_max`` from the run).
        T_0: Length of the first cycle, >= 1. Defaults to the smallest length whose
            ``cycles`` cycles cover ``T_max``, ``ceil(T_max / (1 + T_mult + ... +
            T_mult^(cycles-1)))``, so the run ends late in its last cycle, at a low rate,
            rather than just after a restart.
        T_mult: Growth of each cycle's length, an integer >= 1. Defaults to 2 (SGDR's).
        cycles: Cycles the default ``T_0`` fits into the run, >= 1. Defaults to 3.
        eta_min: Lowest rate. Defaults to 0.

    Returns:
        A ``CosineAnnealingWarmRestarts``.

    Raises:
        ValueError: ``T_0``, ``T_mult``, ``cycles`` or ``T_max`` out of range, ``T_0``
            longer than ``T_max``, or neither given.

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> sched = cosine_restarts(opt, T_max=14, cycles=3, T_mult=2)  # cycles of 2, 4, 8 steps
        >>> rates = []
        >>> for _ in range(7):
        ...     rates.append(round(opt.param_groups[0]["lr"], 4))
        ...     opt.step()
        ...     sched.step()
        >>> rates
        [0.1, 0.05, 0.1, 0.0854, 0.05, 0.0146, 0.1]
    """
    for key, value in (("T_mult", T_mult), ("cycles", cycles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"scheduler.{key} must be an integer >= 1, got {value!r}.")
    if T_max is not None and T_max < 1:
        raise ValueError(f"scheduler.T_max must be >= 1, got {T_max}.")
    if T_0 is None:
        if T_max is None:
            raise ValueError("scheduler.T_0 is needed when scheduler.T_max (the run's length) is unknown.")
        T_0 = math.ceil(T_max / sum(T_mult**i for i in range(cycles)))
    if isinstance(T_0, bool) or not isinstance(T_0, int) or T_0 < 1:
        raise ValueError(f"scheduler.T_0 must be an integer >= 1, got {T_0!r}.")
    if T_max is not None and T_0 > T_max:
        raise ValueError(
            f"scheduler.T_0 must lie in [1, T_max] = [1, {T_max}], got {T_0}: the first cycle is longer than "
            "the run (T_max is the run's steps unless set)."
        )
    return CosineAnnealingWarmRestarts(optimizer, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
