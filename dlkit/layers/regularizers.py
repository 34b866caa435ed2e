"""Weight regularisers: a max-norm constraint and L1/L2 weight penalties (Keras' style).

:class:`MaxNorm` is a constraint: called on a model after an optimiser step, it
rescales every unit whose incoming weights grew beyond a norm. :func:`weight_penalty`
is a regulariser: a term added to the training loss (the tasks add it when ``l1`` or
``l2`` is set).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["MaxNorm", "weight_penalty"]


# Layers whose ``weight`` has the output units along dim 0: (out, in, *kernel).
_CONSTRAINED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class MaxNorm:
    """Max-norm weight constraint: rescale each unit's weights whose L2 norm exceeds ``max_value``.

    Called on a model after an optimiser step (e.g. from a callback), it rescales in
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
