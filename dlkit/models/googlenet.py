"""GoogLeNet / Inception v1 (Szegedy et al., 2015): nine Inception modules, 22 layers deep.

The network mixes 1x1, 3x3 and wide convolutions and pooling in every module
(:class:`~dlkit.layers.Inception`), with 1x1 reductions that keep it at 6.6 M
parameters. Two auxiliary classifiers on intermediate features (after
``inception4a`` and ``inception4d``) add gradient signal to the lower layers during
training. This is torchvision's variant (batch normalisation in every unit, a 3x3
convolution in the "5x5" branch) with torchvision's state_dict keys, so its ImageNet
weights load with ``strict=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn
from torch import Tensor

from dlkit.layers import BasicConv2d, Dropout, Inception, get_activation
from dlkit.layers.init import constant_, trunc_normal_
from dlkit.models.base import ClassifierNet
from dlkit.models.pretrained import TORCHVISION_URL, PretrainedSpec
from dlkit.models.registry import register_model

__all__ = ["GOOGLENET_WEIGHTS", "GoogLeNet", "GoogLeNetConfig", "InceptionAux"]

# ImageNet statistics; transform_input maps inputs normalised with them to the
# ``(x - 0.5) / 0.5`` scaling the original (Caffe-ported) weights expect.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, two linear layers.

    Args:
        in_channels: Channels of the intermediate feature map.
        num_classes: Outputs; 0 gives the 1024-d hidden features.
        drop_rate: Dropout before the last linear layer. Defaults to 0.7.
        act_layer: Activation. Defaults to ``"relu"``.
        norm_layer: Normalisation of the 1x1 unit. Defaults to ``"batchnorm"``.

    Call arguments:
        x: ``(B, in_channels, H, W)``, any ``H, W`` (adaptive pooling).

    Returns:
        ``(B, num_classes)`` logits.

    Example:
        >>> aux = InceptionAux(512, 10)
        >>> aux(torch.randn(2, 512, 14, 14)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        drop_rate: float = 0.7,
        act_layer: Any = "relu",
        norm_layer: Any = "batchnorm",
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = BasicConv2d(in_channels, 128, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = get_activation(act_layer)
        self.drop = Dropout(drop_rate)
        self.fc2: nn.Module = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.pool(x)).flatten(1)  # (B, C, H, W) -> (B, 128, 4, 4) -> (B, 2048)
        return self.fc2(self.drop(self.act(self.fc1(x))))


@dataclass
class GoogLeNetConfig:
    """Hyper-parameters of :class:`GoogLeNet`; Hydra's ``model/googlenet.yaml`` fills them.

    Attributes:
        num_classes: Output classes. 0 = no head (``forward`` returns 1024-d features).
        in_chans: Input channels.
        aux_logits: Build the two auxiliary classifiers. They only run in training
            mode, where ``forward`` then returns a dict (see :class:`GoogLeNet`).
        transform_input: Re-scale inputs normalised with ImageNet's mean and std to
            ``(x - 0.5) / 0.5`` per channel, which torchvision's ImageNet weights expect
            (``create_model("googlenet", pretrained="torchvision:...")`` turns it on,
            as :data:`GOOGLENET_WEIGHTS` says, and logs it). Needs ``in_chans=3``.
        drop_rate: Dropout on the pooled features, before ``fc`` (0.2 in torchvision).
        aux_drop_rate: Dropout inside each auxiliary classifier (0.7 in the paper).
        branch3_kernel_size: Window of the "5x5" branch; 3 matches torchvision's
            weights, 5 is the paper's.
        act_layer: Activation name, class or callable (``dlkit.layers.get_activation``).
        norm_layer: Normalisation in every conv unit (eps 1e-3), or None.
        init: Weight initialisation scheme. ``"default"`` is torchvision's: conv and
            linear weights from a normal with std 0.01 (truncated at +-2), linear
            biases left at PyTorch's default, unit norm scales; any other name is
            applied by ``dlkit.layers.init.init_weights``.
    """

    num_classes: int = 1000
    in_chans: int = 3
    aux_logits: bool = False
    transform_input: bool = False
    drop_rate: float = 0.2
    aux_drop_rate: float = 0.7
    branch3_kernel_size: int = 3
    act_layer: str | type | Callable[..., Any] = "relu"
    norm_layer: str | type | Callable[..., Any] | None = "batchnorm"
    init: str = "default"


class GoogLeNet(ClassifierNet):
    """GoogLeNet: conv stem, Inception 3a-3b, 4a-4e, 5a-5b between max-pools, pool, ``fc``.

    Output: in eval mode, or with ``aux_logits=False``, a ``(B, num_classes)`` tensor.
    In training mode with ``aux_logits=True`` a dict ``{"logits": (B, num_classes),
    "aux1": (B, num_classes), "aux2": (B, num_classes)}``; the paper adds the auxiliary
    losses with weight :attr:`aux_loss_weight` (0.3). ``forward_features`` never runs
    the auxiliary heads.

    Inputs from 15x15 px up work (adaptive pooling); smaller ones would leave a max-pool
    an empty map, so :meth:`forward_features` raises a ``ValueError``.

    Args:
        cfg: A :class:`GoogLeNetConfig`. Keyword arguments override its fields.

    Call arguments:
        x: ``(B, in_chans, H, W)`` images with ``H, W >= 15``.

    Returns:
        ``(B, num_classes)`` logits, or the dict above.

    Example:
        >>> net = GoogLeNet(num_classes=10, aux_logits=True)
        >>> sorted(net.train()(torch.randn(2, 3, 64, 64)))
        ['aux1', 'aux2', 'logits']
        >>> net.eval()(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    head_path = "fc"
    min_input_size = 15
    group_layout = {
        "stem": ("conv1", "maxpool1", "conv2", "conv3", "maxpool2"),
        "inception3": ("inception3a", "inception3b", "maxpool3"),
        "inception4": tuple(f"inception4{c}" for c in "abcde") + ("maxpool4",),
        "inception5": ("inception5a", "inception5b"),
        "aux": ("aux1", "aux2"),  # only with aux_logits
        "head": ("fc",),
    }
    aux_loss_weight: float = 0.3
    """Weight of each auxiliary classifier's loss in the paper's training objective."""

    def __init__(self, cfg: GoogLeNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = GoogLeNetConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        if cfg.transform_input and cfg.in_chans != 3:
            raise ValueError(
                "GoogLeNet transform_input=True re-scales 3 RGB channels, "
                f"got in_chans={cfg.in_chans}."
            )
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        self.aux_logits, self.transform_input = cfg.aux_logits, cfg.transform_input
        unit = {"act_layer": cfg.act_layer, "norm_layer": cfg.norm_layer}
        block = {**unit, "branch3_kernel_size": cfg.branch3_kernel_size}
        # ceil_mode pools keep torchvision's (and the original Caffe model's) map sizes.
        self.conv1 = BasicConv2d(cfg.in_chans, 64, 7, stride=2, padding=3, **unit)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1, **unit)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1, **unit)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32, **block)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64, **block)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64, **block)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64, **block)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64, **block)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64, **block)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128, **block)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128, **block)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128, **block)
        # Registered between inception5b and fc, where torchvision's state_dict has them.
        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if cfg.aux_logits:
            self.aux1 = InceptionAux(512, cfg.num_classes, cfg.aux_drop_rate, **unit)
            self.aux2 = InceptionAux(528, cfg.num_classes, cfg.aux_drop_rate, **unit)
        self.num_features = 1024
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = Dropout(cfg.drop_rate)
        self._head_in_features = self.num_features
        self.fc: nn.Module = (
            nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        )
        if cfg.init == "default":
            self._init_googlenet()
        else:
            self.apply_init(cfg.init)

    def _init_googlenet(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2.0, b=2.0)
            elif "Norm" in type(m).__name__ and getattr(m, "weight", None) is not None:
                constant_(m.weight, 1.0)
                constant_(m.bias, 0.0)

    def _transform_input(self, x: Tensor) -> Tensor:
        mean = x.new_tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1)  # (3,) -> (1, 3, 1, 1)
        std = x.new_tensor(_IMAGENET_STD).reshape(1, 3, 1, 1)
        # Undo (x - mean) / std, then apply (x - 0.5) / 0.5, in one multiply-add.
        return x * (std / 0.5) + (mean - 0.5) / 0.5

    def _forward_stages(
        self, x: Tensor, with_aux: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        self._check_channels(x)
        self._check_min_size(x, self.min_input_size)
        if self.transform_input:
            x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))  # (B, 64, H/4, W/4)
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (B, 192, H/8, W/8)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (B, 480, H/16, W/16)
        x = self.inception4a(x)
        aux1 = self.aux1(x) if with_aux and self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux and self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))  # (B, 832, H/32, W/32)
        x = self.inception5b(self.inception5a(x))  # (B, 1024, H/32, W/32)
        return x, aux1, aux2

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, 1024, H / 32, W / 32)`` (sizes rounded up)."""
        return self._forward_stages(x, with_aux=False)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(B, 1024, h, w) -> (B, num_classes)``, or the pooled ``(B, 1024)``."""
        x = self.dropout(self.avgpool(x).flatten(1))  # (B, 1024, h, w) -> (B, 1024)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:  # type: ignore[override]
        with_aux = self.training and self.aux_logits
        features, aux1, aux2 = self._forward_stages(x, with_aux)
        logits = self.forward_head(features)
        if not with_aux:
            return logits
        return {"logits": logits, "aux1": aux1, "aux2": aux2}

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` and, when present, both auxiliary heads' last layers.

        Args:
            num_classes: New number of classes; 0 removes the heads.

        Example:
            >>> net = GoogLeNet(aux_logits=True)
            >>> net.reset_classifier(10); net.aux1.fc2.out_features
            10
        """
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()


# torchvision's ImageNet-1k weights (224 px RGB, ImageNet mean and std), auxiliary heads
# included; they expect transform_input's re-scaling.
GOOGLENET_WEIGHTS = PretrainedSpec(
    urls={"IMAGENET1K_V1": TORCHVISION_URL + "googlenet-1378be20.pth"},
    first_conv="conv1.conv",
    classifier=("fc", "aux1.fc2", "aux2.fc2"),
    optional=("aux1", "aux2"),
    input_transform={"transform_input": True},
)


@register_model(pretrained=GOOGLENET_WEIGHTS)
def googlenet(**kwargs: Any) -> GoogLeNet:
    """GoogLeNet (Inception v1) without auxiliary heads by default: 6,624,904 parameters."""
    return GoogLeNet(GoogLeNetConfig(**kwargs))
