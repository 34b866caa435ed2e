"""Max pooling, like ``torch.nn.MaxPool2d``, with the 2x2 window written in tensor operations.

The 2x2, stride-2 window (LeNet's and VGG's pooling) is two elementwise maxima: one over
the pairs of neighbouring columns, one over the pairs of neighbouring rows of the
result. On the CPUs dlkit is benchmarked on, that is 2-7x faster than torch's CPU
max-pooling kernel, which also computes an int64 index per output whether or not
anyone asks for it (forward and backward of (64, 6, 28, 28): about 0.7 against 1.2 ms;
of (32, 64, 32, 32): about 5 against 10 ms; ``scripts/bench_layers.py``).

The backward routes each output's gradient to the element torch picks: the first
maximum of the window in row-major order (ties go to the top row, then to the left
column), and, in a window holding NaN, its last NaN. For windows of finite values the
forward keeps two 0/1 masks, ``sign(max - left)`` per row pair ("the right column beats
the left") and ``sign(max - top)`` per window ("the bottom row beats the top"); the
difference of two floats is 0 exactly when they are equal (gradual underflow; with
``torch.set_flush_denormal(True)`` two values closer than the smallest normal number,
about 1e-38 in float32, count as a tie), so the masks are exact. Infinities and NaN make a difference NaN; that batch then takes the
exact, slower path that finds each window's index by comparison. Any other
configuration (other kernel sizes, padding, dilation, odd sizes, ``return_indices``,
channels-last or integer inputs) runs torch's own kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaxPool2d", "max_pool2x2"]


def _window_masks(x: Tensor, m: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(right_wins, bottom_wins)`` of each 2x2 window of ``x``, exact for every value.

    ``x`` is ``(N, C, H, W)``, ``m`` its column-pair maxima ``(N, C, H, W/2)``, ``y`` the
    pooled output ``(N, C, H/2, W/2)``. ``right_wins`` is ``(N, C, H, W/2)``, 1 where the
    right element of a row pair takes the gradient; ``bottom_wins`` is ``(N, C, H/2, W/2)``.
    """
    N, C, H, W = x.shape
    pairs = x.view(N, C, H, W // 2, 2)
    left = pairs[..., 0]
    # Where every pair maximum m is finite, so is y, and both differences are >= 0 and 0
    # exactly at ties. A finite sum proves that (an overflowing sum only sends a batch of
    # finite values down the exact path too); torch.sign would map a NaN difference to 0.
    if bool(m.sum().isfinite()):
        right_wins = torch.sub(m, left).sign_()
        bottom_wins = torch.sub(y, m.view(N, C, H // 2, 2, W // 2)[:, :, :, 0]).sign_()
        return right_wins, bottom_wins
    # An infinity or NaN somewhere: index each window as torch's kernel does, scanning
    # (0,0), (0,1), (1,0), (1,1) and taking a value when it is greater or NaN.
    windows = (
        x.view(N, C, H // 2, 2, W // 2, 2)
        .permute(0, 1, 2, 4, 3, 5)
        .reshape(N, C, H // 2, W // 2, 4)
    )
    is_nan = windows.isnan()
    last_nan = 3 - is_nan.flip(-1).to(torch.uint8).argmax(-1)
    first_max = (windows == y.unsqueeze(-1)).to(torch.uint8).argmax(-1)  # all -inf: the first
    index = torch.where(is_nan.any(-1), last_nan, first_max)  # (N, C, H/2, W/2) in 0..3
    bottom_wins = (index >= 2).to(x.dtype)
    # The row that loses gets no gradient, so its column mask may be anything: the winner's.
    right_wins = (
        (index % 2)
        .to(x.dtype)
        .unsqueeze(3)
        .expand(N, C, H // 2, 2, W // 2)
        .reshape(N, C, H, W // 2)
    )
    return right_wins, bottom_wins


def _pool(x: Tensor) -> tuple[Tensor, Tensor]:
    N, C, H, W = x.shape
    pairs = x.view(N, C, H, W // 2, 2)
    m = torch.maximum(pairs[..., 0], pairs[..., 1])  # (N, C, H, W/2); NaN propagates
    rows = m.view(N, C, H // 2, 2, W // 2)
    return m, torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1])


class _MaxPool2x2Function(torch.autograd.Function):
    """2x2 stride-2 max pooling of a contiguous ``(N, C, H, W)`` input, H and W even.

    The backward is plain tensor operations (differentiable again: double backward
    works, as for torch's kernel).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        m, y = _pool(x)
        ctx.save_for_backward(*_window_masks(x, m, y))
        ctx.in_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:
        right_wins, bottom_wins = ctx.saved_tensors
        N, C, H, W = ctx.in_shape
        if torch.is_grad_enabled():
            # create_graph: multiply by both masks, so that the gradient of this backward
            # is a sum in which all terms but one are exactly 0, like torch's gather
            # (dy - dy * mask is the same value, but its gradient rounds).
            d_rows = torch.stack((dy * (1 - bottom_wins), dy * bottom_wins), dim=3).view(
                N, C, H, W // 2
            )
            d_left, d_right = d_rows * (1 - right_wins), d_rows * right_wins
        else:
            d_bottom = dy * bottom_wins
            d_rows = torch.stack((dy - d_bottom, d_bottom), dim=3).view(N, C, H, W // 2)  # d m
            d_right = d_rows * right_wins
            d_left = d_rows - d_right
        if d_rows.dtype in _INTERLEAVE_AS_COMPLEX:
            # Interleaving two tensors is building a complex one (real, imaginary
            # alternate in memory): half the time of stack's strided writes here.
            return torch.view_as_real(torch.complex(d_left, d_right)).view(N, C, H, W)
        return torch.stack((d_left, d_right), dim=-1).view(N, C, H, W)


_INTERLEAVE_AS_COMPLEX = (torch.float32, torch.float64)


def _fast_path_applies(x: Tensor) -> bool:
    return (
        x.dim() == 4
        and x.is_floating_point()
        and x.is_contiguous()
        and x.shape[-2] % 2 == 0
        and x.shape[-1] % 2 == 0
        and x.numel() > 0
    )


def max_pool2x2(x: Tensor) -> Tensor:
    """2x2 max pooling with stride 2 of ``(N, C, H, W)`` (or ``(C, H, W)``); torch's kernel where the fast path does not apply.

    Args:
        x: Input; the fast path needs a contiguous floating-point tensor with even ``H``
            and ``W`` (others go to ``torch.nn.functional.max_pool2d``, same results).

    Returns:
        ``(N, C, H // 2, W // 2)`` (or ``(C, H // 2, W // 2)``), equal to
        ``F.max_pool2d(x, 2)``, with the same gradient.

    Example:
        >>> max_pool2x2(torch.arange(16.0).view(1, 1, 4, 4)).flatten().tolist()
        [5.0, 7.0, 13.0, 15.0]
    """
    batched = x if x.dim() == 4 else x.unsqueeze(0)
    if not _fast_path_applies(batched):
        return F.max_pool2d(x, 2)
    if torch.is_grad_enabled() and batched.requires_grad:
        y = _MaxPool2x2Function.apply(batched)
    else:
        y = _pool(batched)[1]
    return y if x.dim() == 4 else y.squeeze(0)


class MaxPool2d(nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` with the common 2x2, stride-2 window computed by dlkit.

    Same constructor, attributes, ``repr`` and (empty) state_dict as ``torch.nn.MaxPool2d``,
    and ``isinstance(layer, nn.MaxPool2d)`` holds. With ``kernel_size=2``, stride 2, no
    padding, dilation 1 and no returned indices, a contiguous floating-point input with
    even height and width goes through :func:`max_pool2x2`; every other call runs torch's
    kernel. The results and gradients are the same either way (see the module docstring).

    Args:
        kernel_size, stride, padding, dilation, return_indices, ceil_mode: As for
            ``torch.nn.MaxPool2d``.

    Call arguments:
        x: ``(N, C, H, W)`` or ``(C, H, W)``.

    Example:
        >>> MaxPool2d(2)(torch.randn(8, 3, 32, 32)).shape
        torch.Size([8, 3, 16, 16])
    """

    def _is_2x2(self) -> bool:
        def pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
            return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

        stride = self.stride if self.stride is not None else self.kernel_size
        return (
            pair(self.kernel_size) == (2, 2)
            and pair(stride) == (2, 2)
            and pair(self.padding) == (0, 0)
            and pair(self.dilation) == (1, 1)
            and not self.return_indices
        )

    def forward(self, x: Tensor) -> Tensor:
        # With even sizes ceil_mode changes nothing; odd sizes take torch's kernel anyway.
        if self._is_2x2() and x.dim() in (3, 4) and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
            return max_pool2x2(x)
        return super().forward(x)
