"""Metric names a user writes (``metrics=["accuracy"]``) -> torchmetrics objects."""

from __future__ import annotations

from typing import Literal

import torchmetrics
from torchmetrics import Metric

__all__ = ["build_metric", "metric_mode", "CLASSIFICATION_METRICS", "REGRESSION_METRICS"]

# Canonical short name (used in logged keys such as "val/acc") for every accepted spelling.
_ALIASES = {
    "accuracy": "acc", "acc": "acc",
    "top5": "top5_acc", "top5_acc": "top5_acc", "top_5_accuracy": "top5_acc",
    "f1": "f1", "f1_score": "f1",
    "precision": "precision", "recall": "recall",
    "auroc": "auroc", "auc": "auroc",
    "mae": "mae", "mean_absolute_error": "mae",
    "mse": "mse", "mean_squared_error": "mse",
    "rmse": "rmse", "root_mean_squared_error": "rmse",
    "r2": "r2", "r2_score": "r2",
}  # fmt: skip
CLASSIFICATION_METRICS = ("acc", "top5_acc", "f1", "precision", "recall", "auroc")
REGRESSION_METRICS = ("mae", "mse", "rmse", "r2")
_HIGHER_IS_BETTER = {"acc", "top5_acc", "f1", "precision", "recall", "auroc", "r2"}


def canonical_name(name: str) -> str:
    """The short logged name of a metric spelling, e.g. ``"accuracy" -> "acc"``."""
    key = name.lower()
    if key not in _ALIASES:
        raise ValueError(
            f"Unknown metric {name!r}. Allowed: {', '.join(sorted(set(_ALIASES)))}."
        )
    return _ALIASES[key]


def metric_mode(name: str) -> Literal["min", "max"]:
    """``"max"`` for metrics where higher is better (accuracy, R²), ``"min"`` otherwise (loss, MAE)."""
    return "max" if name in _HIGHER_IS_BETTER else "min"


def build_metric(
    name: str,
    kind: Literal["multiclass", "binary", "regression"],
    num_classes: int | None = None,
) -> tuple[str, Metric]:
    """Build a torchmetrics object for ``name``.

    Args:
        name: A metric spelling (``"accuracy"``, ``"f1"``, ``"mae"``, ``"r2"``...).
        kind: ``"multiclass"`` (logits ``(B, C)``, index targets), ``"binary"``
            (one logit per sample, targets in {0, 1}) or ``"regression"``.
        num_classes: Classes, required for ``"multiclass"``.

    Returns:
        ``(short_name, metric)``, e.g. ``("acc", MulticlassAccuracy(...))``.

    Example:
        >>> build_metric("accuracy", "multiclass", num_classes=10)[0]
        'acc'
    """
    short = canonical_name(name)
    if kind == "regression":
        if short not in REGRESSION_METRICS:
            raise ValueError(
                f"Metric {name!r} does not apply to regression; use one of {', '.join(REGRESSION_METRICS)}."
            )
        table = {
            "mae": torchmetrics.MeanAbsoluteError,
            "mse": torchmetrics.MeanSquaredError,
            "rmse": lambda: torchmetrics.MeanSquaredError(squared=False),
            "r2": torchmetrics.R2Score,
        }
        return short, table[short]()
    if short not in CLASSIFICATION_METRICS:
        raise ValueError(
            f"Metric {name!r} does not apply to classification; use one of "
            f"{', '.join(CLASSIFICATION_METRICS)}."
        )
    if kind == "binary":
        binary = {
            "acc": torchmetrics.classification.BinaryAccuracy,
            "f1": torchmetrics.classification.BinaryF1Score,
            "precision": torchmetrics.classification.BinaryPrecision,
            "recall": torchmetrics.classification.BinaryRecall,
            "auroc": torchmetrics.classification.BinaryAUROC,
        }
        if short not in binary:
            raise ValueError(f"Metric {name!r} needs several classes; binary outputs allow {', '.join(binary)}.")
        return short, binary[short]()
    if not num_classes or num_classes < 2:
        raise ValueError(
            f"Metric {name!r} needs num_classes >= 2 for a multi-class output, got {num_classes}. "
            "Pass num_classes to the task or give the network a num_classes attribute."
        )
    C = num_classes
    multiclass = {
        # Micro-averaged accuracy is the plain fraction of correct predictions (Keras' accuracy).
        "acc": lambda: torchmetrics.classification.MulticlassAccuracy(C, average="micro"),
        "top5_acc": lambda: torchmetrics.classification.MulticlassAccuracy(C, top_k=min(5, C), average="micro"),
        "f1": lambda: torchmetrics.classification.MulticlassF1Score(C, average="macro"),
        "precision": lambda: torchmetrics.classification.MulticlassPrecision(C, average="macro"),
        "recall": lambda: torchmetrics.classification.MulticlassRecall(C, average="macro"),
        "auroc": lambda: torchmetrics.classification.MulticlassAUROC(C),
    }
    return short, multiclass[short]()
