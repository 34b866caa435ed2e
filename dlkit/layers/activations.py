"""Activation layers written from elementwise tensor operations.

Each class takes the same constructor arguments as its ``torch.nn`` namesake, has the
same state_dict (only :class:`PReLU` has a parameter, ``weight``) and returns the same
values and gradients, within float rounding. The functional forms (:func:`sigmoid`,
:func:`tanh`, :func:`softmax`, ...) are exported too, so recurrent cells and attention
can use the same code.

Models receive their activation as ``act_layer`` and resolve it with
:func:`get_activation`, which accepts a name (``"relu"``), a class, a module or a plain
callable.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Union

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "sigmoid",
    "tanh",
    "relu",
    "relu6",
    "gelu",
    "silu",
    "softmax",
    "log_softmax",
    "Identity",
    "Lambda",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "GELU",
    "SiLU",
    "Softmax",
    "LogSoftmax",
    "ACTIVATIONS",
    "ActivationSpec",
    "get_activation",
]


# ----------------------------------------------------------------------------- functional


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed without overflow.

    Args:
        x: Input of any shape.

    Returns:
        A tensor of the same shape with values in ``(0, 1)``.

    Example:
        >>> sigmoid(torch.tensor([0.0]))
        tensor([0.5000])
    """
    # |x| written with where() so its derivative at 0 is +1 (abs() would give 0 and
    # zero the gradient there); exp(-|x|) never overflows.
    positive = x >= 0
    z = torch.exp(-torch.where(positive, x, -x))
    return torch.where(positive, 1.0 / (1.0 + z), z / (1.0 + z))


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent ``(1 - exp(-2x)) / (1 + exp(-2x))``, computed without overflow.

    Args:
        x: Input of any shape.

    Returns:
        A tensor of the same shape with values in ``[-1, 1]``.

    Example:
        >>> tanh(torch.tensor([0.0]))
        tensor([0.])
    """
    positive = x >= 0
    # expm1 keeps full relative precision for small |x|, where 1 - exp(-2|x|) cancels.
    m = torch.expm1(-2.0 * torch.where(positive, x, -x))
    magnitude = -m / (2.0 + m)
    return torch.where(positive, magnitude, -magnitude)


def relu(x: Tensor, inplace: bool = False) -> Tensor:
    """Rectified linear unit ``max(x, 0)``; the gradient at 0 is 0 and NaN passes through.

    ReLU is the threshold function at 0 with the value 0: ``x`` where ``x > 0``, else 0.
    It runs as ATen's general thresholding op (``torch.threshold``, the op behind
    ``nn.Threshold``), whose backward is C++ (``threshold_backward``: the gradient passes
    where ``x > 0`` and for NaN, so it is 0 at 0). A Python ``autograd.Function`` with a
    float-mask backward cost about 35 us more per call on LeNet-sized activations, which
    showed in every small CNN's step; every composite of elementary ops either gets 0,
    NaN or -inf wrong or runs boolean-mask kernels (see the README's speed section).
    The one visible difference from ``nn.ReLU``: ``-0.0`` comes out as ``+0.0``.

    Args:
        x: Input of any shape.
        inplace: Overwrite ``x`` with the result. Defaults to False.

    Example:
        >>> relu(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    if inplace:
        return torch.threshold_(x, 0.0, 0.0)
    return torch.threshold(x, 0.0, 0.0)


def relu6(x: Tensor, inplace: bool = False) -> Tensor:
    """ReLU capped at 6, ``min(max(x, 0), 6)``; the gradient is 0 at 0 and at 6, as in torch.

    Args:
        x: Input of any shape.
        inplace: Overwrite ``x`` with the result. Defaults to False.

    Example:
        >>> relu6(torch.tensor([-1.0, 2.0, 8.0]))
        tensor([0., 2., 6.])
    """
    return _ReLU6Function.apply(x, inplace)


class _ReLU6Function(torch.autograd.Function):
    """``min(max(x, 0), 6)`` as one clamp, with the backward in float arithmetic.

    Float, because boolean-mask kernels are several times slower on CPU. The gradient
    passes where ``0 < y < 6`` and for NaN, like ``torch.nn.ReLU6`` (hardtanh's backward):
    ``y * (6 - y)`` is positive exactly there and 0 at both kinks.
    """

    @staticmethod
    def forward(ctx, x: Tensor, inplace: bool) -> Tensor:  # noqa: ANN001
        if inplace:
            ctx.mark_dirty(x)
            y = x.clamp_(0.0, 6.0)
        else:
            y = x.clamp(0.0, 6.0)  # clamp keeps NaN
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (y,) = ctx.saved_tensors
        y = y.detach()
        return (6.0 - y).mul_(y).nan_to_num_(nan=1.0).sign_().mul_(dy), None


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit ``x * Phi(x)``.

    Args:
        x: Input of any shape.
        approximate: ``"none"`` for the exact form with ``erf``, ``"tanh"`` for the
            tanh approximation of Hendrycks & Gimpel. Defaults to ``"none"``.

    Example:
        >>> gelu(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8413])
    """
    if approximate == "none":
        return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + tanh(inner))
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(x: Tensor) -> Tensor:
    """Sigmoid linear unit (swish) ``x * sigmoid(x)``.

    Example:
        >>> silu(torch.tensor([0.0]))
        tensor([0.])
    """
    return x * sigmoid(x)


def _implicit_softmax_dim(ndim: int) -> int:
    # torch.nn.Softmax(dim=None) keeps this legacy rule; we follow it for compatibility.
    warnings.warn(
        "Softmax without dim picks one implicitly (0 for 0/1/3-D input, else 1); "
        "pass dim explicitly.",
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Softmax ``exp(x_i) / sum_j exp(x_j)`` along ``dim``.

    The row maximum is subtracted first so ``exp`` cannot overflow; softmax is
    invariant to that shift, so the result is unchanged. ``-inf`` entries (masks) get
    probability 0.

    Args:
        x: Input of any shape.
        dim: The dimension that sums to one. Defaults to -1.

    Example:
        >>> softmax(torch.tensor([[0.0, 0.0]]), dim=-1)
        tensor([[0.5000, 0.5000]])
    """
    # The shift carries no gradient (the outputs do not depend on it), so detach it.
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Logarithm of :func:`softmax`, computed as ``x - max - log(sum(exp(x - max)))``.

    Args:
        x: Input of any shape.
        dim: The dimension that is normalised. Defaults to -1.

    Example:
        >>> log_softmax(torch.tensor([0.0, 0.0]), dim=0).exp()
        tensor([0.5000, 0.5000])
    """
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


# ----------------------------------------------------------------------------- modules


class Identity(nn.Module):
    """Return the input unchanged; a placeholder where a layer is optional.

    Args:
        *args: Ignored, so it can stand in for any layer's constructor.
        **kwargs: Ignored.

    Call arguments:
        x: Any tensor, returned as is.

    Example:
        >>> Identity(16)(torch.ones(2)).shape
        torch.Size([2])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


class Lambda(nn.Module):
    """Wrap a plain function ``fn(x, **kwargs)`` as a layer (Keras' ``Lambda``).

    Args:
        fn: The function applied to the input.
        **kwargs: Extra keyword arguments passed to ``fn`` on every call.

    Call arguments:
        x: Input of any shape accepted by ``fn``.

    Example:
        >>> Lambda(torch.square)(torch.tensor([3.0]))
        tensor([9.])
    """

    def __init__(self, fn: Callable[..., Tensor], **kwargs: Any) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"Lambda expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.kwargs = kwargs

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x, **self.kwargs)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


class Sigmoid(nn.Module):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, like ``torch.nn.Sigmoid``.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> Sigmoid()(torch.zeros(2))
        tensor([0.5000, 0.5000])
    """

    def forward(self, x: Tensor) -> Tensor:
        return sigmoid(x)


class Tanh(nn.Module):
    """Hyperbolic tangent, like ``torch.nn.Tanh``.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> Tanh()(torch.zeros(2))
        tensor([0., 0.])
    """

    def forward(self, x: Tensor) -> Tensor:
        return tanh(x)


class ReLU(nn.Module):
    """Rectified linear unit ``max(x, 0)``, like ``torch.nn.ReLU``.

    Args:
        inplace: Overwrite the input instead of allocating the output; saves memory
            when the input is not needed for the backward pass. Defaults to False.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> ReLU()(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return relu(x, self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class ReLU6(nn.Module):
    """ReLU capped at 6, ``min(max(x, 0), 6)``, like ``torch.nn.ReLU6``.

    MobileNet and EfficientNet-Lite use it: the cap keeps activations in a range that
    survives 8-bit quantisation.

    Args:
        inplace: Overwrite the input instead of allocating the output. Defaults to False.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> ReLU6()(torch.tensor([-1.0, 2.0, 8.0]))
        tensor([0., 2., 6.])
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return relu6(x, self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


def _positive(x: Tensor) -> Tensor:
    """A float copy of ``x > 0`` (1.0 or 0.0; NaN counts as not positive), without autograd.

    Built from ``sign``, ``clamp`` and ``nan_to_num`` because on CPU the comparison and
    selection kernels with boolean masks (``x > 0``, ``where``, ``masked_fill``) are much
    slower than float ones (figures: the README's "Speed against torch.nn").
    """
    return x.detach().sign().clamp_min_(0.0).nan_to_num_(nan=0.0)


class LeakyReLU(nn.Module):
    """Leaky ReLU ``x if x > 0 else negative_slope * x``, like ``torch.nn.LeakyReLU``.

    Args:
        negative_slope: Slope for negative inputs. Defaults to 0.01.
        inplace: Overwrite the input. Defaults to False.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> LeakyReLU(0.1)(torch.tensor([-1.0, 2.0]))
        tensor([-0.1000,  2.0000])
    """

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        # x times a constant 0/1-derived factor (1 where x > 0, the slope elsewhere): the
        # backward is autograd's one multiply, the same gradient as torch's (the slope at
        # 0 and at NaN), and no boolean kernel runs (see _positive).
        positive = _positive(x)
        factor = (positive * -self.negative_slope).add_(self.negative_slope).add_(positive)  # exactly 1 or slope
        return x.mul_(factor) if self.inplace else x * factor

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class PReLU(nn.Module):
    """Leaky ReLU with a learned slope, like ``torch.nn.PReLU``.

    Args:
        num_parameters: 1 for one slope shared by all channels, or the number of
            channels (dimension 1 of the input) for one slope each. Defaults to 1.
        init: Initial slope. Defaults to 0.25.
        device: Device of the parameter. Defaults to None.
        dtype: Dtype of the parameter. Defaults to None.

    Call arguments:
        x: Input ``(N, C, *)`` (or ``(*)`` with ``num_parameters=1``); same shape out.

    Example:
        >>> PReLU()(torch.tensor([-4.0, 2.0]))
        tensor([-1.,  2.], grad_fn=<MulBackward0>)
    """

    def __init__(
        self,
        num_parameters: int = 1,
        init: float = 0.25,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_parameters = num_parameters
        self.init = init
        self.weight = nn.Parameter(torch.empty(num_parameters, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set every slope back to ``init``."""
        with torch.no_grad():
            self.weight.fill_(self.init)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight
        if self.num_parameters > 1:
            if x.dim() < 2 or x.shape[1] != self.num_parameters:
                raise ValueError(
                    f"PReLU expected input of shape (N, {self.num_parameters}, *), "
                    f"got {tuple(x.shape)}"
                )
            # (C,) -> (C, 1, ..., 1) so the slopes broadcast over dimension 1
            weight = weight.reshape(-1, *([1] * (x.dim() - 2)))
        # As LeakyReLU: x times exactly 1 where x > 0 and the slope elsewhere, in float
        # arithmetic; autograd gives the slope its gradient x (summed) where x <= 0.
        positive = _positive(x)
        return x * torch.addcmul(positive, 1.0 - positive, weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class ELU(nn.Module):
    """Exponential linear unit ``x if x > 0 else alpha * (exp(x) - 1)``, like ``torch.nn.ELU``.

    Args:
        alpha: Scale of the negative part. Defaults to 1.0.
        inplace: Overwrite the input. Defaults to False.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> ELU()(torch.tensor([0.0, 2.0]))
        tensor([0., 2.])
    """

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        # Only non-positive values reach expm1: exp of a large positive input would be
        # inf, and inf * 0 in the unused branch's gradient would turn into NaN.
        negative = self.alpha * torch.expm1(torch.where(x > 0, 0.0, x))
        out = torch.where(x > 0, x, negative)
        return x.copy_(out) if self.inplace else out

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class GELU(nn.Module):
    """Gaussian error linear unit ``x * Phi(x)``, like ``torch.nn.GELU``.

    Args:
        approximate: ``"none"`` (exact, with ``erf``) or ``"tanh"`` (the faster
            approximation used by GPT-2/BERT). Defaults to ``"none"``.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> GELU()(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8413])
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(nn.Module):
    """Sigmoid linear unit (swish) ``x * sigmoid(x)``, like ``torch.nn.SiLU``.

    Args:
        inplace: Overwrite the input. The backward pass needs the original input, so
            this only takes effect when autograd does not track it (inference).
            Defaults to False.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> SiLU()(torch.zeros(2))
        tensor([0., 0.])
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        out = silu(x)
        tracked = torch.is_grad_enabled() and x.requires_grad
        return x.copy_(out) if self.inplace and not tracked else out


class Softmax(nn.Module):
    """Softmax along one dimension, like ``torch.nn.Softmax``.

    Args:
        dim: The dimension that sums to one. Defaults to None, which (like torch)
            picks 0 for 0/1/3-D input and 1 otherwise, with a warning; pass it.

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> Softmax(dim=-1)(torch.zeros(1, 4))
        tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        dim = self.dim if self.dim is not None else _implicit_softmax_dim(x.dim())
        return softmax(x, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(nn.Module):
    """Log of the softmax along one dimension, like ``torch.nn.LogSoftmax``.

    Args:
        dim: The dimension that is normalised. Defaults to None (the legacy implicit
            choice described in :class:`Softmax`).

    Call arguments:
        x: Input of any shape ``(*)``; the output has the same shape.

    Example:
        >>> LogSoftmax(dim=-1)(torch.zeros(1, 2)).exp()
        tensor([[0.5000, 0.5000]])
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        dim = self.dim if self.dim is not None else _implicit_softmax_dim(x.dim())
        return log_softmax(x, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


# ----------------------------------------------------------------------------- factory

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "identity": Identity,
    "linear": Identity,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "relu6": ReLU6,
    "leaky_relu": LeakyReLU,
    "prelu": PReLU,
    "elu": ELU,
    "gelu": GELU,
    "silu": SiLU,
    "swish": SiLU,
    "softmax": Softmax,
    "log_softmax": LogSoftmax,
}
"""Activation names accepted by :func:`get_activation`, mapped to their classes."""

ActivationSpec = Union[str, type, nn.Module, Callable[[Tensor], Tensor], None]


def _lookup_key(name: str) -> str:
    # "LeakyReLU", "leaky-relu" and "leaky_relu" all name the same layer.
    return name.lower().replace("_", "").replace("-", "")


_BY_KEY = {_lookup_key(name): cls for name, cls in ACTIVATIONS.items()}


def get_activation(spec: ActivationSpec, **kwargs: Any) -> nn.Module:
    """Build an activation layer from a name, a class, a module or a function.

    This is how every model resolves its ``act_layer`` argument, so Hydra configs can
    say ``act_layer: gelu``.

    Args:
        spec: One of
            - a name from :data:`ACTIVATIONS` (case, ``_`` and ``-`` are ignored, so
              ``"LeakyReLU"`` works), or None for :class:`Identity`;
            - a layer class, built as ``spec(**kwargs)``;
            - an ``nn.Module`` instance, returned as is (it is already configured, so
              ``kwargs`` are ignored);
            - any other callable ``fn(x)``, wrapped in :class:`Lambda` with ``kwargs``.
        **kwargs: Constructor arguments, e.g. ``negative_slope=0.2`` or
            ``approximate="tanh"``.

    Returns:
        An ``nn.Module``.

    Raises:
        ValueError: For an unknown name; the message lists the known ones.
        TypeError: For a spec of any other type.

    Example:
        >>> get_activation("leaky_relu", negative_slope=0.2)
        LeakyReLU(negative_slope=0.2)
        >>> get_activation(torch.sin)
        Lambda(sin)
    """
    if spec is None:
        return Identity()
    if isinstance(spec, str):
        cls = _BY_KEY.get(_lookup_key(spec))
        if cls is None:
            raise ValueError(
                f"Unknown activation {spec!r}; expected one of {sorted(ACTIVATIONS)} "
                "(or None, a class, a module or a callable)"
            )
        return cls(**kwargs)
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, type):
        return spec(**kwargs)
    if callable(spec):
        return Lambda(spec, **kwargs)
    raise TypeError(
        "get_activation expected a name, a class, a module, a callable or None, "
        f"got {type(spec).__name__}"
    )
