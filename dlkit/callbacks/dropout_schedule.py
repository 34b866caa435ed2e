"""Dropout schedules: set the rate of every dropout in a model step by step (or epoch by epoch)."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_warn

from dlkit.layers import DROPOUT_TYPES, RNNBase

__all__ = ["SCHEDULES", "DropoutSchedule", "dropout_sites"]

SCHEDULES = ("constant", "linear", "step", "cosine", "curriculum", "early", "late")


def dropout_sites(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every dropout rate in ``model``: ``{module name: (module, attribute holding the rate)}``.

    The one way a schedule sets a rate is ``setattr(module, attribute, p)``, read again at
    every forward:

    - ``p`` of dlkit's ``Dropout``/``Dropout2d`` and torch's dropout modules. dlkit's
      ``MultiheadAttention`` (``attn_dropout``), the attention scoring layers
      (``dropout``), the positional encodings and the transformer layers (``dropout``,
      ``dropout1``...) hold their rates in such modules, so they are found as children.
    - ``dropout`` of a stacked recurrent layer (dlkit's or torch's ``RNN``/``LSTM``/``GRU``
      with ``num_layers > 1``; between single layers there is nothing to drop), and of
      torch's ``nn.MultiheadAttention``.

    Example:
        >>> net = nn.Sequential(nn.Dropout(0.1), nn.LSTM(4, 4, num_layers=2), nn.LSTM(4, 4))
        >>> {name: attr for name, (_, attr) in dropout_sites(net).items()}
        {'0': 'p', '1': 'dropout'}
    """
    sites: dict[str, tuple[nn.Module, str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, DROPOUT_TYPES):
            sites[name] = (module, "p")
        elif isinstance(module, nn.MultiheadAttention) or (
            isinstance(module, (RNNBase, nn.RNNBase)) and module.num_layers > 1
        ):
            sites[name] = (module, "dropout")
    return sites


class DropoutSchedule(L.Callback):
    """Set ``p`` of every dropout in the model by a schedule, before every training step or epoch.

    ``t`` counts optimiser steps (``interval="step"``, Lightning's ``global_step``) or
    epochs (``interval="epoch"``); durations given in epochs (``cutoff_epoch``,
    ``step_size``) are multiplied by the optimiser steps per epoch in the first case.
    ``span`` is ``cutoff_epoch`` when set, else the run (``trainer.estimated_stepping_batches``
    steps, or ``max_epochs``), and ``progress = min(1, t / (span - 1))``, so a schedule
    reaches its end value at the span's last step, as Liu et al.'s ``np.linspace`` does.

    - ``constant``: ``p``.
    - ``linear``: ``start + (end - start) · progress``, then ``end``.
    - ``cosine``: ``end + (start - end) · (1 + cos(π · progress)) / 2``.
    - ``step``: the same path from ``start`` to ``end`` in equal stairs, one every
      ``step_size`` epochs; the last stair is ``end``.
    - ``curriculum`` (Morerio et al., 2017): retain probability
      ``θ(t) = (1 - θ̄) · exp(-γ t) + θ̄``, so ``p(t) = (1 - θ̄) · (1 - exp(-γ t))`` rises
      from 0 towards ``1 - θ̄``; γ = 0.001 per step is the paper's (θ̄ = 0.9 for inputs,
      0.75 for conv, 0.5 for fully connected layers).
    - ``early`` (Liu et al., 2023): ``p`` before ``cutoff_epoch`` (``early_mode="linear"``:
      falling linearly to 0 over it; ``"constant"``: held), then 0.
    - ``late`` (Liu et al., 2023): 0 before ``cutoff_epoch``, then ``p``.

    The rates are a function of ``global_step`` / ``current_epoch`` alone, which Lightning
    restores on resume, so a resumed run continues the schedule exactly; the callback's
    ``state_dict`` (in checkpoints) records the last rate and the settings, and a resume
    with different settings warns. The model keeps the last rate after training.

    Several groups with their own schedules (Morerio's per-layer θ̄) are several
    callbacks with disjoint ``modules`` and a ``name`` each; rates are logged as
    ``train/dropout_p`` (or ``train/dropout_p_<name>``).

    Args:
        schedule: One of ``SCHEDULES``. Defaults to ``"constant"``.
        p: Rate of ``constant``, ``early`` and ``late``, in [0, 1). Defaults to 0.1.
        start: First rate of ``linear``, ``cosine`` and ``step``, in [0, 1). Defaults to 0.
        end: Last rate of ``linear``, ``cosine`` and ``step``, in [0, 1). Defaults to 0.5.
        cutoff_epoch: Epochs of ``early`` dropout / before ``late`` dropout (required
            there); the epochs ``linear``/``cosine``/``step`` take (None: the run).
            Defaults to None.
        early_mode: Shape of ``early``: ``"linear"`` (Liu et al.'s best) or ``"constant"``.
            Defaults to ``"linear"``.
        step_size: Epochs per stair of ``step``. Defaults to 1.
        gamma: Speed γ of ``curriculum`` per ``t``, >= 0. Defaults to 0.001.
        theta_bar: Final retain probability θ̄ of ``curriculum``, in (0, 1]. Defaults to 0.5.
        interval: ``"step"`` or ``"epoch"``. Defaults to ``"step"``.
        modules: Which dropout sites (:func:`dropout_sites`) to drive, by their names in
            ``pl_module.named_modules()`` (``net.encoder.layers.0.dropout1``): a glob
            (``"*attn*"``), or a regular expression searched in the name after ``re:``
            (``"re:layers\\.[01]\\."``), or a list of those. None drives them all.
            Defaults to None.
        name: Suffix of the logged name, for several schedules. Defaults to None.

    Raises:
        ValueError: At construction, for a value out of range (the message names the key
            and the range); at ``setup``, for a ``cutoff_epoch`` or ``step_size`` longer
            than the run, a model without dropout, or a ``modules`` pattern that matches
            none (the message lists the dropout modules there are).

    Example:
        >>> sched = DropoutSchedule("curriculum", theta_bar=0.5, gamma=0.001)
        >>> round(sched.rate(1000), 4)  # 0.5 * (1 - exp(-1))
        0.3161
        >>> DropoutSchedule("early", p=0.1, cutoff_epoch=2).rate(5, steps_per_epoch=3)  # linspace(0.1, 0, 6)[5]
        0.0
        >>> clf.fit(data, epochs=10, callbacks=[sched])  # doctest: +SKIP
    """

    def __init__(
        self,
        schedule: Literal["constant", "linear", "step", "cosine", "curriculum", "early", "late"] = "constant",
        p: float = 0.1,
        start: float = 0.0,
        end: float = 0.5,
        cutoff_epoch: int | None = None,
        early_mode: Literal["linear", "constant"] = "linear",
        step_size: int = 1,
        gamma: float = 0.001,
        theta_bar: float = 0.5,
        interval: Literal["step", "epoch"] = "step",
        modules: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"DropoutSchedule.schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}.")
        for key, value in (("p", p), ("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"DropoutSchedule.{key} must lie in [0, 1), got {value!r}.")
        if not 0 < theta_bar <= 1:
            raise ValueError(
                f"DropoutSchedule.theta_bar (the final retain probability) must lie in (0, 1], got {theta_bar!r}."
            )
        if not gamma >= 0:
            raise ValueError(f"DropoutSchedule.gamma must be >= 0, got {gamma!r}.")
        if early_mode not in ("linear", "constant"):
            raise ValueError(f"DropoutSchedule.early_mode must be 'linear' or 'constant', got {early_mode!r}.")
        if interval not in ("step", "epoch"):
            raise ValueError(f"DropoutSchedule.interval must be 'step' or 'epoch', got {interval!r}.")
        for key, value in (("cutoff_epoch", cutoff_epoch), ("step_size", step_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"DropoutSchedule.{key} must be an integer >= 1, got {value!r}.")
        if schedule in ("early", "late") and cutoff_epoch is None:
            raise ValueError(f"DropoutSchedule.cutoff_epoch (an integer >= 1) is required by schedule={schedule!r}.")
        if isinstance(modules, str):
            modules = [modules]
        self.schedule, self.p, self.start, self.end = schedule, float(p), float(start), float(end)
        self.cutoff_epoch, self.early_mode, self.step_size = cutoff_epoch, early_mode, step_size
        self.gamma, self.theta_bar, self.interval = float(gamma), float(theta_bar), interval
        self.modules = list(modules) if modules is not None else None
        self.name = name
        self.sites: dict[str, tuple[nn.Module, str]] = {}
        self.last_rate: float | None = None
        self._steps_per_epoch = 1
        self._total: int | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, modules=self.modules)

    @property
    def log_name(self) -> str:
        """``train/dropout_p``, or ``train/dropout_p_<name>``."""
        return "train/dropout_p" + (f"_{self.name}" if self.name else "")

    # ------------------------------------------------------------------ the schedule

    def rate(self, t: int, steps_per_epoch: int = 1, total: int | None = None) -> float:
        """The rate at ``t`` steps (or epochs, with ``steps_per_epoch=1``).

        Args:
            t: Steps (or epochs) done before the one the rate is for, from 0.
            steps_per_epoch: Units of ``t`` per epoch, to convert ``cutoff_epoch`` and
                ``step_size``. Defaults to 1.
            total: The run's length in units of ``t``: the span of ``linear``, ``cosine``
                and ``step`` without ``cutoff_epoch``.

        Raises:
            ValueError: A schedule needing the run's length without ``total``.
        """
        s = self.schedule
        if s == "constant":
            return self.p
        if s == "curriculum":
            return (1 - self.theta_bar) * (1 - math.exp(-self.gamma * t))
        cutoff = self.cutoff_epoch * steps_per_epoch if self.cutoff_epoch is not None else None
        if s == "early":
            if t >= cutoff:
                return 0.0
            return self.p if self.early_mode == "constant" else self.p * (1 - _progress(t, cutoff))
        if s == "late":
            return 0.0 if t < cutoff else self.p
        span = cutoff if cutoff is not None else total
        if span is None:
            raise ValueError(f"DropoutSchedule({s!r}) needs cutoff_epoch or the run's length (total).")
        if s == "step":
            stair = self.step_size * steps_per_epoch
            stairs = math.ceil(span / stair)
            k = min(t // stair, stairs - 1)
            return self.start + (self.end - self.start) * (k / (stairs - 1) if stairs > 1 else 0.0)
        x = _progress(t, span)
        if s == "linear":
            return self.start + (self.end - self.start) * x
        return self.end + (self.start - self.end) * (1 + math.cos(math.pi * x)) / 2  # cosine

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.sites = self._select(dropout_sites(pl_module))
        others = [c for c in trainer.callbacks if isinstance(c, DropoutSchedule) and c is not self and c.sites]
        for other in others:
            if other.log_name == self.log_name:
                raise ValueError(
                    f"Two DropoutSchedule callbacks log {self.log_name}: give each a different `name`."
                )
            shared = sorted(self.sites.keys() & other.sites.keys())
            if shared:
                raise ValueError(
                    f"DropoutSchedule {self.log_name} and {other.log_name} both drive {', '.join(shared)}: "
                    "make their `modules` filters disjoint."
                )
        self._check_horizon(trainer.max_epochs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.interval == "epoch":
            self._steps_per_epoch, self._total = 1, _positive(trainer.max_epochs)
            return
        batches = trainer.num_training_batches
        needs_epochs = self.schedule not in ("constant", "curriculum")
        if math.isinf(batches):
            if needs_epochs:
                raise ValueError(
                    f"DropoutSchedule({self.schedule!r}, interval='step') converts epochs to steps, but the "
                    "training loader has no length: use interval='epoch' or a sized loader."
                )
            batches = 1
        self._steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        total = trainer.estimated_stepping_batches
        self._total = None if math.isinf(total) else int(total)
        if self.schedule == "curriculum" and self._total and 1 - math.exp(-self.gamma * self._total) < 0.5:
            reached = 1 - math.exp(-self.gamma * self._total)
            rank_zero_warn(
                f"DropoutSchedule('curriculum'): gamma={self.gamma} reaches only {reached:.0%} of its final rate "
                f"1 - theta_bar = {1 - self.theta_bar:g} in this run's {self._total} steps; raise gamma."
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.interval == "epoch":
            self._apply(pl_module, trainer.current_epoch, on_step=False)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.interval == "step":
            self._apply(pl_module, trainer.global_step, on_step=True)

    def state_dict(self) -> dict[str, Any]:
        return {"last_rate": self.last_rate, "settings": self._settings()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_rate = state_dict.get("last_rate")
        saved = state_dict.get("settings")
        if saved is not None and saved != self._settings():
            now = self._settings()
            changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
            rank_zero_warn(
                f"DropoutSchedule {self.log_name}: resuming with settings other than the checkpoint's "
                f"({', '.join(changed)}); the schedule follows the new ones from the restored step."
            )

    # ------------------------------------------------------------------ internals

    def _settings(self) -> dict[str, Any]:
        keys = ("schedule", "p", "start", "end", "cutoff_epoch", "early_mode", "step_size", "gamma", "theta_bar")
        keys += ("interval",)
        return {k: getattr(self, k) for k in keys}

    def _select(self, sites: dict[str, tuple[nn.Module, str]]) -> dict[str, tuple[nn.Module, str]]:
        listing = ", ".join(f"{n} ({type(m).__name__}.{a})" for n, (m, a) in sites.items()) or "none"
        if not sites:
            raise ValueError("DropoutSchedule: the model has no dropout module (dlkit.layers.Dropout, "
                             "a stacked RNN/LSTM/GRU, attention or transformer layer) to schedule.")
        if self.modules is None:
            return sites
        chosen: dict[str, tuple[nn.Module, str]] = {}
        for pattern in self.modules:
            hits = {n: s for n, s in sites.items() if _matches(pattern, n)}
            if not hits:
                raise ValueError(
                    f"DropoutSchedule.modules pattern {pattern!r} matches no dropout module; there are: {listing}."
                )
            chosen.update(hits)
        return chosen

    def _check_horizon(self, max_epochs: int | None) -> None:
        epochs = _positive(max_epochs)
        if epochs is None:
            return
        if self.cutoff_epoch is not None:
            upper = epochs - 1 if self.schedule == "late" else epochs
            if self.cutoff_epoch > upper:
                why = "so late dropout never starts" if self.schedule == "late" else "longer than the run"
                raise ValueError(
                    f"DropoutSchedule.cutoff_epoch must lie in [1, {upper}] for schedule={self.schedule!r} and "
                    f"trainer.max_epochs={epochs}, got {self.cutoff_epoch} ({why})."
                )
        if self.schedule == "step":
            span = self.cutoff_epoch or epochs
            if self.step_size >= span:
                raise ValueError(
                    f"DropoutSchedule.step_size must lie in [1, {span - 1}] (below the {span} epochs of the "
                    f"schedule), got {self.step_size}: the rate would never change."
                )

    def _apply(self, pl_module: L.LightningModule, t: int, on_step: bool) -> None:
        value = self.rate(t, self._steps_per_epoch, self._total)
        for module, attr in self.sites.values():
            setattr(module, attr, value)
        self.last_rate = value
        pl_module.log(self.log_name, value, on_step=on_step, on_epoch=not on_step)


def _progress(t: int, span: int) -> float:
    """``np.linspace(0, 1, span)[t]``, and 1 after the span."""
    return min(1.0, t / (span - 1)) if span > 1 else float(t >= 1)


def _positive(value: float | None) -> int | None:
    return int(value) if value is not None and 0 < value < math.inf else None


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)
