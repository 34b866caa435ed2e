"""Normalisation layers written from tensor reductions.

:class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d` and :class:`LayerNorm`
take the same constructor arguments as their ``torch.nn`` namesakes, have the same
parameters and buffers under the same state_dict keys, and compute the same outputs,
gradients and running statistics, so a torch checkpoint loads with ``strict=True``.

Models receive their normalisation as ``norm_layer`` and resolve it with
:func:`get_norm_layer`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd.function import once_differentiable

from dlkit.layers.activations import Identity

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "NORM_LAYERS",
    "NormSpec",
    "get_norm_layer",
]


class _BatchNorm(nn.Module):
    """Batch normalisation over every dimension but the channel dimension 1.

    Subclasses only say which input ranks they accept (``_ndims``) and how to describe
    them in error messages (``_shapes``).
    """

    _ndims: tuple[int, ...] = ()
    _shapes: tuple[str, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            # Registered as None so the attribute exists but stays out of state_dict.
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Reset the running mean to 0, the running variance to 1 and the batch count."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, the scale ``weight`` to 1 and the shift to 0."""
        self.reset_running_stats()
        with torch.no_grad():
            if self.weight is not None:
                self.weight.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in self._ndims or x.shape[1] != self.num_features:
            expected = " or ".join(s.format(C=self.num_features) for s in self._shapes)
            raise ValueError(
                f"{type(self).__name__} expected input of shape {expected}, "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        reduce_dims = (0, *range(2, x.dim()))  # statistics per channel: batch and positions
        as_channel = (1, -1, *([1] * (x.dim() - 2)))  # (C,) -> (1, C, 1, ...)

        if self.training or not self.track_running_stats:
            count = x.numel() // x.shape[1]
            if self.training and count < 2:
                raise ValueError(
                    f"{type(self).__name__} expected more than 1 value per channel when "
                    f"training, got input of shape {tuple(x.shape)}"
                )
            y, mean, var = _BatchNormFunction.apply(
                x, self.weight, self.bias, reduce_dims, as_channel, self.eps
            )
            if self.training and self.track_running_stats:
                # The biased variance normalises; the running estimate stores the unbiased one.
                self._update_running_stats(mean, var * (count / (count - 1)))
            return y
        # Running statistics are constants here, and autograd's backward of these three
        # passes is already short.
        x_hat = (x - self.running_mean.reshape(as_channel)) * torch.rsqrt(
            self.running_var.reshape(as_channel) + self.eps
        )
        if self.weight is None:
            return x_hat if self.bias is None else x_hat + self.bias.reshape(as_channel)
        if self.bias is None:
            return x_hat * self.weight.reshape(as_channel)
        return (x_hat * self.weight.reshape(as_channel)).add_(self.bias.reshape(as_channel))

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked += 1
        # momentum=None means a cumulative (equal-weight) average over all batches so far.
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        self.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased_var, alpha=factor)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class _BatchNormFunction(torch.autograd.Function):
    """Batch normalisation with batch statistics, with its backward written out.

    Autograd through the forward's elementwise steps (centre, square, scale, shift)
    records about ten full-size backward kernels; the closed form needs two reductions
    and two fused passes. With ``xc = x - mean``, ``rstd = 1 / sqrt(var + eps)``,
    ``s = rstd * weight`` and ``N`` values per channel:

        dbias   = sum(dy)
        dweight = rstd * sum(dy * xc)
        dx      = s * (dy - sum(dy) / N - xc * rstd² * sum(dy * xc) / N)

    Returns ``(y, mean, var)``; the batch mean and biased variance ``(C,)`` feed the
    running estimates and carry no gradient.
    """

    @staticmethod
    def forward(  # noqa: ANN205
        ctx,  # noqa: ANN001
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        dims: tuple[int, ...],
        as_channel: tuple[int, ...],
        eps: float,
    ):
        mean = x.mean(dim=dims, keepdim=True)
        centred = x - mean
        var = centred.square().mean(dim=dims, keepdim=True)  # biased
        rstd = torch.rsqrt(var + eps)
        scale = rstd if weight is None else rstd * weight.reshape(as_channel)
        y = centred * scale
        if bias is not None:
            # In place: an out-of-place addcmul with a broadcast first operand is slower.
            y.add_(bias.reshape(as_channel))
        ctx.save_for_backward(centred, rstd, scale)
        ctx.dims, ctx.has_weight, ctx.has_bias = dims, weight is not None, bias is not None
        mean, var = mean.reshape(-1), var.reshape(-1)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, _dmean: Tensor | None, _dvar: Tensor | None):  # noqa: ANN001, ANN205
        centred, rstd, scale = ctx.saved_tensors
        dims = ctx.dims
        n = dy.numel() // dy.shape[1]
        sum_dy = dy.sum(dim=dims, keepdim=True)  # (1, C, 1, ...)
        sum_dy_xc = (dy * centred).sum(dim=dims, keepdim=True)
        dx = None
        if ctx.needs_input_grad[0]:
            # dx = dy * s - xc * (s rstd² sum(dy xc) / N) - s sum(dy) / N, in two passes
            k = scale * rstd * rstd * sum_dy_xc / n
            dx = (dy * scale).sub_(scale * sum_dy / n).addcmul_(centred, k, value=-1)
        dweight = (rstd * sum_dy_xc).reshape(-1) if ctx.has_weight and ctx.needs_input_grad[1] else None
        dbias = sum_dy.reshape(-1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None


_BATCHNORM_DOC = """Batch normalisation of {what}, like ``torch.nn.{name}``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel. In training the
    batch statistics (biased variance) normalise, and the running estimates are
    updated with the unbiased variance; in eval mode the running estimates normalise,
    unless ``track_running_stats=False``, in which case batch statistics are always used.

    Args:
        num_features: Number of channels ``C``.
        eps: Added to the variance for numerical stability. Defaults to 1e-5.
        momentum: Weight of the new batch in the running estimates,
            ``running = (1 - momentum) * running + momentum * batch``; None for a
            cumulative moving average over all batches. Defaults to 0.1.
        affine: Learn a per-channel scale ``weight`` and shift ``bias``. Defaults to True.
        track_running_stats: Keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked`` buffers. Defaults to True.
        device: Device of parameters and buffers. Defaults to None.
        dtype: Dtype of parameters and buffers. Defaults to None.
        bias: (keyword-only) Also learn the shift ``bias`` when ``affine``.
            Defaults to True.

    Call arguments:
        x: Input of shape {shapes}; the output has the same shape.

    Raises:
        ValueError: If the input rank or ``C`` does not match.

    With batch statistics the backward pass is written out (``_BatchNormFunction``: two
    reductions and two fused passes instead of autograd through every elementwise
    step); gradients of gradients through it are not supported and raise, as for
    :class:`LayerNorm`. With running statistics the layer is plain autograd.

    Example:
        >>> bn = {name}(16)
        >>> bn(torch.randn({example})).shape
        torch.Size([{example}])
    """


class BatchNorm1d(_BatchNorm):
    _ndims = (2, 3)
    _shapes = ("(N, {C})", "(N, {C}, L)")
    __doc__ = _BATCHNORM_DOC.format(
        what="features or sequences",
        name="BatchNorm1d",
        shapes="``(N, C)`` or ``(N, C, L)``",
        example="8, 16, 10",
    )


class BatchNorm2d(_BatchNorm):
    _ndims = (4,)
    _shapes = ("(N, {C}, H, W)",)
    __doc__ = _BATCHNORM_DOC.format(
        what="images", name="BatchNorm2d", shapes="``(N, C, H, W)``", example="8, 16, 5, 5"
    )


class BatchNorm3d(_BatchNorm):
    _ndims = (5,)
    _shapes = ("(N, {C}, D, H, W)",)
    __doc__ = _BATCHNORM_DOC.format(
        what="volumes", name="BatchNorm3d", shapes="``(N, C, D, H, W)``", example="2, 16, 3, 4, 4"
    )


class _LayerNormFunction(torch.autograd.Function):
    """Layer normalisation with its backward written out.

    Autograd through the six elementwise steps of the forward pass keeps six
    intermediates and runs six backward kernels; the closed form below needs only
    ``x_hat`` and ``rstd``. With ``g = dy * weight`` and ``N`` the normalised size:

        dx      = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
        dweight = sum over samples of dy * x_hat
        dbias   = sum over samples of dy
    """

    @staticmethod
    def forward(  # noqa: ANN205
        ctx,  # noqa: ANN001
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        k: int,
        eps: float,
    ):
        dims = tuple(range(-k, 0))
        centred = x - x.mean(dim=dims, keepdim=True)
        var = (centred * centred).mean(dim=dims, keepdim=True)  # biased, as in the paper
        rstd = torch.rsqrt(var.add_(eps))
        x_hat = centred.mul_(rstd)
        if weight is not None and bias is not None:
            y = torch.addcmul(bias, x_hat, weight)
        elif weight is not None:
            y = x_hat * weight
        else:
            y = x_hat.clone() if bias is None else x_hat + bias
        ctx.save_for_backward(x_hat, rstd, weight)
        ctx.k, ctx.has_bias = k, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):  # noqa: ANN001, ANN205
        x_hat, rstd, weight = ctx.saved_tensors
        dims = tuple(range(-ctx.k, 0))
        batch_dims = tuple(range(dy.dim() - ctx.k))  # every dimension that is not normalised
        g = dy * weight if weight is not None else dy
        dx = None
        if ctx.needs_input_grad[0]:
            mean_g = g.mean(dim=dims, keepdim=True)
            mean_gx = (g * x_hat).mean(dim=dims, keepdim=True)
            dx = (g - mean_g).sub_(x_hat * mean_gx).mul_(rstd)
        dweight = (dy * x_hat).sum(batch_dims) if weight is not None and ctx.needs_input_grad[1] else None
        dbias = dy.sum(batch_dims) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None


class LayerNorm(nn.Module):
    """Layer normalisation over the trailing dimensions, like ``torch.nn.LayerNorm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, with the mean and biased
    variance taken over the last ``len(normalized_shape)`` dimensions of each sample;
    the same computation in training and eval mode.

    Args:
        normalized_shape: Size of the last dimension, or the sizes of the last few.
        eps: Added to the variance for numerical stability. Defaults to 1e-5.
        elementwise_affine: Learn a scale ``weight`` (init 1) of shape
            ``normalized_shape``. Defaults to True.
        bias: Also learn a shift ``bias`` (init 0), when ``elementwise_affine``.
            Defaults to True.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.

    Call arguments:
        x: Input of shape ``(*, *normalized_shape)``; the output has the same shape.

    Raises:
        ValueError: If the trailing dimensions of the input differ from
            ``normalized_shape``.

    The backward pass is written out (see ``_LayerNormFunction``), which is faster than
    autograd through the elementwise steps; gradients of gradients (double backward)
    are not supported and raise.

    Example:
        >>> ln = LayerNorm(64)
        >>> ln(torch.randn(2, 10, 64)).shape
        torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        factory = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset the scale to 1 and the shift to 0."""
        with torch.no_grad():
            if self.weight is not None:
                self.weight.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k :]) != self.normalized_shape:
            trailing = ", ".join(str(n) for n in self.normalized_shape)
            raise ValueError(
                f"LayerNorm expected input of shape (*, {trailing}), got {tuple(x.shape)}"
            )
        return _LayerNormFunction.apply(x, self.weight, self.bias, k, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )


# ----------------------------------------------------------------------------- factory

NORM_LAYERS: dict[str, type[nn.Module]] = {
    "batchnorm": BatchNorm2d,
    "bn": BatchNorm2d,
    "batchnorm1d": BatchNorm1d,
    "bn1d": BatchNorm1d,
    "batchnorm2d": BatchNorm2d,
    "bn2d": BatchNorm2d,
    "batchnorm3d": BatchNorm3d,
    "bn3d": BatchNorm3d,
    "layernorm": LayerNorm,
    "ln": LayerNorm,
    "none": Identity,
    "identity": Identity,
}
"""Normalisation names accepted by :func:`get_norm_layer`, mapped to their classes.

``"batchnorm"``/``"bn"`` mean :class:`BatchNorm2d`, the convolutional-network case; say
``"bn1d"`` for ``(N, C)`` features.
"""

NormSpec = Union[str, type, nn.Module, Callable[..., nn.Module], None]


def get_norm_layer(spec: NormSpec, num_features: int, **kwargs: Any) -> nn.Module:
    """Build a normalisation layer for ``num_features`` channels from a name, class or callable.

    This is how every model resolves its ``norm_layer`` argument.

    Args:
        spec: One of
            - a name from :data:`NORM_LAYERS` (case, ``_`` and ``-`` ignored), or None
              for :class:`Identity` (no normalisation);
            - a class or any callable, called as ``spec(num_features, **kwargs)``
              (e.g. ``functools.partial(BatchNorm2d, eps=1e-3)``);
            - an ``nn.Module`` instance, returned as is (it is already built, so
              ``num_features`` and ``kwargs`` are ignored).
        num_features: Channels ``C`` of a BatchNorm, or the normalised last dimension of
            a LayerNorm.
        **kwargs: Extra constructor arguments, e.g. ``eps=1e-3``.

    Returns:
        An ``nn.Module``.

    Raises:
        ValueError: For an unknown name; the message lists the known ones.
        TypeError: For a spec of any other type.

    Example:
        >>> get_norm_layer("bn", 64)
        BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
        >>> get_norm_layer(None, 64)
        Identity()
    """
    if spec is None:
        return Identity()
    if isinstance(spec, str):
        cls = NORM_LAYERS.get(spec.lower().replace("_", "").replace("-", ""))
        if cls is None:
            raise ValueError(
                f"Unknown norm layer {spec!r}; expected one of {sorted(NORM_LAYERS)} "
                "(or None, a class, a module or a callable)"
            )
        return cls(num_features, **kwargs)
    if isinstance(spec, nn.Module):
        return spec
    if callable(spec):
        return spec(num_features, **kwargs)
    raise TypeError(
        "get_norm_layer expected a name, a class, a module, a callable or None, "
        f"got {type(spec).__name__}"
    )
