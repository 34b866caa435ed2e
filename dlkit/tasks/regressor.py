"""Regression: real-valued outputs; MAE, RMSE and R² as metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch.nn as nn
from torch import Tensor

from dlkit.tasks.base import Task
from dlkit.tasks.checks import check_regression_targets

__all__ = ["Regressor"]


class Regressor(Task):
    """Train a network with real-valued outputs; log ``stage/{loss,mae,rmse,r2}``.

    Args:
        net: The network; outputs ``(B, D)`` (``D = 1`` for one target).
        monitor: Defaults to ``"val/loss"``. monitor_mode: Defaults to ``"min"``.
        **kwargs: See :class:`~dlkit.tasks.base.Task`; ``loss`` defaults to ``"mse"``
            (``"mae"`` and ``"huber"`` are the other usual choices), ``metrics`` to
            ``["mae", "rmse", "r2"]``.

    Example:
        >>> reg = Regressor(create_model("mlp", in_features=10, num_classes=1))
        >>> reg.compile(optimizer="adam", lr=1e-2, loss="huber")
        >>> reg.fit(DiabetesDataModule(), epochs=50)
    """

    default_loss = "mse"
    default_metrics = ("mae", "rmse", "r2")

    def __init__(
        self,
        net: nn.Module,
        monitor: str = "val/loss",
        monitor_mode: Literal["min", "max"] = "min",
        **kwargs: Any,
    ) -> None:
        super().__init__(net, monitor=monitor, monitor_mode=monitor_mode, **kwargs)

    def validate_targets(self, out: Any, y: Any, where: str) -> None:
        """One finite target per output; see :func:`~dlkit.tasks.checks.check_regression_targets`."""
        if isinstance(out, Tensor) and isinstance(y, Tensor):
            check_regression_targets(out, y, where)
        elif isinstance(out, Mapping) and isinstance(y, Mapping):
            for name in self.loss_fns.keys() & out.keys() & y.keys():
                check_regression_targets(out[name], y[name], f"{where}[{name!r}]")

    def metric_inputs(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        out = out.detach()
        if out.ndim == 2 and out.shape[-1] == 1:  # torchmetrics wants (B,) for one target
            return out.squeeze(-1), target.reshape(-1)
        return out, target.reshape(out.shape)
