"""AlexNet (Krizhevsky et al., 2012), in the single-tower form of torchvision ("one weird trick").

Five convolutions and three fully connected layers; the network that started the deep
learning era on ImageNet. The layer layout and state_dict keys are torchvision's
(``features.N`` / ``classifier.N``, activations and pooling included in the indices),
so its ImageNet weights load with ``strict=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn
from torch import Tensor

from dlkit.layers import Dropout, get_activation
from dlkit.models.base import ClassifierNet
from dlkit.models.pretrained import TORCHVISION_URL, PretrainedSpec
from dlkit.models.registry import register_model

__all__ = ["ALEXNET_WEIGHTS", "AlexNet", "AlexNetConfig"]


@dataclass
class AlexNetConfig:
    """Hyper-parameters of :class:`AlexNet`; Hydra's ``model/alexnet.yaml`` fills them.

    Attributes:
        num_classes: Output classes. 0 = no head (``forward`` returns 4096-d features).
        in_chans: Input channels.
        drop_rate: Dropout before each of the two hidden fully connected layers
            (0.5 in the paper and torchvision).
        act_layer: Activation name, class or callable (``dlkit.layers.get_activation``).
        hidden_size: Width of the two hidden fully connected layers.
        init: Weight initialisation scheme. ``"default"`` keeps PyTorch's layer
            defaults, as torchvision does; any other name is applied to every conv and
            linear weight by ``dlkit.layers.init.init_weights`` (biases set to 0).

    AlexNet has no normalisation layer (the paper's local response normalisation is
    left out, as in torchvision), so there is no ``norm_layer``.
    """

    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.5
    act_layer: str | type | Callable[..., Any] = "relu"
    hidden_size: int = 4096
    init: str = "default"


class AlexNet(ClassifierNet):
    """AlexNet: 11x11/4 stem, four more convolutions, 6x6 adaptive pool, three linear layers.

    Inputs of any size from 63x63 px up work: the adaptive average pool turns the final
    feature map into 6x6 (at 224 px it already is 6x6). Below 63 px the third max-pool
    would get a 2x2 map and produce nothing, so :meth:`forward_features` raises a
    ``ValueError``; resize 28-32 px data to 64 px first.

    Args:
        cfg: An :class:`AlexNetConfig`. Keyword arguments override its fields.

    Call arguments:
        x: ``(B, in_chans, H, W)`` images with ``H, W >= 63``.

    Returns:
        ``(B, num_classes)`` logits.

    Example:
        >>> net = AlexNet(num_classes=10)
        >>> net(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    head_path = "classifier.6"
    min_input_size = 63
    group_layout = {
        "conv1": ("features.0",),
        "conv2": ("features.3",),
        "conv3": ("features.6",),
        "conv4": ("features.8",),
        "conv5": ("features.10",),
        "fc6": ("classifier.1",),
        "fc7": ("classifier.4",),
        "head": ("classifier.6",),
    }

    def __init__(self, cfg: AlexNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = AlexNetConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        act = cfg.act_layer
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_chans, 64, kernel_size=11, stride=4, padding=2),
            get_activation(act),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            get_activation(act),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            get_activation(act),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            get_activation(act),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            get_activation(act),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.num_features = 256
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        hidden = cfg.hidden_size
        self._head_in_features = hidden
        self.classifier = nn.Sequential(
            Dropout(cfg.drop_rate),
            nn.Linear(256 * 6 * 6, hidden),
            get_activation(act),
            Dropout(cfg.drop_rate),
            nn.Linear(hidden, hidden),
            get_activation(act),
            nn.Linear(hidden, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity(),
        )
        if cfg.init != "default":
            self.apply_init(cfg.init)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, 256, h, w)``, the last max-pool's output."""
        self._check_channels(x)
        self._check_min_size(x, self.min_input_size)
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(B, 256, h, w) -> (B, num_classes)``, or the ``(B, hidden_size)`` pre-logits."""
        x = self.avgpool(x).flatten(1)  # (B, 256, 6, 6) -> (B, 9216)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


# torchvision's ImageNet-1k weights (224 px RGB, ImageNet mean and std).
ALEXNET_WEIGHTS = PretrainedSpec(
    urls={"IMAGENET1K_V1": TORCHVISION_URL + "alexnet-owt-7be5be79.pth"},
    first_conv="features.0",
    classifier=("classifier.6",),
)


@register_model(pretrained=ALEXNET_WEIGHTS)
def alexnet(**kwargs: Any) -> AlexNet:
    """AlexNet as in torchvision (61,100,840 parameters with 1000 classes)."""
    return AlexNet(AlexNetConfig(**kwargs))
