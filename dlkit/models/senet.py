"""SE-ResNet (Hu et al., 2018): ResNet with squeeze-and-excitation on every residual branch.

Each block's residual output is rescaled channel by channel by a
:class:`~dlkit.layers.SqueezeExcite` gate (reduction 16) before the shortcut is
added; everything else is :class:`~dlkit.models.resnet.ResNet`. SE-ResNet-50 has
28,088,024 parameters, 10% more than ResNet-50, for about 1.5 points of ImageNet top-1
in the paper. There are no torchvision weights for it; its block keys are the ResNet
ones plus ``layerL.B.se.fc1`` / ``se.fc2``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dlkit.layers import SqueezeExcite
from dlkit.models.registry import register_model
from dlkit.models.resnet import ResNet, ResNetConfig

__all__ = ["SEResNet", "SEResNetConfig"]


@dataclass
class SEResNetConfig(ResNetConfig):
    """Hyper-parameters of :class:`SEResNet`; Hydra's ``model/seresnet*.yaml`` fill them.

    Every field of :class:`~dlkit.models.resnet.ResNetConfig` (``num_classes``,
    ``in_chans``, ``block``, ``layers``, ``small_input``, ``drop_rate``, ``act_layer``,
    ``norm_layer``, ``zero_init_residual``, ``init``, ...), plus:

    Attributes:
        se_reduction: Bottleneck ratio of each squeeze-and-excitation block: its hidden
            width is ``channels // se_reduction`` (at least 1). 16 in the paper.
    """

    se_reduction: int = 16


class SEResNet(ResNet):
    """ResNet whose blocks gate their residual branch with squeeze-and-excitation.

    Args:
        cfg: An :class:`SEResNetConfig`. Keyword arguments override its fields.

    Call arguments:
        x: ``(B, in_chans, H, W)`` images.

    Returns:
        ``(B, num_classes)`` logits.

    Example:
        >>> net = SEResNet(block="basic", layers=(2, 2, 2, 2), small_input=True, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, cfg: SEResNetConfig | None = None, **overrides: Any) -> None:
        cfg = SEResNetConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        se = functools.partial(SqueezeExcite, reduction=cfg.se_reduction, act_layer=cfg.act_layer)
        super().__init__(cfg, attn_layer=se)


def _seresnet(block: str, layers: Sequence[int], kwargs: dict[str, Any]) -> SEResNet:
    return SEResNet(SEResNetConfig(**{"block": block, "layers": tuple(layers), **kwargs}))


@register_model
def seresnet18(**kwargs: Any) -> SEResNet:
    """SE-ResNet-18: basic blocks (2, 2, 2, 2) with SE, reduction 16."""
    return _seresnet("basic", (2, 2, 2, 2), kwargs)


@register_model
def seresnet34(**kwargs: Any) -> SEResNet:
    """SE-ResNet-34: basic blocks (3, 4, 6, 3) with SE, reduction 16."""
    return _seresnet("basic", (3, 4, 6, 3), kwargs)


@register_model
def seresnet50(**kwargs: Any) -> SEResNet:
    """SE-ResNet-50: bottlenecks (3, 4, 6, 3) with SE, 28,088,024 parameters with 1000 classes."""
    return _seresnet("bottleneck", (3, 4, 6, 3), kwargs)


@register_model
def seresnet101(**kwargs: Any) -> SEResNet:
    """SE-ResNet-101: bottlenecks (3, 4, 23, 3) with SE, reduction 16."""
    return _seresnet("bottleneck", (3, 4, 23, 3), kwargs)


@register_model
def seresnet152(**kwargs: Any) -> SEResNet:
    """SE-ResNet-152: bottlenecks (3, 8, 36, 3) with SE, reduction 16."""
    return _seresnet("bottleneck", (3, 8, 36, 3), kwargs)
