"""The Inception module of GoogLeNet (Szegedy et al., 2015) and its conv-norm-act unit.

An Inception module runs four branches side by side on the same input (a 1x1
convolution; 1x1 then 3x3; 1x1 then a larger window; 3x3 max-pooling then 1x1) and
concatenates their outputs along the channels. The 1x1 "reduce" convolutions keep
the wide windows cheap, which is what let GoogLeNet be 22 layers deep with 12x fewer
parameters than AlexNet.

The sub-module names (``branch1``, ``branch2.0``, ``branch4.1.conv``, ``conv``/``bn``)
are torchvision's, so its GoogLeNet weights load into :class:`dlkit.models.GoogLeNet`
unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from dlkit.layers.activations import ActivationSpec, get_activation
from dlkit.layers.normalization import NormSpec, get_norm_layer

__all__ = ["BasicConv2d", "Inception"]


class BasicConv2d(nn.Module):
    """Convolution, batch normalisation, activation: GoogLeNet's unit.

    The convolution has no bias when a normalisation follows (its shift would be
    cancelled by the mean subtraction); with ``norm_layer=None`` it gets one.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Convolution window. Defaults to 1.
        stride: Convolution stride. Defaults to 1.
        padding: Zero padding on each side. Defaults to 0.
        act_layer: Activation (see ``dlkit.layers.get_activation``). Defaults to ``"relu"``.
        norm_layer: Normalisation (see ``dlkit.layers.get_norm_layer``), or None.
            Defaults to ``"batchnorm"``.
        norm_eps: ``eps`` of the normalisation; 1e-3 is the value GoogLeNet's
            torchvision weights were trained with. Defaults to 1e-3.

    Call arguments:
        x: ``(B, in_channels, H, W)``.

    Returns:
        ``(B, out_channels, H', W')`` with ``H' = (H + 2 * padding - kernel_size) // stride + 1``.

    Example:
        >>> unit = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        >>> unit(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        act_layer: ActivationSpec = "relu",
        norm_layer: NormSpec = "batchnorm",
        norm_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            bias=norm_layer is None,
        )
        self.bn = get_norm_layer(norm_layer, out_channels, eps=norm_eps)
        self.act = get_activation(act_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches concatenated along the channels (GoogLeNet's module).

    The argument names are the column names of the paper's Table 1.

    Args:
        in_channels: Input channels.
        ch1x1: Output channels of branch 1, a 1x1 convolution.
        ch3x3red: Channels of branch 2's 1x1 reduction.
        ch3x3: Output channels of branch 2's 3x3 convolution.
        ch5x5red: Channels of branch 3's 1x1 reduction.
        ch5x5: Output channels of branch 3's wide convolution.
        pool_proj: Output channels of branch 4's 1x1 projection after 3x3 max-pooling.
        branch3_kernel_size: Window of branch 3's wide convolution. The paper says 5;
            torchvision's GoogLeNet (and the ImageNet weights trained with it) use 3,
            so 3 keeps weight compatibility. Defaults to 3.
        act_layer: Activation of every unit. Defaults to ``"relu"``.
        norm_layer: Normalisation of every unit, or None. Defaults to ``"batchnorm"``.
        norm_eps: ``eps`` of the normalisation. Defaults to 1e-3.

    Call arguments:
        x: ``(B, in_channels, H, W)``.

    Returns:
        ``(B, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)``: every branch keeps the size.

    Example:
        >>> block = Inception(192, 64, 96, 128, 16, 32, 32)   # GoogLeNet's inception3a
        >>> block(torch.randn(2, 192, 28, 28)).shape
        torch.Size([2, 256, 28, 28])
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        branch3_kernel_size: int = 3,
        act_layer: ActivationSpec = "relu",
        norm_layer: NormSpec = "batchnorm",
        norm_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        if branch3_kernel_size % 2 != 1:
            raise ValueError(
                "Inception branch3_kernel_size must be odd (to keep the size), "
                f"got {branch3_kernel_size}."
            )
        unit = {"act_layer": act_layer, "norm_layer": norm_layer, "norm_eps": norm_eps}
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1, **unit)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, 1, **unit),
            BasicConv2d(ch3x3red, ch3x3, 3, padding=1, **unit),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, 1, **unit),
            BasicConv2d(
                ch5x5red, ch5x5, branch3_kernel_size, padding=branch3_kernel_size // 2, **unit
            ),
        )
        # The pooling sits at index 0 so the projection is ``branch4.1``, as in torchvision.
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, 1, **unit),
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, dim=1)  # 4 x (B, C_i, H, W) -> (B, sum C_i, H, W)
