"""VGG (Simonyan & Zisserman, 2014): depth from stacks of 3x3 convolutions.

Two 3x3 convolutions see a 5x5 window and three see 7x7, with fewer parameters and
more non-linearities than one wide convolution. Configurations A, B, D and E of the
paper are ``vgg11``, ``vgg13``, ``vgg16`` and ``vgg19``; the ``_bn`` variants add batch
normalisation after every convolution. Layout and state_dict keys are torchvision's
(``features.N`` / ``classifier.N``, activations and pooling included in the indices),
so its ImageNet weights load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union

import torch.nn as nn
from torch import Tensor

from dlkit.layers import Dropout, MaxPool2d, get_activation, get_norm_layer
from dlkit.layers.init import constant_, kaiming_normal_, normal_
from dlkit.models.base import ClassifierNet
from dlkit.models.pretrained import TORCHVISION_URL, PretrainedSpec
from dlkit.models.registry import register_model

__all__ = ["VGG", "VGGConfig", "VGG_LAYOUTS"]

# fmt: off
VGG_LAYOUTS: dict[int, list[Union[int, str]]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# fmt: on
"""Feature layouts by depth: an int is a 3x3 convolution with that many channels,
``"M"`` a 2x2 max-pool (the paper's configurations A, B, D, E)."""


@dataclass
class VGGConfig:
    """Hyper-parameters of :class:`VGG`; Hydra's ``model/vgg*.yaml`` fill them.

    Attributes:
        num_classes: Output classes. 0 = no head (``forward`` returns hidden features).
        in_chans: Input channels.
        depth: 11, 13, 16 or 19 (a key of :data:`VGG_LAYOUTS`).
        layout: Explicit feature layout; overrides ``depth`` when set.
        norm_layer: Normalisation after every convolution (``"batchnorm"`` for the
            ``_bn`` variants), or None for the original network.
        act_layer: Activation name, class or callable (``dlkit.layers.get_activation``).
        drop_rate: Dropout after each of the two hidden fully connected layers.
        small_input: Variant for 28-32 px images (CIFAR, MNIST). Exactly three things
            change: the final max-pool of ``features`` is left out (four halvings, so
            32 px ends as 2x2 and 28 px as 1x1; inputs from 16 px work), ``avgpool``
            averages to 1x1 instead of 7x7, and the classifier's hidden width defaults to
            512 instead of 4096, so the classifier is 512 -> 512 -> 512 -> classes
            instead of 25088 -> 4096 -> 4096 -> classes. Layer names and indices stay
            the same.
        hidden_size: Width of the two hidden fully connected layers. Defaults (None) to
            4096, or 512 with ``small_input``.
        init: Weight initialisation scheme. ``"default"`` is the VGG recipe used by
            torchvision: Kaiming-normal (fan_out, ReLU) convolutions, N(0, 0.01)
            linear weights, zero biases, unit norm scales; any other name is applied by
            ``dlkit.layers.init.init_weights``.
    """

    num_classes: int = 1000
    in_chans: int = 3
    depth: int = 16
    layout: Sequence[Union[int, str]] | None = None
    norm_layer: str | type | None = None
    act_layer: str | type | Callable[..., Any] = "relu"
    drop_rate: float = 0.5
    small_input: bool = False
    hidden_size: int | None = None
    init: str = "default"


class VGG(ClassifierNet):
    """VGG: blocks of 3x3 convolutions separated by 2x2 max-pools, then three linear layers.

    With the default ``small_input=False`` the five max-pools need inputs of at least
    32x32 px, and the adaptive average pool brings any larger map to 7x7 (at 224 px it
    already is 7x7). With ``small_input=True`` (see :class:`VGGConfig`) inputs of at
    least 16x16 px work.

    Args:
        cfg: A :class:`VGGConfig`. Keyword arguments override its fields.

    Call arguments:
        x: ``(B, in_chans, H, W)`` images.

    Returns:
        ``(B, num_classes)`` logits.

    Example:
        >>> net = VGG(depth=11, norm_layer="batchnorm", small_input=True, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    head_path = "classifier.6"

    def __init__(self, cfg: VGGConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = VGGConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        if cfg.layout is None and cfg.depth not in VGG_LAYOUTS:
            raise ValueError(f"model.depth must be one of {sorted(VGG_LAYOUTS)}, got {cfg.depth}.")
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        layout = list(cfg.layout if cfg.layout is not None else VGG_LAYOUTS[cfg.depth])
        if cfg.small_input and layout[-1] == "M":
            layout = layout[:-1]
        self.min_input_size = 2 ** layout.count("M")
        self.features = self._make_features(layout, cfg)
        # Layer groups: the convolutions up to each max-pool form a block, then fc6, fc7, head.
        blocks: dict[str, list[str]] = {}
        block = 1
        for i, m in enumerate(self.features):
            blocks.setdefault(f"block{block}", []).append(f"features.{i}")
            block += isinstance(m, nn.MaxPool2d)
        fc = {"fc6": ("classifier.0",), "fc7": ("classifier.3",), "head": ("classifier.6",)}
        self.group_layout = {**blocks, **fc}
        width = next(v for v in reversed(layout) if v != "M")
        self.num_features = int(width)
        pooled = 1 if cfg.small_input else 7
        hidden = cfg.hidden_size or (512 if cfg.small_input else 4096)
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self._head_in_features = hidden
        self.classifier = nn.Sequential(
            nn.Linear(self.num_features * pooled * pooled, hidden),
            get_activation(cfg.act_layer),
            Dropout(cfg.drop_rate),
            nn.Linear(hidden, hidden),
            get_activation(cfg.act_layer),
            Dropout(cfg.drop_rate),
            nn.Linear(hidden, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity(),
        )
        if cfg.init == "default":
            self._init_vgg()
        else:
            self.apply_init(cfg.init)

    @staticmethod
    def _make_features(layout: list[Union[int, str]], cfg: VGGConfig) -> nn.Sequential:
        layers: list[nn.Module] = []
        channels = cfg.in_chans
        for v in layout:
            if v == "M":
                layers.append(MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(channels, int(v), kernel_size=3, padding=1))
            # Without a norm layer nothing takes an index slot, as in torchvision's vgg16.
            if cfg.norm_layer is not None:
                layers.append(get_norm_layer(cfg.norm_layer, int(v)))
            layers.append(get_activation(cfg.act_layer))
            channels = int(v)
        return nn.Sequential(*layers)

    def _init_vgg(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    constant_(m.bias, 0.0)
            elif isinstance(m, nn.Linear):
                normal_(m.weight, 0.0, 0.01)
                constant_(m.bias, 0.0)
            elif "Norm" in type(m).__name__ and getattr(m, "weight", None) is not None:
                constant_(m.weight, 1.0)
                constant_(m.bias, 0.0)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, 512, h, w)``, the output of ``features``."""
        self._check_channels(x)
        hint = "use model.small_input=true (inputs from 16 px)" if not self.cfg.small_input else ""
        self._check_min_size(x, self.min_input_size, hint)
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(B, 512, h, w) -> (B, num_classes)``, or the ``(B, hidden_size)`` pre-logits."""
        x = self.avgpool(x).flatten(1)  # (B, 512, p, p) -> (B, 512 * p * p)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


def _imagenet(filename: str) -> PretrainedSpec:
    """torchvision's ImageNet-1k weights (224 px RGB, ImageNet mean and std) for one VGG."""
    return PretrainedSpec(
        urls={"IMAGENET1K_V1": TORCHVISION_URL + filename},
        first_conv="features.0",
        classifier=("classifier.6",),
    )


def _vgg(depth: int, norm_layer: str | None, kwargs: dict[str, Any]) -> VGG:
    return VGG(VGGConfig(**{"depth": depth, "norm_layer": norm_layer, **kwargs}))


@register_model(pretrained=_imagenet("vgg11-8a719046.pth"))
def vgg11(**kwargs: Any) -> VGG:
    """VGG-11 (configuration A), 132,863,336 parameters with 1000 classes."""
    return _vgg(11, None, kwargs)


@register_model(pretrained=_imagenet("vgg13-19584684.pth"))
def vgg13(**kwargs: Any) -> VGG:
    """VGG-13 (configuration B), 133,047,848 parameters with 1000 classes."""
    return _vgg(13, None, kwargs)


@register_model(pretrained=_imagenet("vgg16-397923af.pth"))
def vgg16(**kwargs: Any) -> VGG:
    """VGG-16 (configuration D), 138,357,544 parameters with 1000 classes."""
    return _vgg(16, None, kwargs)


@register_model(pretrained=_imagenet("vgg19-dcbb9e9d.pth"))
def vgg19(**kwargs: Any) -> VGG:
    """VGG-19 (configuration E), 143,667,240 parameters with 1000 classes."""
    return _vgg(19, None, kwargs)


@register_model(pretrained=_imagenet("vgg11_bn-6002323d.pth"))
def vgg11_bn(**kwargs: Any) -> VGG:
    """VGG-11 with batch normalisation after every convolution."""
    return _vgg(11, "batchnorm", kwargs)


@register_model(pretrained=_imagenet("vgg13_bn-abd245e5.pth"))
def vgg13_bn(**kwargs: Any) -> VGG:
    """VGG-13 with batch normalisation after every convolution."""
    return _vgg(13, "batchnorm", kwargs)


@register_model(pretrained=_imagenet("vgg16_bn-6c64b313.pth"))
def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG-16 with batch normalisation, 138,365,992 parameters with 1000 classes."""
    return _vgg(16, "batchnorm", kwargs)


@register_model(pretrained=_imagenet("vgg19_bn-c79401a0.pth"))
def vgg19_bn(**kwargs: Any) -> VGG:
    """VGG-19 with batch normalisation after every convolution."""
    return _vgg(19, "batchnorm", kwargs)
