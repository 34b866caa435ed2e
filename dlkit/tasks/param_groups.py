"""One optimiser parameter group per layer group, from the first step, with discriminative rates.

fastai's design, which dlkit follows: the optimiser holds every parameter of the model
from its first step, one parameter group per layer group of the network
(:meth:`~dlkit.models.freezing.Freezable.layer_groups`), frozen groups included. Freezing
is ``requires_grad=False``: a frozen parameter gets no gradient, and torch's optimisers
skip parameters without one (no update, no weight decay, no state). Unfreezing flips
``requires_grad`` back and nothing else: the optimiser never gains a group
(``add_param_group``), so every scheduler keeps the groups it was built with. That is
what breaks ``ReduceLROnPlateau`` (an IndexError), ``OneCycleLR`` and
``CosineAnnealingWarmRestarts`` under Lightning's ``BackboneFinetuning`` (Lightning
#8720/#12141, torch #79888).

**Discriminative learning rates** (fastai's ``slice``, ULMFiT's factor): a rate may be

- a number: every group gets it;
- ``slice(lo, hi)`` or ``{"min": lo, "max": hi}``: rates spread geometrically from the
  first group (``lo``) to the last, the head (``hi``);
- ``slice(hi)`` (fastai): the head gets ``hi`` and every other group ``hi / 10``;
- ``{"max": hi, "factor": f}``: group ``i`` of ``G`` gets ``hi / f ** (G - 1 - i)``
  (ULMFiT's 2.6).

Schedulers scale each group's own rate, so the ratios hold through the schedule.

Without a spread every layer group would hold the same rate, so they are one group
``"all"``: a fused optimiser runs one kernel per group and step (five groups cost a
LeNet-5 step about twice the optimiser time of one), and nothing tells same-rate groups
apart. Freezing works the same in one group, since it never touches the groups.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

__all__ = ["GroupRates", "LRSpec", "layer_param_groups", "optimizer_groups", "parse_lr"]

LRSpec = float | slice | Mapping[str, float]
"""A learning rate: a number, a ``slice`` or a ``{min, max}`` / ``{max, factor}`` mapping."""

# Name of the parameter group holding a task's parameters outside its network (a
# learnable loss, say).
OTHER_GROUP = "other"


@dataclass(frozen=True)
class GroupRates:
    """How one learning rate spreads over ``G`` layer groups (see the module docstring).

    Attributes:
        max: The last group's (the head's) rate.
        min: The first group's, for a geometric spread; None without one.
        factor: Divide by this once per group below the head; None without one.
        others: For fastai's ``slice(hi)``: every group but the head gets ``max * others``.

    Example:
        >>> [round(r, 6) for r in GroupRates(max=1e-2, min=1e-4).rates(3)]
        [0.0001, 0.001, 0.01]
        >>> GroupRates(max=1.0, factor=2.0).rates(3)
        [0.25, 0.5, 1.0]
    """

    max: float
    min: float | None = None
    factor: float | None = None
    others: float | None = None

    def rates(self, groups: int) -> list[float]:
        """The rate of each of ``groups`` groups, first (the input side) to last (the head)."""
        if groups <= 1:
            return [self.max] * groups
        if self.min is not None:
            ratio = self.max / self.min
            return [self.min * ratio ** (i / (groups - 1)) for i in range(groups)]
        if self.factor is not None:
            return [self.max / self.factor ** (groups - 1 - i) for i in range(groups)]
        if self.others is not None:
            return [self.max * self.others] * (groups - 1) + [self.max]
        return [self.max] * groups


def _rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a number > 0 and finite, got {value!r}.")
    return float(value)


def parse_lr(lr: Any, key: str = "optimizer.lr") -> tuple[float, GroupRates | None]:
    """Split a learning rate into the head's rate and its spread over groups (None: one rate).

    Args:
        lr: A number, ``slice(lo, hi)``, ``slice(hi)``, ``{"min": lo, "max": hi}`` or
            ``{"max": hi, "factor": f}`` (a ``DictConfig`` is fine).
        key: How errors name it. Defaults to ``"optimizer.lr"``.

    Returns:
        ``(hi, spread)``; ``spread`` is None for a plain number.

    Raises:
        ValueError: Naming ``key``, the value and the accepted forms.

    Example:
        >>> parse_lr({"min": 1e-5, "max": 1e-3})
        (0.001, GroupRates(max=0.001, min=1e-05, factor=None, others=None))
        >>> parse_lr(3e-4)
        (0.0003, None)
    """
    forms = "a number, slice(lo, hi), slice(hi), {min: lo, max: hi} or {max: hi, factor: f}"
    if isinstance(lr, slice):
        if lr.step is not None:
            raise ValueError(f"{key} as a slice takes no step, got {lr!r}; the forms are {forms}.")
        if lr.start is None:
            hi = _rate(lr.stop, f"{key} (slice stop)")
            return hi, GroupRates(max=hi, others=0.1)
        lo, hi = _rate(lr.start, f"{key} (slice start)"), _rate(lr.stop, f"{key} (slice stop)")
        return _spread(lo, hi, key)
    if isinstance(lr, Mapping):
        keys = set(lr)
        if keys == {"min", "max"}:
            return _spread(_rate(lr["min"], f"{key}.min"), _rate(lr["max"], f"{key}.max"), key)
        if keys == {"max", "factor"}:
            hi = _rate(lr["max"], f"{key}.max")
            factor = _rate(lr["factor"], f"{key}.factor")
            if factor < 1:
                raise ValueError(f"{key}.factor must be >= 1 (lower groups learn slower), got {factor!r}.")
            return hi, GroupRates(max=hi, factor=factor)
        raise ValueError(f"{key} as a mapping takes the keys min and max, or max and factor; got {sorted(keys)}.")
    try:
        return _rate(lr, key), None
    except ValueError:
        raise ValueError(f"{key} must be {forms} (each rate > 0 and finite), got {lr!r}.") from None


def _spread(lo: float, hi: float, key: str) -> tuple[float, GroupRates]:
    if lo > hi:
        raise ValueError(f"{key}: the lowest rate ({lo}) is above the highest ({hi}); give min <= max.")
    return hi, GroupRates(max=hi, min=lo)


def layer_param_groups(
    net: nn.Module, lr: float | None, spread: GroupRates | None = None, extra: list[nn.Parameter] | None = None
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: one per layer group of ``net``, every parameter included.

    Args:
        net: The network; with a ``spread``, a dlkit model (``Freezable``) gives one
            group per layer group; without one, or for any other module, one group
            ``"all"``.
        lr: The rate of every group without ``spread``; None leaves the groups to the
            optimiser's own default.
        spread: How rates differ by group (:func:`parse_lr`). Defaults to None.
        extra: Parameters outside ``net`` (a task's learnable loss), in a last group
            ``"other"`` at rate ``lr``. Defaults to None.

    Returns:
        ``[{"params": [...], "lr": ..., "name": group}, ...]``, the input side first. Frozen
        parameters are in their groups too (``requires_grad=False``: skipped by the
        optimiser until unfrozen).

    Example:
        >>> from dlkit.models import create_model
        >>> groups = layer_param_groups(create_model("lenet5"), 1e-3, GroupRates(max=1e-3, min=1e-5))
        >>> [(g["name"], f"{g['lr']:.0e}") for g in groups]
        [('conv1', '1e-05'), ('conv2', '3e-05'), ('fc1', '1e-04'), ('fc2', '3e-04'), ('head', '1e-03')]
    """
    named = getattr(net, "group_parameters", None)
    if spread is None or not callable(named):
        layer_groups = [("all", list(net.parameters()))]
    else:
        layer_groups = named()
    rates = spread.rates(len(layer_groups)) if spread is not None else [lr] * len(layer_groups)
    groups = [{"params": params, "lr": rate, "name": name} for (name, params), rate in zip(layer_groups, rates)]
    if extra:
        groups.append({"params": list(extra), "lr": lr, "name": OTHER_GROUP})
    if lr is None and spread is None:
        for g in groups:
            del g["lr"]
    return [g for g in groups if g["params"]]


def optimizer_groups(
    factory: Any, net: nn.Module, extra: list[nn.Parameter], spread: GroupRates | None = None
) -> tuple[Any, list[dict[str, Any]]]:
    """The parameter groups for an optimiser factory, and the factory with a plain ``lr``.

    A factory whose bound ``lr`` is a spread (``optimizer.lr={min: 1e-5, max: 1e-3}`` in a
    config) is rebound to the head's rate, and the groups carry their own.

    Args:
        factory: ``f(params) -> Optimizer``, usually a ``functools.partial``.
        net: The network (see :func:`layer_param_groups`).
        extra: Trained parameters outside ``net``.
        spread: A spread given apart from the factory (``compile(lr=slice(...))``);
            it wins over the factory's ``lr``. Defaults to None.

    Returns:
        ``(factory, groups)``.

    Example:
        >>> import torch
        >>> f = functools.partial(torch.optim.SGD, lr={"min": 0.01, "max": 0.1})
        >>> f, groups = optimizer_groups(f, torch.nn.Linear(2, 1), [])
        >>> f.keywords["lr"], [g["lr"] for g in groups]
        (0.1, [0.1])
    """
    keywords = getattr(factory, "keywords", None)
    lr = keywords.get("lr") if isinstance(keywords, dict) else None
    if spread is not None:
        lr = spread.max
    elif lr is not None and not isinstance(lr, (int, float)):
        lr, spread = parse_lr(lr)
        factory = functools.partial(factory.func, *factory.args, **{**keywords, "lr": lr})
    return factory, layer_param_groups(net, lr, spread, extra)
