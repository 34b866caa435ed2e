"""The learning-rate range test (Smith 2017; fastai's ``lr_find``), leaving the task as it was.

The task trains for up to ``num_steps`` batches while the learning rate grows
exponentially from ``min_lr`` to ``max_lr``; the loss, smoothed with an exponential
moving average (bias-corrected, β = 0.98), is recorded against the rate, and the sweep
stops once it exceeds ``diverge`` times its minimum. Afterwards the weights (and
buffers, such as BatchNorm statistics), the global RNG states and the task's metrics
are put back exactly, and the optimiser used for the sweep is thrown away, so a
following ``fit`` trains as if the sweep had never run.

Every parameter group keeps its ratio to the first group's rate (discriminative rates
survive; Lightning's finder sets one rate for all groups).

Suggestions, as fastai defines them, computed on the curve without its first 10 % and
last 5 points (the warm-up and the blow-up):

- ``valley``: the middle of the longest stretch over which the loss keeps falling (at
  1/3 + 1/6 of it, fastai's choice);
- ``steep``: the rate where the loss falls fastest against ``log(lr)``;
- ``minimum``: the rate of the lowest loss, divided by 10.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torchmetrics import Metric

__all__ = ["LRFinder", "LRFinderResult", "SUGGESTIONS", "find_lr", "suggest_lr"]

SUGGESTIONS = ("valley", "steep", "minimum")


@dataclass
class LRFinderResult:
    """The curve of a learning-rate range test and the suggested rates.

    Attributes:
        lrs: Learning rate of the first parameter group at each step.
        losses: Smoothed training loss at each step.
        raw_losses: The unsmoothed losses.
        suggestions: ``{"valley": lr, "steep": lr, "minimum": lr}``.
        suggestion: The rate of the chosen suggestion (``valley`` unless asked otherwise).
        method: The name of the chosen suggestion.
        stopped_early: Whether the loss diverged before ``num_steps``.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestions: dict[str, float]
    suggestion: float
    method: str
    stopped_early: bool = False
    group_ratios: list[float] = field(default_factory=list)

    def figure(self) -> Any:
        """The loss-vs-learning-rate plot (log x axis) with the suggestions marked.

        Returns:
            A ``matplotlib.figure.Figure`` (no pyplot state is touched).
        """
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses, label="smoothed loss")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (first parameter group)")
        ax.set_ylabel("training loss")
        markers = {"valley": "o", "steep": "^", "minimum": "s"}
        for name, lr in self.suggestions.items():
            loss = float(np.interp(math.log(lr), np.log(self.lrs), self.losses))
            ax.plot([lr], [loss], markers.get(name, "x"), label=f"{name}: {lr:.2e}")
        ax.set_title(f"Learning-rate range test: suggestion {self.suggestion:.2e} ({self.method})")
        ax.legend()
        fig.tight_layout()
        return fig

    def save_plot(self, path: str | Path) -> Path:
        """Write :meth:`figure` as a PNG file and return its path."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = self.figure()
        FigureCanvasAgg(fig).print_png(str(path))
        return path


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], method: str = "valley") -> float:
    """A learning rate from a range-test curve, as fastai suggests it.

    Args:
        lrs: Increasing learning rates, one per step.
        losses: The (smoothed) loss at each of them.
        method: ``"valley"``, ``"steep"`` or ``"minimum"`` (see the module docstring).

    Raises:
        ValueError: An unknown method, or fewer than 3 points to look at.

    Example:
        >>> lrs = [10 ** (i / 10 - 6) for i in range(60)]
        >>> losses = [2.0 - 0.03 * i if i < 40 else 0.8 + 0.3 * (i - 40) for i in range(60)]
        >>> 1e-6 < suggest_lr(lrs, losses) < lrs[40]
        True
    """
    if method not in SUGGESTIONS:
        raise ValueError(f"Unknown LR suggestion {method!r}; choose one of {', '.join(SUGGESTIONS)}.")
    n = len(losses)
    start, stop = n // 10, n - 5
    if stop - start < 3:
        start, stop = 0, n
    if stop - start < 3:
        raise ValueError(f"An LR range test needs at least 3 points to suggest a rate, got {n}.")
    lr, loss = np.asarray(lrs[start:stop], dtype=float), np.asarray(losses[start:stop], dtype=float)
    if method == "minimum":
        return float(lr[int(np.argmin(loss))] / 10)
    if method == "steep":
        slope = np.diff(loss) / np.diff(np.log(lr))
        return float(lr[int(np.argmin(slope))])
    # valley: the longest strictly decreasing subsequence of the losses (dynamic
    # programming); like fastai, its stretch is counted back from its end by its length.
    m = len(loss)
    length = np.ones(m, dtype=int)
    for i in range(1, m):
        for j in range(i):
            if loss[i] < loss[j] and length[j] + 1 > length[i]:
                length[i] = length[j] + 1
    end = int(np.argmax(length))
    begin = end - int(length[end])
    third = (end - begin) / 3
    return float(lr[begin + int(third) + int(third / 2)])


class LRFinder(L.Callback):
    """The range test as a callback: sets every group's rate before each step, records losses.

    :func:`find_lr` runs it on a throwaway trainer; use that rather than this class.

    Args:
        min_lr: Rate of the first step. Defaults to 1e-7.
        max_lr: Rate of the last step. Defaults to 10.
        num_steps: Steps of the sweep. Defaults to 100.
        beta: Smoothing of the loss (exponential moving average). Defaults to 0.98.
        diverge: Stop when the smoothed loss exceeds this multiple of its minimum.
            Defaults to 4.
    """

    def __init__(
        self, min_lr: float = 1e-7, max_lr: float = 10.0, num_steps: int = 100, beta: float = 0.98, diverge: float = 4.0
    ) -> None:
        check_sweep(min_lr, max_lr, num_steps, beta, diverge)
        self.min_lr, self.max_lr, self.num_steps, self.beta, self.diverge = min_lr, max_lr, num_steps, beta, diverge
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.raw_losses: list[float] = []
        self.ratios: list[float] = []
        self.stopped_early = False
        self._avg = 0.0
        self._best = math.inf

    def rate(self, step: int) -> float:
        """The first group's learning rate at ``step`` (exponential from min_lr to max_lr)."""
        frac = step / max(1, self.num_steps - 1)
        return self.min_lr * (self.max_lr / self.min_lr) ** frac

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        groups = trainer.optimizers[0].param_groups
        base = groups[0]["lr"]
        self.ratios = [g["lr"] / base if base else 1.0 for g in groups]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        lr = self.rate(trainer.global_step)
        for group, ratio in zip(trainer.optimizers[0].param_groups, self.ratios):
            group["lr"] = lr * ratio

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach())
        step = len(self.raw_losses)
        self.lrs.append(self.rate(trainer.global_step - 1))
        self.raw_losses.append(value)
        if not math.isfinite(value):
            self.stopped_early, trainer.should_stop = True, True
            self.lrs.pop(), self.raw_losses.pop()
            return
        self._avg = self.beta * self._avg + (1 - self.beta) * value
        smoothed = self._avg / (1 - self.beta ** (step + 1))
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        if step > 0 and smoothed > self.diverge * self._best:
            self.stopped_early, trainer.should_stop = True, True


def check_sweep(min_lr: float, max_lr: float, num_steps: int, beta: float, diverge: float) -> None:
    """Raise a ``ValueError`` naming the ``find_lr`` argument that is out of range."""
    if not (math.isfinite(min_lr) and min_lr > 0):
        raise ValueError(f"find_lr.min_lr must be a finite number > 0, got {min_lr!r}.")
    if not (math.isfinite(max_lr) and max_lr > min_lr):
        raise ValueError(f"find_lr.max_lr must be finite and > min_lr ({min_lr}), got {max_lr!r}.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 10:
        raise ValueError(f"find_lr.num_steps must be an integer >= 10, got {num_steps!r}.")
    if not 0 <= beta < 1:
        raise ValueError(f"find_lr.beta must lie in [0, 1), got {beta!r}.")
    if not diverge > 1:
        raise ValueError(f"find_lr.diverge must be > 1, got {diverge!r}.")


def _rng_state() -> tuple[Any, Any, Any]:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_rng_state(state: tuple[Any, Any, Any]) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])


def find_lr(
    task: L.LightningModule,
    datamodule: L.LightningDataModule | None = None,
    train_dataloaders: Any = None,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    suggestion: str = "valley",
    beta: float = 0.98,
    diverge: float = 4.0,
    **trainer_kwargs: Any,
) -> LRFinderResult:
    """Run a learning-rate range test on ``task`` and put everything back afterwards.

    Args:
        task: The LightningModule (a dlkit task) whose ``configure_optimizers`` builds the
            optimiser to sweep.
        datamodule: Data to train on (its train split). Or give ``train_dataloaders``.
        train_dataloaders: A training loader, when there is no DataModule.
        min_lr: First rate. Defaults to 1e-7.
        max_lr: Last rate. Defaults to 10.
        num_steps: Most steps of the sweep (it stops early when the loss diverges).
            Defaults to 100.
        suggestion: ``"valley"``, ``"steep"`` or ``"minimum"``. Defaults to ``"valley"``.
        beta: Loss smoothing. Defaults to 0.98.
        diverge: Stop at this multiple of the lowest smoothed loss. Defaults to 4.
        **trainer_kwargs: For the sweep's ``lightning.Trainer`` (``accelerator``...).

    Returns:
        The :class:`LRFinderResult` (curve, suggestions, the chosen rate).

    Raises:
        ValueError: An argument out of range (named), an unknown suggestion, or a sweep
            too short to suggest anything.

    Example:
        >>> result = find_lr(clf, DigitsDataModule(resize=32))  # doctest: +SKIP
        >>> clf.compile(optimizer="adam", lr=result.suggestion)  # doctest: +SKIP
    """
    if suggestion not in SUGGESTIONS:
        raise ValueError(f"find_lr.suggestion must be one of {', '.join(SUGGESTIONS)}, got {suggestion!r}.")
    sweep = LRFinder(min_lr, max_lr, num_steps, beta, diverge)
    saved_weights = copy.deepcopy(task.state_dict())
    saved_rng = _rng_state()
    saved_trainer = task._trainer
    defaults: dict[str, Any] = {
        "max_steps": num_steps, "max_epochs": -1, "limit_val_batches": 0, "num_sanity_val_steps": 0,
        "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False,
    }  # fmt: skip
    trainer = L.Trainer(**{**defaults, **trainer_kwargs, "callbacks": [sweep]})
    try:
        trainer.fit(task, datamodule=datamodule, train_dataloaders=train_dataloaders)
    finally:
        task.load_state_dict(saved_weights)
        for metric in task.modules():
            if isinstance(metric, Metric):
                metric.reset()
        _set_rng_state(saved_rng)
        task.trainer = saved_trainer
    suggestions = {name: suggest_lr(sweep.lrs, sweep.losses, name) for name in SUGGESTIONS}
    return LRFinderResult(
        lrs=sweep.lrs, losses=sweep.losses, raw_losses=sweep.raw_losses, suggestions=suggestions,
        suggestion=suggestions[suggestion], method=suggestion, stopped_early=sweep.stopped_early,
        group_ratios=sweep.ratios,
    )  # fmt: skip
