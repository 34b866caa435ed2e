"""Losses that accept what a dlkit network emits: logits, and integer or float targets.

Keras lets a user put ``loss="mse"`` on a softmax classifier; torch's losses each
want a particular input (logits, log-probabilities, probabilities) and target
(indices, one-hot, floats). These thin modules do the conversion once, so every
``conf/loss/*.yaml`` is a real choice for both :class:`~dlkit.tasks.Classifier`
and :class:`~dlkit.tasks.Regressor`:

* class-index targets ``(B,)`` with ``(B, C)`` outputs -> classification use:
  outputs are logits; MSE/MAE/Huber compare ``softmax(logits)`` with one-hot targets
  (Keras' "MSE on one-hot labels"), BCE treats each class as a binary problem.
* float targets with the output's shape -> used as given (regression, binary
  classification with one logit, soft labels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from dlkit.config import instantiate_option

__all__ = [
    "LossFunction",
    "LossSpec",
    "as_loss_module",
    "combine_losses",
    "CrossEntropyLoss",
    "NLLLoss",
    "BCELoss",
    "MSELoss",
    "MAELoss",
    "HuberLoss",
    "HingeLoss",
    "KLDivLoss",
]


def _is_index_target(pred: Tensor, target: Tensor) -> bool:
    return pred.ndim == target.ndim + 1 and not target.is_floating_point()


def _dense_target(pred: Tensor, target: Tensor) -> Tensor:
    """Class indices ``(B,)`` -> one-hot ``(B, C)`` in pred's dtype; floats pass through."""
    if _is_index_target(pred, target):
        return F.one_hot(target, pred.shape[-1]).to(pred.dtype)
    if target.shape != pred.shape:
        target = target.reshape(pred.shape) if target.numel() == pred.numel() else target
    if target.shape != pred.shape:
        raise ValueError(
            f"Loss expected targets of shape {tuple(pred.shape)} (or class indices of shape "
            f"{tuple(pred.shape[:-1])}), got {tuple(target.shape)}."
        )
    return target.to(pred.dtype)


class _ClassAwareLoss(nn.Module):
    """Base: ``from_logits`` says whether the network's outputs are logits."""

    def __init__(self, from_logits: bool = True) -> None:
        super().__init__()
        self.from_logits = from_logits

    def extra_repr(self) -> str:
        return f"from_logits={self.from_logits}"


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Softmax cross-entropy on logits; targets are class indices or class probabilities.

    Same arguments as ``torch.nn.CrossEntropyLoss`` (``label_smoothing``, ``weight``...).

    Call arguments:
        pred: ``(B, C)`` logits. target: ``(B,)`` int64 or ``(B, C)`` probabilities.

    Example:
        >>> CrossEntropyLoss()(torch.randn(4, 3), torch.tensor([0, 2, 1, 0]))
    """


class NLLLoss(_ClassAwareLoss):
    """Negative log-likelihood of the target class.

    With ``from_logits=True`` (dlkit networks emit logits) the outputs go through
    ``log_softmax`` first; set it False for a network that ends in ``LogSoftmax``.

    Call arguments:
        pred: ``(B, C)``. target: ``(B,)`` int64.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        log_probs = pred.log_softmax(-1) if self.from_logits else pred
        return F.nll_loss(log_probs, target)


class BCELoss(_ClassAwareLoss):
    """Binary cross-entropy, per output unit (sigmoid on logits when ``from_logits``).

    Integer class targets for a ``(B, C)`` output become one-hot, so a C-way
    classifier is trained as C independent yes/no problems (Keras'
    ``binary_crossentropy`` on one-hot labels).

    Call arguments:
        pred: ``(B, C)`` or ``(B,)``. target: same shape in [0, 1], or ``(B,)`` indices.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        target = _dense_target(pred, target)
        if self.from_logits:
            return F.binary_cross_entropy_with_logits(pred, target)
        return F.binary_cross_entropy(pred, target)


class _RegressionLoss(_ClassAwareLoss):
    """Elementwise regression loss; on class-index targets, compares probabilities."""

    def _pair(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if _is_index_target(pred, target):
            probs = pred.softmax(-1) if self.from_logits else pred
            return probs, _dense_target(pred, target)
        return pred, _dense_target(pred, target)


class MSELoss(_RegressionLoss):
    """Mean squared error. Call arguments: pred ``(B, ...)``, target same shape or ``(B,)`` indices."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(*self._pair(pred, target))


class MAELoss(_RegressionLoss):
    """Mean absolute error. Call arguments: pred ``(B, ...)``, target same shape or ``(B,)`` indices."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(*self._pair(pred, target))


class HuberLoss(_RegressionLoss):
    """Huber loss: quadratic below ``delta``, linear above. Defaults: ``delta=1.0``."""

    def __init__(self, delta: float = 1.0, from_logits: bool = True) -> None:
        super().__init__(from_logits)
        self.delta = delta

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(*self._pair(pred, target), delta=self.delta)


class HingeLoss(nn.Module):
    """Hinge loss: multi-class (Crammer-Singer style margins, ``MultiMarginLoss``) for
    index targets; binary ``mean(max(0, margin - y*pred))`` for targets in {0, 1} or {-1, 1}.

    Args:
        margin: The margin. Defaults to 1.0.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if _is_index_target(pred, target):
            return F.multi_margin_loss(pred, target, margin=self.margin)
        target = _dense_target(pred, target)
        signed = torch.where(target > 0, 1.0, -1.0).to(pred.dtype)
        return (self.margin - signed * pred).clamp_min(0).mean()


class KLDivLoss(_ClassAwareLoss):
    """Kullback-Leibler divergence KL(target || softmax(pred)), averaged over the batch.

    Call arguments:
        pred: ``(B, C)`` logits (or log-probabilities if ``from_logits=False``).
        target: ``(B, C)`` probabilities, or ``(B,)`` indices (then KL equals cross-entropy).
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        log_probs = pred.log_softmax(-1) if self.from_logits else pred
        return F.kl_div(log_probs, _dense_target(pred, target), reduction="batchmean")


# What a task accepts as a loss: a name from conf/loss, a module, or f(pred, target).
LossSpec = Union[str, nn.Module, Callable[..., Tensor]]


class LossFunction(nn.Module):
    """A plain function ``f(pred, target) -> loss`` as a module, so it can live in a ``ModuleDict``.

    Args:
        fn: The loss function.

    Example:
        >>> LossFunction(F.l1_loss)(torch.zeros(3), torch.ones(3))
        tensor(1.)
    """

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.fn(pred, target)


def as_loss_module(spec: LossSpec) -> nn.Module:
    """A loss module from a name in ``conf/loss``, a module, or a function.

    Args:
        spec: ``"cross_entropy"``, ``"huber"``... (the options of ``conf/loss``), an
            ``nn.Module``, or a callable ``f(pred, target)``.

    Raises:
        ValueError: An unknown name (the allowed ones are listed) or another type.

    Example:
        >>> type(as_loss_module("mse")).__name__
        'MSELoss'
    """
    if isinstance(spec, str):
        spec = instantiate_option("loss", spec)
    if isinstance(spec, nn.Module):
        return spec
    if callable(spec):
        return LossFunction(spec)
    raise ValueError(f"loss must be a name, an nn.Module or a callable, got {type(spec).__name__}.")


def combine_losses(
    loss_fns: Mapping[str, Callable[..., Tensor]],
    loss_weights: Mapping[str, float],
    out: Any,
    y: Any,
    single_key: str,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The total loss of one or several outputs, and each output's own loss.

    Args:
        loss_fns: Loss per output name; a network with one output has one entry under
            ``single_key``.
        loss_weights: Weight of each output's loss in the total; missing ones weigh 1.
        out: The network's output: a tensor, or a dict of tensors per output.
        y: The targets, shaped like ``out``.
        single_key: The key of the loss of a network with one output.

    Returns:
        ``(total, parts)``; ``parts`` is empty for a network with one output.

    Raises:
        ValueError: Outputs, targets and losses that do not match, naming each side.

    Example:
        >>> fns = {"a": nn.MSELoss(), "b": nn.L1Loss()}
        >>> total, parts = combine_losses(fns, {"b": 0.5}, {"a": torch.zeros(2), "b": torch.ones(2)},
        ...                               {"a": torch.ones(2), "b": torch.ones(2)}, single_key="_")
        >>> float(total), sorted(parts)
        (1.0, ['a', 'b'])
    """
    if isinstance(out, Mapping):
        if not isinstance(y, Mapping):
            raise ValueError(
                f"The network returns outputs {sorted(out)} but the targets are a single tensor; "
                "give targets as a dict with the same keys."
            )
        parts = {}
        for name, fn in loss_fns.items():
            if name not in out or name not in y:
                raise ValueError(f"Loss for output {name!r}, but outputs are {sorted(out)} and targets {sorted(y)}.")
            parts[name] = fn(out[name], y[name])
        total = sum(loss_weights.get(k, 1.0) * v for k, v in parts.items())
        return total, parts  # type: ignore[return-value]
    if single_key not in loss_fns:
        raise ValueError(f"compile() got losses per output {sorted(loss_fns)} but the network returns one tensor.")
    return loss_fns[single_key](out, y), {}
