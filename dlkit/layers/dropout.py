"""Dropout layers and Monte Carlo dropout.

:class:`Dropout` is inverted dropout (the kept units are scaled by ``1 / (1 - p)`` in
training, so eval mode is the identity), with a ``p`` that schedules may change while
training. :func:`mc_predict` keeps dropout on at inference to estimate uncertainty.
Weight constraints and penalties are in :mod:`dlkit.layers.regularizers`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["DROPOUT_TYPES", "Dropout", "Dropout2d", "mc_predict"]


class _DropoutNd(nn.Module):
    """Shared ``p`` / ``inplace`` handling and masking for the dropout layers."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = p
        self.inplace = inplace

    @property
    def p(self) -> float:
        """Probability of zeroing an element; may be changed between steps."""
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"expected p in [0, 1], got {value}")
        self._p = float(value)

    def _mask_shape(self, x: Tensor) -> tuple[int, ...]:
        return tuple(x.shape)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self._p == 0.0:
            return x
        if self._p == 1.0:
            # Multiplying (rather than returning new zeros) keeps the graph, so the
            # gradient is a well-defined zero.
            return x.mul_(0.0) if self.inplace else x * 0.0
        keep = 1.0 - self._p
        # One Bernoulli draw per mask element, scaled so the expectation equals x.
        scale = torch.empty(self._mask_shape(x), dtype=x.dtype, device=x.device)
        scale.bernoulli_(keep).div_(keep)
        return x.mul_(scale) if self.inplace else x * scale

    def extra_repr(self) -> str:
        return f"p={self._p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Inverted dropout: zero elements with probability ``p`` in training, like ``nn.Dropout``.

    Kept elements are multiplied by ``1 / (1 - p)`` so the expected output equals the
    input, and eval mode is the identity. ``p`` is a plain attribute that dropout
    schedules may change during training; it has no state_dict entries.

    Args:
        p: Probability of zeroing an element, in ``[0, 1]``. Defaults to 0.5.
        inplace: Overwrite the input. Defaults to False.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Raises:
        ValueError: If ``p`` (at construction or later) is outside ``[0, 1]``.

    Example:
        >>> drop = Dropout(p=0.2)
        >>> drop.p = 0.1  # e.g. from a dropout schedule
        >>> drop.eval()(torch.ones(3))
        tensor([1., 1., 1.])
    """


class Dropout2d(_DropoutNd):
    """Channel dropout: zero whole feature maps with probability ``p``, like ``nn.Dropout2d``.

    Neighbouring pixels of a feature map are strongly correlated, so dropping single
    pixels regularises little; dropping a channel does. Kept channels are scaled by
    ``1 / (1 - p)``.

    Args:
        p: Probability of zeroing a channel, in ``[0, 1]``. Defaults to 0.5.
        inplace: Overwrite the input. Defaults to False.

    Call arguments:
        x: Input of shape ``(N, C, H, W)``; the output has the same shape.

    Raises:
        ValueError: If ``p`` is outside ``[0, 1]`` or the input is not 4-D.

    Example:
        >>> Dropout2d(p=0.5)(torch.ones(8, 16, 4, 4)).shape
        torch.Size([8, 16, 4, 4])
    """

    def _mask_shape(self, x: Tensor) -> tuple[int, ...]:
        if x.dim() != 4:
            raise ValueError(
                f"Dropout2d expected input of shape (N, C, H, W), got {tuple(x.shape)}"
            )
        N, C, _, _ = x.shape
        return (N, C, 1, 1)  # one draw per channel, broadcast over H and W


# Every module whose `p` is a dropout rate: dlkit's dropout layers and torch's.
DROPOUT_TYPES = (
    _DropoutNd,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@torch.no_grad()
def mc_predict(model: nn.Module, x: Tensor, samples: int = 30) -> tuple[Tensor, Tensor]:
    """Monte Carlo dropout prediction: the mean and spread of ``samples`` stochastic passes.

    Dropout layers (dlkit's and ``torch.nn``'s) are switched to training mode while
    every other module is in eval mode (BatchNorm uses its running statistics), and the
    model is run ``samples`` times without gradients. Every module's own training flag
    is restored afterwards, even if a forward pass raises.

    Args:
        model: Any model containing dropout layers.
        x: The model input, e.g. ``(N, features)``.
        samples: Number of stochastic forward passes. Defaults to 30.

    Returns:
        ``(mean, std)`` over the samples, each shaped like one model output; ``std`` is
        the population standard deviation, so it is exactly 0 without dropout.

    Raises:
        ValueError: If ``samples < 1``.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), Dropout(0.2), nn.Linear(8, 1))
        >>> mean, std = mc_predict(model, torch.randn(5, 4), samples=50)
        >>> mean.shape, std.shape
        (torch.Size([5, 1]), torch.Size([5, 1]))
    """
    if samples < 1:
        raise ValueError(f"expected samples >= 1, got {samples}")
    previous = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, DROPOUT_TYPES):
                module.train()
        outputs = torch.stack([model(x) for _ in range(samples)])  # (samples, *out)
    finally:
        # Set flags one by one: .train(flag) would recurse and overwrite the children.
        for module, flag in previous:
            module.training = flag
    return outputs.mean(dim=0), outputs.std(dim=0, correction=0)
