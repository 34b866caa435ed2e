"""Squeeze-and-excitation: channel attention from globally pooled statistics (Hu et al., 2018).

A convolution only sees a local window, so every output channel is computed without
knowing what the rest of the image looks like. The SE block "squeezes" each channel to
one number (its spatial mean), passes the vector through a two-layer bottleneck, and
"excites" the channels by multiplying them with the resulting gates in ``(0, 1)``.
SE-ResNet places one block on the residual branch of every residual block, before the
addition.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from dlkit.layers.activations import ActivationSpec, get_activation

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    """Rescale each channel by a gate computed from all channels' spatial means.

    ``y = x * gate(fc2(act(fc1(mean_hw(x)))))``; ``fc1`` reduces ``C`` to
    ``rd_channels = max(1, C // reduction)`` and ``fc2`` expands back. Both are 1x1
    convolutions with bias, which equal fully connected layers on the pooled
    ``(B, C, 1, 1)`` vector and need no reshape.

    Args:
        channels: Channels ``C`` of the input.
        reduction: Bottleneck ratio ``r`` of the paper. Defaults to 16.
        rd_channels: Bottleneck width; overrides ``channels // reduction``.
            Defaults to None.
        act_layer: Activation inside the bottleneck (name, class or callable, see
            ``dlkit.layers.get_activation``). Defaults to ``"relu"``.
        gate_layer: The gating function. Defaults to ``"sigmoid"``.

    Call arguments:
        x: ``(B, C, H, W)`` feature maps.

    Returns:
        ``(B, C, H, W)``: ``x`` with every channel rescaled.

    Example:
        >>> se = SqueezeExcite(64, reduction=16)
        >>> se(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rd_channels: int | None = None,
        act_layer: ActivationSpec = "relu",
        gate_layer: ActivationSpec = "sigmoid",
    ) -> None:
        super().__init__()
        if rd_channels is None:
            if reduction < 1:
                raise ValueError(f"SqueezeExcite reduction must be >= 1, got {reduction}.")
            rd_channels = max(1, channels // reduction)
        self.channels, self.rd_channels = channels, rd_channels
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1)
        self.act = get_activation(act_layer)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1)
        self.gate = get_activation(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"SqueezeExcite expected input of shape (B, {self.channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, H, W) -> (B, C, 1, 1)
        s = self.gate(self.fc2(self.act(self.fc1(s))))
        return x * s

    def extra_repr(self) -> str:
        return f"{self.channels}, rd_channels={self.rd_channels}"
