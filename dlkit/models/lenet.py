"""LeNet-5 (LeCun et al., 1998): the first convolutional network to read digits at scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch.nn as nn
from torch import Tensor

from dlkit.layers import Dropout, MaxPool2d, get_activation
from dlkit.models.base import ClassifierNet
from dlkit.models.registry import register_model

__all__ = ["LeNet5", "LeNetConfig"]


@dataclass
class LeNetConfig:
    """Hyper-parameters of :class:`LeNet5`; Hydra's ``model/lenet5.yaml`` fills them.

    Attributes:
        num_classes: Output classes. 0 = no head (``forward`` returns 84-d features).
        in_chans: Input channels (1 for grey digits).
        img_size: Input side. 32 is the classic size; 28 works with ``padding=2``.
        variant: ``"classic"``: tanh and average pooling, as in the 1998 paper (without
            its sparse C3 connections and RBF output, which nobody uses today);
            ``"modern"``: ReLU and max pooling.
        act_layer: Overrides the variant's activation when set.
        padding: Zero padding of the first convolution.
        drop_rate: Dropout before each of the two hidden fully connected layers' outputs.
        init: Weight initialisation scheme (``dlkit.layers.init.INIT_SCHEMES``).
    """

    num_classes: int = 10
    in_chans: int = 1
    img_size: int = 32
    variant: Literal["classic", "modern"] = "modern"
    act_layer: str | type | Callable[..., Any] | None = None
    padding: int = 0
    drop_rate: float = 0.0
    init: str = "default"


class LeNet5(ClassifierNet):
    """LeNet-5: two 5x5 convolution + pooling stages, then 120 -> 84 -> classes.

    Args:
        cfg: A :class:`LeNetConfig`. Keyword arguments override its fields.

    Call arguments:
        x: ``(B, in_chans, img_size, img_size)`` images.

    Returns:
        ``(B, num_classes)`` logits.

    Example:
        >>> net = LeNet5(num_classes=10, variant="modern")
        >>> net(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    head_path = "head.fc3"
    group_layout = {
        "conv1": ("features.0",),
        "conv2": ("features.3",),
        "fc1": ("head.fc1",),
        "fc2": ("head.fc2",),
        "head": ("head.fc3",),
    }

    def __init__(self, cfg: LeNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = LeNetConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        if cfg.variant not in ("classic", "modern"):
            raise ValueError(f"model.variant must be 'classic' or 'modern', got {cfg.variant!r}.")
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        act = cfg.act_layer or ("tanh" if cfg.variant == "classic" else "relu")
        pool = nn.AvgPool2d if cfg.variant == "classic" else MaxPool2d
        # Spatial size after conv(5) -> pool(2) -> conv(5) -> pool(2).
        side = ((cfg.img_size + 2 * cfg.padding - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(
                f"LeNet5 needs images of at least {32 - 2 * cfg.padding} px with padding="
                f"{cfg.padding}, got img_size={cfg.img_size}. Resize the data (e.g. data.resize=32) "
                "or raise model.padding."
            )
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_chans, 6, 5, padding=cfg.padding),
            get_activation(act),
            pool(2),
            nn.Conv2d(6, 16, 5),
            get_activation(act),
            pool(2),
        )
        self.num_features = 16 * side * side
        self._head_in_features = 84
        self.head = nn.Sequential()
        self.head.add_module("flatten", nn.Flatten())  # (B, 16, s, s) -> (B, 16*s*s)
        self.head.add_module("fc1", nn.Linear(self.num_features, 120))
        self.head.add_module("act1", get_activation(act))
        self.head.add_module("drop1", Dropout(cfg.drop_rate))
        self.head.add_module("fc2", nn.Linear(120, 84))
        self.head.add_module("act2", get_activation(act))
        self.head.add_module("drop2", Dropout(cfg.drop_rate))
        self.head.add_module("fc3", nn.Linear(84, cfg.num_classes) if cfg.num_classes else nn.Identity())
        if cfg.init != "default":
            self.apply_init(cfg.init)

    def forward_features(self, x: Tensor) -> Tensor:
        self._check_channels(x)
        if tuple(x.shape[-2:]) != (self.cfg.img_size, self.cfg.img_size):
            # The first fully connected layer's size is fixed by img_size.
            raise ValueError(
                f"LeNet5 was built for {self.cfg.img_size}x{self.cfg.img_size} images, got "
                f"{tuple(x.shape)}. Set model.img_size (and padding) or resize the data."
            )
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return self.head[:-1](x)
        return self.head(x)


@register_model
def lenet5(**kwargs: Any) -> LeNet5:
    """LeNet-5; ReLU and max pooling by default, ``variant="classic"`` for tanh and average pooling."""
    return LeNet5(LeNetConfig(**kwargs))
