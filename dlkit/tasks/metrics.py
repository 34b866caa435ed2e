"""Metric names a user writes (``metrics=["accuracy"]``) -> torchmetrics objects, for every task.

One table (:data:`METRICS`) names every metric once: its logged short name, the tasks
it applies to, whether higher is better, and the other spellings a user may write. The
sequence metrics' inputs (token hits, exact matches, BLEU strings) are computed here
from id tensors too, so a seq2seq task only decodes and calls them.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torchmetrics
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.text import BLEUScore

__all__ = [
    "CLASSIFICATION_METRICS",
    "DECODED_METRICS",
    "METRICS",
    "REGRESSION_METRICS",
    "SEQ2SEQ_METRICS",
    "MetricInfo",
    "build_metric",
    "canonical_name",
    "exact_match",
    "metric_mode",
    "sequence_bleu_strings",
    "sequence_metric",
    "token_accuracy",
    "token_hits",
    "trim_sequences",
]

TaskKind = Literal["classification", "regression", "seq2seq"]


class MetricInfo(NamedTuple):
    """One row of :data:`METRICS`.

    Attributes:
        tasks: The task kinds the metric applies to.
        higher_is_better: Whether its ``*_best`` tracker keeps the maximum.
        aliases: Other accepted spellings (lower case); the short name is accepted too.
    """

    tasks: tuple[TaskKind, ...]
    higher_is_better: bool
    aliases: tuple[str, ...] = ()


# Short name (the logged key, as in "val/acc") -> what it applies to and how it is spelled.
# "accuracy" means class accuracy for a classifier and next-token accuracy for seq2seq.
METRICS: dict[str, MetricInfo] = {
    "acc": MetricInfo(("classification",), True, ("accuracy",)),
    "top5_acc": MetricInfo(("classification",), True, ("top5", "top_5_accuracy")),
    "f1": MetricInfo(("classification",), True, ("f1_score",)),
    "precision": MetricInfo(("classification",), True),
    "recall": MetricInfo(("classification",), True),
    "auroc": MetricInfo(("classification",), True, ("auc",)),
    "mae": MetricInfo(("regression",), False, ("mean_absolute_error",)),
    "mse": MetricInfo(("regression",), False, ("mean_squared_error",)),
    "rmse": MetricInfo(("regression",), False, ("root_mean_squared_error",)),
    "r2": MetricInfo(("regression",), True, ("r2_score",)),
    "token_acc": MetricInfo(("seq2seq",), True, ("token_accuracy", "accuracy", "acc")),
    "exact_match": MetricInfo(("seq2seq",), True, ("sequence_accuracy", "seq_acc")),
    "bleu": MetricInfo(("seq2seq",), True),
}


def _names_for(task: TaskKind | None) -> tuple[str, ...]:
    return tuple(short for short, info in METRICS.items() if task is None or task in info.tasks)


CLASSIFICATION_METRICS = _names_for("classification")
REGRESSION_METRICS = _names_for("regression")
SEQ2SEQ_METRICS = _names_for("seq2seq")
# Seq2seq metrics scored on decoded sequences, not on teacher-forced logits.
DECODED_METRICS = ("exact_match", "bleu")


def canonical_name(name: str, task: TaskKind | None = None) -> str:
    """The short logged name of a metric spelling, e.g. ``"accuracy" -> "acc"``.

    Args:
        name: Any spelling in :data:`METRICS`, case-insensitive.
        task: Look only among this task's metrics (``"accuracy"`` is ``"token_acc"``
            for ``"seq2seq"``), or None for the first match in the table. Defaults to None.

    Raises:
        ValueError: An unknown spelling; the message lists the allowed ones.

    Example:
        >>> canonical_name("accuracy"), canonical_name("accuracy", task="seq2seq")
        ('acc', 'token_acc')
    """
    key = str(name).lower()
    for short in _names_for(task):
        if key == short or key in METRICS[short].aliases:
            return short
    allowed = sorted({s for short in _names_for(task) for s in (short, *METRICS[short].aliases)})
    what = f"{task} metric" if task == "seq2seq" else "metric"
    raise ValueError(f"Unknown {what} {name!r}. Allowed: {', '.join(allowed)}.")


def metric_mode(name: str) -> Literal["min", "max"]:
    """``"max"`` for metrics where higher is better (accuracy, R², BLEU), ``"min"`` otherwise (loss, MAE).

    Example:
        >>> metric_mode("r2"), metric_mode("loss")
        ('max', 'min')
    """
    info = METRICS.get(name)
    return "max" if info is not None and info.higher_is_better else "min"


def build_metric(
    name: str,
    kind: Literal["multiclass", "binary", "regression", "seq2seq"],
    num_classes: int | None = None,
) -> tuple[str, Metric]:
    """Build a torchmetrics object for ``name``.

    Args:
        name: A metric spelling (``"accuracy"``, ``"f1"``, ``"mae"``, ``"bleu"``...).
        kind: ``"multiclass"`` (logits ``(B, C)``, index targets), ``"binary"``
            (one logit per sample, targets in {0, 1}), ``"regression"`` or
            ``"seq2seq"`` (see :func:`sequence_metric`).
        num_classes: Classes, required for ``"multiclass"``.

    Returns:
        ``(short_name, metric)``, e.g. ``("acc", MulticlassAccuracy(...))``.

    Example:
        >>> build_metric("accuracy", "multiclass", num_classes=10)[0]
        'acc'
    """
    if kind == "seq2seq":
        short = canonical_name(name, "seq2seq")
        return short, sequence_metric(short)
    short = canonical_name(name)
    task: TaskKind = "regression" if kind == "regression" else "classification"
    if task not in METRICS[short].tasks:
        # A spelling may name another task's metric and this task's too ("accuracy").
        try:
            short = canonical_name(name, task)
        except ValueError:
            allowed = ", ".join(_names_for(task))
            raise ValueError(f"Metric {name!r} does not apply to {task}; use one of {allowed}.") from None
    if kind == "regression":
        table = {
            "mae": torchmetrics.MeanAbsoluteError,
            "mse": torchmetrics.MeanSquaredError,
            "rmse": lambda: torchmetrics.MeanSquaredError(squared=False),
            "r2": torchmetrics.R2Score,
        }
        return short, table[short]()
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


# ----------------------------------------------------------------------------- sequences


def sequence_metric(short: str) -> Metric:
    """The torchmetrics object behind a seq2seq metric's short name.

    ``"token_acc"`` and ``"exact_match"`` are a ``MeanMetric`` fed one 0/1 hit per token
    (per sequence), so over any number of batches it computes ``hits / count``;
    ``"bleu"`` is ``BLEUScore(n_gram=4, smooth=True)`` fed :func:`sequence_bleu_strings`.

    Args:
        short: ``"token_acc"``, ``"exact_match"`` or ``"bleu"``.

    Example:
        >>> m = sequence_metric("token_acc")
        >>> m.update(torch.tensor([1.0, 1.0, 0.0])); m.update(torch.tensor([0.0])); float(m.compute())
        0.5
    """
    if short == "bleu":
        return BLEUScore(n_gram=4, smooth=True)
    if short not in ("token_acc", "exact_match"):
        raise ValueError(f"Unknown seq2seq metric {short!r}. Allowed: {', '.join(SEQ2SEQ_METRICS)}.")
    # Hits are 0/1, never NaN: the NaN check would only add a host sync per update.
    # Float64 sums stay exact counts whatever the number of tokens.
    return MeanMetric(nan_strategy="disable").set_dtype(torch.float64)


def token_hits(logits: Tensor, target: Tensor, pad_id: int = 0) -> Tensor:
    """Whether the argmax of each non-padding position is the reference token.

    Args:
        logits: ``(B, T, V)`` teacher-forced scores.
        target: ``(B, T)`` reference ids.
        pad_id: Positions with this id are left out. Defaults to 0.

    Returns:
        FloatTensor ``(N,)`` of 0/1, ``N`` the number of non-padding positions.

    Example:
        >>> token_hits(torch.eye(5)[None, [4, 3, 0]], torch.tensor([[4, 2, 0]])).tolist()
        [1.0, 0.0]
    """
    mask = target != pad_id
    return (logits.argmax(-1) == target)[mask].float()


def token_accuracy(logits: Tensor, target: Tensor, pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Correct next-token predictions among the non-padding positions.

    Args:
        logits: ``(B, T, V)`` teacher-forced scores.
        target: ``(B, T)`` reference ids.
        pad_id: Positions with this id are not scored. Defaults to 0.

    Returns:
        ``(correct, total)`` as 0-d tensors.

    Example:
        >>> correct, total = token_accuracy(torch.eye(5)[None, [4, 3, 0]], torch.tensor([[4, 2, 0]]))
        >>> int(correct), int(total)
        (1, 2)
    """
    mask = target != pad_id
    correct = ((logits.argmax(-1) == target) & mask).sum()
    return correct, mask.sum()


def trim_sequences(tokens: Tensor, eos_id: int = 2, pad_id: int = 0, bos_id: int | None = None) -> list[list[int]]:
    """Each row's ids before its first ``<eos>``, without padding (and ``<bos>`` if given).

    Args:
        tokens: ``(B, L)`` ids (decoded, or references ``tgt[:, 1:]``).
        eos_id: End-of-sequence id. Defaults to 2.
        pad_id: Padding id, left out. Defaults to 0.
        bos_id: Begin-of-sequence id to leave out as well, or None. Defaults to None.

    Example:
        >>> trim_sequences(torch.tensor([[5, 6, 2, 0], [7, 0, 0, 0]]))
        [[5, 6], [7]]
    """
    drop = {pad_id} | ({bos_id} if bos_id is not None else set())
    rows = []
    for row in tokens.tolist():
        out = []
        for i in row:
            if i == eos_id:
                break
            if i not in drop:
                out.append(i)
        rows.append(out)
    return rows


def exact_match(pred: Tensor, target: Tensor, eos_id: int = 2, pad_id: int = 0) -> Tensor:
    """Whether each decoded sequence equals its reference, up to ``<eos>``.

    Args:
        pred: ``(B, L)`` decoded ids (no ``<bos>``).
        target: ``(B, T)`` reference ids without ``<bos>`` (``tgt[:, 1:]``).
        eos_id: End-of-sequence id. Defaults to 2.
        pad_id: Padding id. Defaults to 0.

    Returns:
        BoolTensor ``(B,)``.

    Example:
        >>> exact_match(torch.tensor([[5, 6, 2]]), torch.tensor([[5, 6, 2, 0]]))
        tensor([True])
    """
    hits = [p == t for p, t in zip(trim_sequences(pred, eos_id, pad_id), trim_sequences(target, eos_id, pad_id))]
    return torch.tensor(hits, dtype=torch.bool)


def sequence_bleu_strings(
    pred: Tensor, target: Tensor, eos_id: int = 2, pad_id: int = 0
) -> tuple[list[str], list[list[str]]]:
    """Decoded and reference ids as space-separated strings, the input of torchmetrics' BLEU.

    Ids stand for tokens one to one, so n-gram matches of ids are n-gram matches of
    tokens: BLEU is computed on ids, at the vocabulary's level (characters for a
    char-level target vocabulary, words for a word-level one), without needing it.

    Args:
        pred: ``(B, L)`` decoded ids.
        target: ``(B, T)`` reference ids without ``<bos>``.
        eos_id: End-of-sequence id. Defaults to 2.
        pad_id: Padding id. Defaults to 0.

    Returns:
        ``(preds, targets)``: ``["5 6 7", ...]`` and ``[["5 6 8"], ...]``.

    Example:
        >>> sequence_bleu_strings(torch.tensor([[5, 6, 2]]), torch.tensor([[5, 7, 2, 0]]))
        (['5 6'], [['5 7']])
    """
    preds = [" ".join(map(str, s)) for s in trim_sequences(pred, eos_id, pad_id)]
    refs = [[" ".join(map(str, s))] for s in trim_sequences(target, eos_id, pad_id)]
    return preds, refs
