"""ResNet (He et al., 2015): very deep networks made trainable by identity shortcuts.

Each block learns a residual ``F(x)`` and outputs ``act(F(x) + x)``: when a layer has
nothing to add, driving ``F`` to zero is easy, and gradients flow back through the
shortcut unchanged. ``resnet18/34`` stack :class:`BasicBlock` (two 3x3 convolutions);
``resnet50/101/152`` stack :class:`Bottleneck` (1x1 reduce, 3x3, 1x1 expand by 4),
with the stride on the 3x3 convolution ("ResNet v1.5", as torchvision).

Module names and state_dict keys are torchvision's (``conv1``, ``bn1``,
``layer2.0.downsample.0``, ``fc``), so its ImageNet weights load with ``strict=True``.
The blocks take an optional ``attn_layer``, which :mod:`dlkit.models.senet` uses to add
squeeze-and-excitation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch.nn as nn
from torch import Tensor

from dlkit.layers import Dropout, get_activation, get_norm_layer
from dlkit.layers.init import constant_, kaiming_normal_
from dlkit.models.base import ClassifierNet
from dlkit.models.pretrained import TORCHVISION_URL, PretrainedSpec
from dlkit.models.registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "ResNetConfig"]

AttnFactory = Callable[[int], nn.Module]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every convolution is followed by a normalisation that would cancel it.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut: ``act(bn2(conv2(act(bn1(conv1(x))))) + x)``.

    Args:
        in_channels: Input channels.
        planes: Channels of both convolutions; the output has ``planes * expansion``
            (= ``planes``) channels.
        stride: Stride of the first convolution (2 halves the size). Defaults to 1.
        downsample: Shortcut projection when the shape changes (1x1 conv + norm), or
            None for the identity. Defaults to None.
        act_layer: Activation. Defaults to ``"relu"``.
        norm_layer: Normalisation. Defaults to ``"batchnorm"``.
        attn_layer: Factory ``f(channels) -> module`` applied to the residual branch
            before the addition (e.g. squeeze-and-excitation), or None. Defaults to None.

    Call arguments:
        x: ``(B, in_channels, H, W)``.

    Returns:
        ``(B, planes, H / stride, W / stride)``.

    Example:
        >>> block = BasicBlock(64, 64)
        >>> block(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    expansion: int = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        act_layer: Any = "relu",
        norm_layer: Any = "batchnorm",
        attn_layer: AttnFactory | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = get_norm_layer(norm_layer, planes)
        self.act1 = get_activation(act_layer)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = get_norm_layer(norm_layer, planes)
        self.se = attn_layer(planes) if attn_layer is not None else nn.Identity()
        self.act2 = get_activation(act_layer)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.act2(out + shortcut)

    def last_norm(self) -> nn.Module:
        """The normalisation before the addition (zeroed by ``zero_init_residual``)."""
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand by 4, plus a shortcut.

    Args:
        in_channels: Input channels.
        planes: Channels of the inner convolutions; the output has ``planes * 4``.
        stride: Stride of the 3x3 convolution. Defaults to 1.
        downsample: Shortcut projection when the shape changes, or None. Defaults to None.
        act_layer: Activation. Defaults to ``"relu"``.
        norm_layer: Normalisation. Defaults to ``"batchnorm"``.
        attn_layer: Factory ``f(channels) -> module`` applied to the residual branch
            before the addition, or None. Defaults to None.

    Call arguments:
        x: ``(B, in_channels, H, W)``.

    Returns:
        ``(B, planes * 4, H / stride, W / stride)``.

    Example:
        >>> block = Bottleneck(256, 64)
        >>> block(torch.randn(2, 256, 8, 8)).shape
        torch.Size([2, 256, 8, 8])
    """

    expansion: int = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        act_layer: Any = "relu",
        norm_layer: Any = "batchnorm",
        attn_layer: AttnFactory | None = None,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = get_norm_layer(norm_layer, planes)
        self.act1 = get_activation(act_layer)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = get_norm_layer(norm_layer, planes)
        self.act2 = get_activation(act_layer)
        self.conv3 = _conv1x1(planes, out_channels)
        self.bn3 = get_norm_layer(norm_layer, out_channels)
        self.se = attn_layer(out_channels) if attn_layer is not None else nn.Identity()
        self.act3 = get_activation(act_layer)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.act3(out + shortcut)

    def last_norm(self) -> nn.Module:
        """The normalisation before the addition (zeroed by ``zero_init_residual``)."""
        return self.bn3


@dataclass
class ResNetConfig:
    """Hyper-parameters of :class:`ResNet`; Hydra's ``model/resnet*.yaml`` fill them.

    Attributes:
        num_classes: Output classes. 0 = no head (``forward`` returns pooled features).
        in_chans: Input channels.
        block: ``"basic"`` (two 3x3 convolutions) or ``"bottleneck"`` (1x1, 3x3, 1x1).
        layers: Number of blocks in each of the four stages.
        stem_width: Channels of the stem and of the first stage's inner convolutions;
            the stages have ``stem_width * (1, 2, 4, 8)``.
        small_input: Stem for 28-32 px images (CIFAR): a 3x3 stride-1 convolution and no
            max-pool, so the four stages see 32, 16, 8 and 4 px instead of 56, 28, 14
            and 7 px at 224. Only ``conv1``'s kernel shape changes in the state_dict.
        drop_rate: Dropout on the pooled features, before ``fc``.
        act_layer: Activation name, class or callable (``dlkit.layers.get_activation``).
        norm_layer: Normalisation (``dlkit.layers.get_norm_layer``).
        zero_init_residual: Start every block's last norm scale at 0, so each block
            begins as the identity (Goyal et al., 2017); only with ``init="default"``.
        init: Weight initialisation scheme. ``"default"`` is the ResNet recipe (and
            torchvision's): Kaiming-normal (fan_out, ReLU) convolutions, unit norm scales,
            zero norm shifts, PyTorch's default for ``fc``; any other name is applied by
            ``dlkit.layers.init.init_weights``.
    """

    num_classes: int = 1000
    in_chans: int = 3
    block: Literal["basic", "bottleneck"] = "basic"
    layers: Sequence[int] = field(default_factory=lambda: (2, 2, 2, 2))
    stem_width: int = 64
    small_input: bool = False
    drop_rate: float = 0.0
    act_layer: str | type | Callable[..., Any] = "relu"
    norm_layer: str | type | Callable[..., Any] = "batchnorm"
    zero_init_residual: bool = False
    init: str = "default"


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class ResNet(ClassifierNet):
    """ResNet: a 7x7/2 stem and max-pool, four stages of residual blocks, global pool, ``fc``.

    Stages 2-4 halve the size in their first block; the shortcut then projects with a
    strided 1x1 convolution and a norm (``downsample``). Any input size works: the
    global average pool takes whatever map the last stage leaves (1x1 from 32 px down
    with the ImageNet stem; use ``small_input=True`` for 28-32 px data).

    Args:
        cfg: A :class:`ResNetConfig`. Keyword arguments override its fields.
        attn_layer: Factory ``f(channels) -> module`` placed on every block's residual
            branch before the addition (SE-ResNet passes squeeze-and-excitation).
            Defaults to None.

    Call arguments:
        x: ``(B, in_chans, H, W)`` images.

    Returns:
        ``(B, num_classes)`` logits.

    Example:
        >>> net = ResNet(block="basic", layers=(2, 2, 2, 2), small_input=True, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    head_path = "fc"
    group_layout = {
        "stem": ("conv1", "bn1"),
        "layer1": ("layer1",),
        "layer2": ("layer2",),
        "layer3": ("layer3",),
        "layer4": ("layer4",),
        "head": ("fc",),
    }

    def __init__(
        self,
        cfg: ResNetConfig | None = None,
        attn_layer: AttnFactory | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        cfg = type(cfg or ResNetConfig())(**{**(vars(cfg) if cfg else {}), **overrides})
        if cfg.block not in _BLOCKS:
            raise ValueError(f"model.block must be one of {sorted(_BLOCKS)}, got {cfg.block!r}.")
        if len(cfg.layers) != 4:
            raise ValueError(f"model.layers must give 4 stage depths, got {list(cfg.layers)}.")
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        block = _BLOCKS[cfg.block]
        width = cfg.stem_width
        if cfg.small_input:
            self.conv1 = nn.Conv2d(cfg.in_chans, width, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(cfg.in_chans, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm_layer(cfg.norm_layer, width)
        self.act1 = get_activation(cfg.act_layer)
        self.maxpool: nn.Module = (
            nn.Identity() if cfg.small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
        self._in_channels = width
        unit = {"act_layer": cfg.act_layer, "norm_layer": cfg.norm_layer, "attn_layer": attn_layer}
        self.layer1 = self._make_stage(block, width, cfg.layers[0], 1, unit)
        self.layer2 = self._make_stage(block, width * 2, cfg.layers[1], 2, unit)
        self.layer3 = self._make_stage(block, width * 4, cfg.layers[2], 2, unit)
        self.layer4 = self._make_stage(block, width * 8, cfg.layers[3], 2, unit)
        self.num_features = width * 8 * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.head_drop = Dropout(cfg.drop_rate)
        self._head_in_features = self.num_features
        self.fc: nn.Module = (
            nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        )
        if cfg.init == "default":
            self._init_resnet(cfg.zero_init_residual)
        else:
            self.apply_init(cfg.init)

    def _make_stage(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        depth: int,
        stride: int,
        unit: dict[str, Any],
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self._in_channels != out_channels:
            # Index 0 conv, 1 norm: torchvision's ``downsample.0`` / ``downsample.1``.
            downsample = nn.Sequential(
                _conv1x1(self._in_channels, out_channels, stride),
                get_norm_layer(unit["norm_layer"], out_channels),
            )
        blocks = [block(self._in_channels, planes, stride, downsample, **unit)]
        blocks += [block(out_channels, planes, **unit) for _ in range(1, depth)]
        self._in_channels = out_channels
        return nn.Sequential(*blocks)

    def _init_resnet(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            # Every convolution, including an attention block's 1x1 ones (as timm does).
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif "Norm" in type(m).__name__ and getattr(m, "weight", None) is not None:
                constant_(m.weight, 1.0)
                constant_(m.bias, 0.0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    norm = m.last_norm()
                    if getattr(norm, "weight", None) is not None:
                        constant_(norm.weight, 0.0)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, num_features, H / 32, W / 32)`` (``/ 8`` if small_input)."""
        self._check_channels(x)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(B, num_features, h, w) -> (B, num_classes)``, or the pooled ``(B, num_features)``."""
        x = self.head_drop(self.avgpool(x).flatten(1))  # (B, C, h, w) -> (B, C)
        return x if pre_logits else self.fc(x)


def _imagenet(*filenames: str) -> PretrainedSpec:
    """torchvision's ImageNet-1k weights (224 px RGB, ImageNet mean and std) for one ResNet.

    ``filenames`` are the files of the tags ``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ...
    """
    urls = {f"IMAGENET1K_V{i}": TORCHVISION_URL + f for i, f in enumerate(filenames, start=1)}
    return PretrainedSpec(urls=urls, first_conv="conv1", classifier=("fc",))


def _resnet(block: str, layers: Sequence[int], kwargs: dict[str, Any]) -> ResNet:
    return ResNet(ResNetConfig(**{"block": block, "layers": tuple(layers), **kwargs}))


@register_model(pretrained=_imagenet("resnet18-f37072fd.pth"))
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2), 11,689,512 parameters with 1000 classes."""
    return _resnet("basic", (2, 2, 2, 2), kwargs)


@register_model(pretrained=_imagenet("resnet34-b627a593.pth"))
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3), 21,797,672 parameters with 1000 classes."""
    return _resnet("basic", (3, 4, 6, 3), kwargs)


@register_model(pretrained=_imagenet("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"))
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50: bottlenecks (3, 4, 6, 3), 25,557,032 parameters with 1000 classes."""
    return _resnet("bottleneck", (3, 4, 6, 3), kwargs)


@register_model(pretrained=_imagenet("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"))
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101: bottlenecks (3, 4, 23, 3), 44,549,160 parameters with 1000 classes."""
    return _resnet("bottleneck", (3, 4, 23, 3), kwargs)


@register_model(pretrained=_imagenet("resnet152-394f9c45.pth", "resnet152-f82ba261.pth"))
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152: bottlenecks (3, 8, 36, 3), 60,192,808 parameters with 1000 classes."""
    return _resnet("bottleneck", (3, 8, 36, 3), kwargs)
