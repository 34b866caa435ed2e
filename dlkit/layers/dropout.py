"""Regularisation: dropout layers, Monte Carlo dropout, a max-norm constraint, weight penalties.

:class:`Dropout` is inverted dropout (the kept units are scaled by ``1 / (1 - p)`` in
training, so eval mode is the identity), with a ``p`` that schedules may change while
training. :func:`mc_predict` keeps dropout on at inference to estimate uncertainty.
:class:`MaxNorm` and :func:`weight_penalty` are the Keras-style weight constraint and
L1/L2 regularisers, applied by a callback and by the task's loss respectively.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["Dropout", "Dropout2d", "mc_predict", "MaxNorm", "weight_penalty"]


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


_DROPOUT_TYPES = (
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
            if isinstance(module, _DROPOUT_TYPES):
                module.train()
        outputs = torch.stack([model(x) for _ in range(samples)])  # (samples, *out)
    finally:
        # Set flags one by one: .train(flag) would recurse and overwrite the children.
        for module, flag in previous:
            module.training = flag
    return outputs.mean(dim=0), outputs.std(dim=0, correction=0)


# Layers whose ``weight`` has the output units along dim 0: (out, in, *kernel).
_CONSTRAINED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class MaxNorm:
    """Max-norm weight constraint: rescale each unit's weights whose L2 norm exceeds ``max_value``.

    Called on a model (a callback does it after every optimiser step), it rescales in
    place every slice ``w[i]`` along ``dim`` whose L2 norm exceeds ``max_value`` to norm
    exactly ``max_value``; smaller slices are left unchanged. With the default
    ``dim=0`` a unit is one output neuron: a row of a ``Linear`` weight
    ``(out_features, in_features)``, i.e. the incoming weights of one neuron (Keras'
    ``MaxNorm(axis=0)`` on its ``(in, out)`` kernel), or one filter
    ``(in_channels, kH, kW)`` of a ``Conv`` weight. Biases are not constrained.

    Args:
        max_value: The maximum norm of a unit's weights. Defaults to 3.0.
        dim: The dimension that enumerates units; the norm is taken over all the other
            dimensions. Defaults to 0.
        param_names: Full parameter names (as in ``model.named_parameters()``) to
            constrain instead of the default set, e.g. ``["rnn.weight_hh_l0"]``.
            Defaults to None, meaning the ``weight`` of every ``Linear`` and
            ``Conv1d/2d/3d`` module.

    Call arguments:
        module: The model whose weights are constrained.

    Raises:
        ValueError: If ``max_value <= 0`` or a name in ``param_names`` does not exist.

    Example:
        >>> net = nn.Linear(4, 2)
        >>> MaxNorm(max_value=0.5)(net)
        >>> bool((net.weight.norm(dim=1) <= 0.5 + 1e-6).all())
        True
    """

    def __init__(
        self, max_value: float = 3.0, dim: int = 0, param_names: Iterable[str] | None = None
    ) -> None:
        if max_value <= 0:
            raise ValueError(f"expected max_value > 0, got {max_value}")
        self.max_value = float(max_value)
        self.dim = dim
        self.param_names = None if param_names is None else list(param_names)

    def _targets(self, module: nn.Module) -> Iterator[nn.Parameter]:
        if self.param_names is None:
            for sub in module.modules():
                if isinstance(sub, _CONSTRAINED_TYPES):
                    yield sub.weight
            return
        params = dict(module.named_parameters())
        for name in self.param_names:
            if name not in params:
                raise ValueError(
                    f"MaxNorm expected a parameter named {name!r}, got names {sorted(params)}"
                )
            yield params[name]

    @torch.no_grad()
    def __call__(self, module: nn.Module) -> None:
        for weight in self._targets(module):
            dim = self.dim % weight.dim()
            other_dims = [d for d in range(weight.dim()) if d != dim]
            norms = weight.norm(p=2, dim=other_dims, keepdim=True)
            scale = torch.where(norms > self.max_value, self.max_value / norms, 1.0)
            weight.mul_(scale)

    def __repr__(self) -> str:
        return f"MaxNorm(max_value={self.max_value}, dim={self.dim})"


def weight_penalty(module: nn.Module, l1: float = 0.0, l2: float = 0.0) -> Tensor:
    """L1/L2 penalty ``l1 * sum(|w|) + l2 * sum(w**2)`` over a model's weight tensors.

    "Weights" are the trainable parameters with at least two dimensions: Linear and
    recurrent matrices, convolution kernels, embeddings. One-dimensional parameters —
    biases, BatchNorm/LayerNorm scales and shifts, PReLU slopes — are not penalised, as
    shrinking them towards zero does not reduce capacity. Frozen parameters are
    skipped: their penalty would be a constant. Note ``l2`` multiplies ``sum(w**2)``
    without a factor 1/2, as in Keras.

    Args:
        module: The model.
        l1: Coefficient of the L1 term. Defaults to 0.0.
        l2: Coefficient of the L2 term. Defaults to 0.0.

    Returns:
        A scalar tensor, differentiable with respect to the weights (0 if both
        coefficients are 0 or there are no weights).

    Raises:
        ValueError: If ``l1`` or ``l2`` is negative.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> loss = weight_penalty(net, l2=1e-4)
        >>> loss.shape
        torch.Size([])
    """
    if l1 < 0 or l2 < 0:
        raise ValueError(f"expected l1 >= 0 and l2 >= 0, got l1={l1}, l2={l2}")
    weights = [p for p in module.parameters() if p.requires_grad and p.dim() >= 2]
    if not weights or (l1 == 0 and l2 == 0):
        first = next(module.parameters(), None)
        return torch.zeros((), device=None if first is None else first.device)
    penalty = weights[0].new_zeros(())
    for w in weights:
        if l1:
            penalty = penalty + l1 * w.abs().sum()
        if l2:
            penalty = penalty + l2 * (w * w).sum()
    return penalty
