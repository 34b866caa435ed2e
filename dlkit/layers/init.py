"""Weight initialisers, written from the random fills of tensors.

Every initialiser works in place on a tensor (a parameter or a plain tensor), runs
without recording gradients, and returns the tensor, so ``xavier_uniform_(layer.weight)``
reads like PyTorch's own. The uniform, normal, Xavier, Kaiming and orthogonal ones draw
exactly what PyTorch's namesakes draw (one ``uniform_`` or ``normal_`` fill), so with
the same seed they give the same numbers; :func:`trunc_normal_` samples the same
distribution by a different method.

The scale of each scheme comes from the tensor's fans (:func:`calculate_fan_in_and_fan_out`):
for a Linear weight ``(out_features, in_features)`` fan_in is ``in_features`` and fan_out
``out_features``; for a convolution kernel ``(out_channels, in_channels, *kernel)`` both
are multiplied by the kernel area.

:func:`init_weights` applies one scheme to a whole model; :data:`INIT_SCHEMES` lists the
names it accepts.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Protocol, TypeVar

import torch
from torch import Tensor

__all__ = [
    "calculate_gain",
    "calculate_fan_in_and_fan_out",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "zeros_",
    "ones_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "lecun_uniform_",
    "lecun_normal_",
    "uniform_fan_in_",
    "orthogonal_",
    "INIT_SCHEMES",
    "init_weights",
]

_UNIT_GAIN = (
    "linear",
    "identity",
    "sigmoid",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
_GAINS = (*_UNIT_GAIN, "tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The factor by which a nonlinearity's output std is corrected, as in PyTorch.

    ReLU halves the variance of a zero-mean signal, so its gain is ``sqrt(2)``; leaky
    ReLU with slope ``a`` keeps ``(1 + a**2) / 2`` of it, hence ``sqrt(2 / (1 + a**2))``;
    tanh's gain is ``5/3`` and SELU's ``3/4``; linear layers, convolutions and sigmoid
    have gain 1.

    Args:
        nonlinearity: One of ``"linear"``, ``"identity"``, ``"conv1d/2d/3d"``,
            ``"conv_transpose1d/2d/3d"``, ``"sigmoid"``, ``"tanh"``, ``"relu"``,
            ``"leaky_relu"``, ``"selu"``.
        param: The negative slope of ``"leaky_relu"``. Defaults to None (0.01).

    Returns:
        The gain.

    Raises:
        ValueError: For an unknown nonlinearity or a non-numeric slope.

    Example:
        >>> round(calculate_gain("relu"), 4)
        1.4142
    """
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"expected a number as the leaky_relu slope, got {param!r}")
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"Unknown nonlinearity {nonlinearity!r}; expected one of {list(_GAINS)}")


def calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """Number of inputs and outputs of each unit of a weight tensor.

    For a weight ``(out, in, *kernel)``, ``fan_in = in * prod(kernel)`` and
    ``fan_out = out * prod(kernel)``: a Linear weight ``(out_features, in_features)``
    has ``fan_in = in_features``; a Conv2d weight ``(16, 3, 5, 5)`` has
    ``fan_in = 75`` and ``fan_out = 400``. Stacked recurrent weights such as an LSTM's
    ``(4 * hidden, input)`` count as one matrix.

    Args:
        tensor: A weight with at least two dimensions.

    Returns:
        ``(fan_in, fan_out)``.

    Raises:
        ValueError: If the tensor has fewer than two dimensions.

    Example:
        >>> calculate_fan_in_and_fan_out(torch.empty(16, 3, 5, 5))
        (75, 400)
    """
    if tensor.dim() < 2:
        raise ValueError(
            "expected a tensor with at least 2 dimensions to compute fan in and fan out, "
            f"got shape {tuple(tensor.shape)}"
        )
    receptive_field = math.prod(tensor.shape[2:])  # 1 for a matrix
    fan_in = tensor.shape[1] * receptive_field
    fan_out = tensor.shape[0] * receptive_field
    return fan_in, fan_out


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"expected mode 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


# ----------------------------------------------------------------------------- basic fills


@torch.no_grad()
def uniform_(
    tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill with draws from the uniform distribution on ``[a, b)``.

    Args:
        tensor: The tensor to fill in place.
        a: Lower bound. Defaults to 0.0.
        b: Upper bound. Defaults to 1.0.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = uniform_(torch.empty(3, 5), -0.1, 0.1)
    """
    return tensor.uniform_(a, b, generator=generator)


@torch.no_grad()
def normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill with draws from the normal distribution ``N(mean, std**2)``.

    Args:
        tensor: The tensor to fill in place.
        mean: Mean. Defaults to 0.0.
        std: Standard deviation. Defaults to 1.0.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = normal_(torch.empty(3, 5), std=0.02)
    """
    return tensor.normal_(mean, std, generator=generator)


@torch.no_grad()
def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill with draws from ``N(mean, std**2)`` truncated to ``[a, b]``.

    Sampled by inverting the normal CDF on the uniform interval that maps to
    ``[a, b]``, so no draws are rejected (PyTorch now uses rejection sampling, so the
    numbers differ from its ``trunc_normal_`` for the same seed). Precision degrades
    for windows far in a tail, several ``std`` away from ``mean``. Note the bounds are
    absolute values, not multiples of ``std``, as in PyTorch and timm.

    Args:
        tensor: The tensor to fill in place.
        mean: Mean of the untruncated normal. Defaults to 0.0.
        std: Standard deviation of the untruncated normal. Defaults to 1.0.
        a: Lower cut-off. Defaults to -2.0.
        b: Upper cut-off. Defaults to 2.0.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = trunc_normal_(torch.empty(3, 5), std=0.02, a=-0.04, b=0.04)
    """

    def cdf(v: float) -> float:
        return 0.5 * (1.0 + math.erf((v - mean) / (std * math.sqrt(2.0))))

    low, high = cdf(a), cdf(b)
    # u ~ U(2 low - 1, 2 high - 1), then erfinv maps it back through the normal CDF.
    tensor.uniform_(2.0 * low - 1.0, 2.0 * high - 1.0, generator=generator)
    tensor.erfinv_().mul_(std * math.sqrt(2.0)).add_(mean)
    return tensor.clamp_(min=a, max=b)


@torch.no_grad()
def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with the value ``val``.

    Example:
        >>> constant_(torch.empty(2), 0.5)
        tensor([0.5000, 0.5000])
    """
    return tensor.fill_(val)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with zeros.

    Example:
        >>> zeros_(torch.empty(2))
        tensor([0., 0.])
    """
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    """Fill with ones.

    Example:
        >>> ones_(torch.empty(2))
        tensor([1., 1.])
    """
    return constant_(tensor, 1.0)


# ----------------------------------------------------------------------------- variance scaling


def xavier_uniform_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Glorot/Xavier uniform: ``U(-b, b)`` with ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    The variance ``b**2 / 3 = gain**2 * 2 / (fan_in + fan_out)`` balances the signal's
    variance in the forward pass (fan_in) and the gradient's in the backward pass
    (fan_out) (Glorot & Bengio, 2010).

    Args:
        tensor: A weight with at least two dimensions, filled in place.
        gain: Scale factor, see :func:`calculate_gain`. Defaults to 1.0.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = xavier_uniform_(torch.empty(256, 128), gain=calculate_gain("tanh"))
    """
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator=generator)


def xavier_normal_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Glorot/Xavier normal: ``N(0, std**2)`` with ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Args:
        tensor: A weight with at least two dimensions, filled in place.
        gain: Scale factor, see :func:`calculate_gain`. Defaults to 1.0.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = xavier_normal_(torch.empty(256, 128))
    """
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator=generator)


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    return calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He/Kaiming uniform: ``U(-b, b)`` with ``b = gain * sqrt(3 / fan)``.

    The variance ``gain**2 / fan`` keeps activations (``mode="fan_in"``) or gradients
    (``mode="fan_out"``) at unit scale through ReLU networks (He et al., 2015). With the
    defaults, ``a=0`` and leaky ReLU, the gain is ReLU's ``sqrt(2)``.

    Args:
        tensor: A weight with at least two dimensions, filled in place.
        a: Negative slope of the leaky ReLU that follows. Defaults to 0.0.
        mode: ``"fan_in"`` or ``"fan_out"``. Defaults to ``"fan_in"``.
        nonlinearity: Passed to :func:`calculate_gain` (``"relu"``, ``"leaky_relu"``,
            ``"linear"``, ``"tanh"``, ``"sigmoid"``, ...). Defaults to ``"leaky_relu"``.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = kaiming_uniform_(torch.empty(64, 3, 3, 3), mode="fan_out", nonlinearity="relu")
    """
    if tensor.numel() == 0:  # nothing to fill, and its fans may be zero
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator=generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He/Kaiming normal: ``N(0, std**2)`` with ``std = gain / sqrt(fan)``.

    Args:
        tensor: A weight with at least two dimensions, filled in place.
        a: Negative slope of the leaky ReLU that follows. Defaults to 0.0.
        mode: ``"fan_in"`` or ``"fan_out"``. Defaults to ``"fan_in"``.
        nonlinearity: Passed to :func:`calculate_gain`. Defaults to ``"leaky_relu"``.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = kaiming_normal_(torch.empty(64, 3, 3, 3), mode="fan_out", nonlinearity="relu")
    """
    if tensor.numel() == 0:
        return tensor
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), generator=generator)


def lecun_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun uniform: ``U(-b, b)`` with ``b = sqrt(3 / fan_in)``, so the variance is ``1 / fan_in``.

    Args:
        tensor: A weight with at least two dimensions, filled in place.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = lecun_uniform_(torch.empty(32, 16))
    """
    return kaiming_uniform_(tensor, nonlinearity="linear", generator=generator)


def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun normal: ``N(0, 1 / fan_in)``, the initialiser SELU networks need.

    Unlike Keras, which truncates at two standard deviations and rescales, this draws
    from the plain normal; both have variance ``1 / fan_in``.

    Args:
        tensor: A weight with at least two dimensions, filled in place.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = lecun_normal_(torch.empty(32, 16))
    """
    return kaiming_normal_(tensor, nonlinearity="linear", generator=generator)


def uniform_fan_in_(
    tensor: Tensor, fan_in: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: PyTorch's default for Linear/Conv layers.

    ``torch.nn.Linear`` and the convolutions draw both weight and bias this way (their
    weight init, Kaiming uniform with ``a=sqrt(5)``, works out to the same bound). The
    variance is ``1 / (3 * fan_in)``, a third of LeCun's. A bias has no fan of its own,
    so pass the weight's ``fan_in``.

    Args:
        tensor: The tensor to fill in place.
        fan_in: Number of inputs per unit. Defaults to None, meaning computed from
            ``tensor`` (which then needs at least two dimensions).
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> layer_weight, layer_bias = torch.empty(8, 4), torch.empty(8)
        >>> w = uniform_fan_in_(layer_weight)
        >>> b = uniform_fan_in_(layer_bias, fan_in=4)
    """
    if fan_in is None:
        fan_in, _ = calculate_fan_in_and_fan_out(tensor)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform_(tensor, -bound, bound, generator=generator)


@torch.no_grad()
def orthogonal_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """(Semi-)orthogonal matrix, scaled by ``gain`` (Saxe et al., 2013).

    The tensor is seen as a matrix ``(rows, everything else)``; its rows (or columns,
    whichever are fewer) come out orthonormal. Used for recurrent weights, whose
    repeated products neither blow up nor vanish when orthogonal.

    Args:
        tensor: A tensor with at least two dimensions, filled in place.
        gain: Scale factor. Defaults to 1.0.
        generator: Random generator. Defaults to None (the global one).

    Example:
        >>> w = orthogonal_(torch.empty(4, 4))
        >>> torch.allclose(w @ w.T, torch.eye(4), atol=1e-5)
        True
    """
    if tensor.dim() < 2:
        raise ValueError(
            f"expected a tensor with at least 2 dimensions, got shape {tuple(tensor.shape)}"
        )
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    gaussian = tensor.new_empty((rows, cols)).normal_(0.0, 1.0, generator=generator)
    tall = gaussian if rows >= cols else gaussian.T  # QR wants at least as many rows
    q, r = torch.linalg.qr(tall)
    # Fixing the signs of R's diagonal makes Q uniformly (Haar) distributed.
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if rows < cols:
        q = q.T
    return tensor.copy_(q.reshape(tensor.shape)).mul_(gain)


# ----------------------------------------------------------------------------- whole models

INIT_SCHEMES: dict[str, Callable[..., Tensor] | None] = {
    "default": None,
    "xavier_uniform": xavier_uniform_,
    "glorot_uniform": xavier_uniform_,
    "xavier_normal": xavier_normal_,
    "glorot_normal": xavier_normal_,
    "kaiming_uniform": kaiming_uniform_,
    "he_uniform": kaiming_uniform_,
    "kaiming_normal": kaiming_normal_,
    "he_normal": kaiming_normal_,
    "lecun_uniform": lecun_uniform_,
    "lecun_normal": lecun_normal_,
    "uniform_fan_in": uniform_fan_in_,
    "orthogonal": orthogonal_,
    "normal": normal_,
    "trunc_normal": trunc_normal_,
    "zeros": zeros_,
}
"""Scheme names accepted by :func:`init_weights`, mapped to the weight initialiser
(None for ``"default"``, which keeps each module's own initialisation)."""

# Parameter names that are weight matrices wherever they appear: recurrent layers and
# cells (torch.nn's and dlkit's share these names) and packed attention projections.
_RECURRENT_WEIGHTS = ("weight_ih", "weight_hh")
_RECURRENT_BIASES = ("bias_ih", "bias_hh")
_PROJECTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


class _ModuleTree(Protocol):
    def modules(self) -> Iterator[Any]: ...


_Model = TypeVar("_Model", bound=_ModuleTree)


def _is_dense(module: Any) -> bool:
    # Duck-typed, so dlkit's and torch's Linear/Conv classes are recognised alike.
    linear = hasattr(module, "in_features") and hasattr(module, "out_features")
    conv = hasattr(module, "in_channels") and hasattr(module, "kernel_size")
    return linear or conv


def _is_norm(module: Any) -> bool:
    return "Norm" in type(module).__name__


def init_weights(module: _Model, scheme: str = "default", **kwargs: Any) -> _Model:
    """Re-initialise a whole model with one scheme, in place.

    What is touched, and how:

    - the ``weight`` of every Linear and convolution (any module with ``in_features`` and
      ``out_features``, or ``in_channels`` and ``kernel_size``), every recurrent
      ``weight_ih*``/``weight_hh*`` and attention ``*_proj_weight``: the scheme;
    - their biases (``bias``, ``bias_ih*``, ``bias_hh*``, ``in_proj_bias``): zero, the
      usual choice with these schemes (Keras' default), rather than PyTorch's small
      uniform biases;
    - normalisation layers (class name containing ``Norm``): weight 1, bias 0;
    - anything else (embeddings, PReLU slopes, positional or token parameters) keeps
      its values.

    ``"default"`` touches nothing: every module keeps the initialisation its
    constructor gave it.

    Args:
        module: The model.
        scheme: A key of :data:`INIT_SCHEMES`. Defaults to ``"default"``.
        **kwargs: Passed to the initialiser, e.g. ``nonlinearity="relu"`` or
            ``mode="fan_out"`` for Kaiming, ``gain=...`` for Xavier, ``std=0.02`` for
            ``"normal"``.

    Returns:
        The same module, for chaining.

    Raises:
        ValueError: For an unknown scheme; the message lists the known ones.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
        >>> net = init_weights(net, "kaiming_normal", nonlinearity="relu", mode="fan_out")
        >>> net[0].bias.abs().sum().item(), net[1].weight.mean().item()
        (0.0, 1.0)
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"Unknown init scheme {scheme!r}; expected one of {list(INIT_SCHEMES)}")
    fill = INIT_SCHEMES[scheme]
    if fill is None:
        return module
    for sub in module.modules():
        norm, dense = _is_norm(sub), _is_dense(sub)
        for name, param in sub.named_parameters(recurse=False):
            if norm:
                if name == "weight":
                    ones_(param)
                elif name == "bias":
                    zeros_(param)
            elif (
                (dense and name == "weight")
                or name.startswith(_RECURRENT_WEIGHTS)
                or name in _PROJECTION_WEIGHTS
            ):
                fill(param, **kwargs)
            elif (
                (dense and name == "bias")
                or name.startswith(_RECURRENT_BIASES)
                or name == "in_proj_bias"
            ):
                zeros_(param)
    return module
