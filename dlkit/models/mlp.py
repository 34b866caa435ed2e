"""Multi-layer perceptron: the fully connected baseline for vectors and small images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn
from torch import Tensor

from dlkit.layers import Dropout, get_activation, get_norm_layer
from dlkit.models.base import ClassifierNet
from dlkit.models.registry import register_model

__all__ = ["MLP", "MLPConfig"]


@dataclass
class MLPConfig:
    """Hyper-parameters of :class:`MLP`; Hydra's ``model/mlp.yaml`` fills them.

    Attributes:
        num_classes: Output units (classes, or regression targets). 0 = no head.
        in_chans: Input channels; with ``img_size`` it gives the flattened input size.
        img_size: Side of a square input image (1 for plain vectors).
        in_features: Flattened input size; overrides ``in_chans * img_size**2``.
        hidden_sizes: Width of each hidden layer, first to last.
        act_layer: Activation name, class or callable (``dlkit.layers.get_activation``).
        norm_layer: Normalisation after each hidden linear layer (``"batchnorm"``,
            ``"layernorm"`` or None), applied before the activation as in Ioffe & Szegedy.
        drop_rate: Dropout probability after each hidden activation.
        init: Weight initialisation scheme (``dlkit.layers.init.INIT_SCHEMES``).
    """

    num_classes: int = 10
    in_chans: int = 1
    img_size: int = 8
    in_features: int | None = None
    hidden_sizes: Sequence[int] = field(default_factory=lambda: (128, 64))
    act_layer: str | type | Callable[..., Any] = "relu"
    norm_layer: str | type | None = None
    drop_rate: float = 0.0
    init: str = "default"


class MLP(ClassifierNet):
    """Flatten, then ``[Linear -> norm -> activation -> dropout] * N -> Linear``.

    Args:
        cfg: An :class:`MLPConfig`. Keyword arguments override its fields.

    Call arguments:
        x: ``(B, in_features)`` or any ``(B, ...)`` whose trailing dims multiply to
        ``in_features`` (images are flattened).

    Returns:
        ``(B, num_classes)`` logits (or regression outputs).

    Example:
        >>> net = MLP(in_features=64, hidden_sizes=(32,), num_classes=10)
        >>> net(torch.randn(8, 1, 8, 8)).shape
        torch.Size([8, 10])
    """

    head_path = "head"

    def __init__(self, cfg: MLPConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = MLPConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        self.in_features = cfg.in_features or cfg.in_chans * cfg.img_size * cfg.img_size
        layers: list[nn.Module] = []
        width = self.in_features
        for hidden in cfg.hidden_sizes:
            layers.append(nn.Linear(width, hidden))
            if cfg.norm_layer is not None:
                layers.append(get_norm_layer(_vector_norm(cfg.norm_layer), hidden))
            layers.append(get_activation(cfg.act_layer))
            if cfg.drop_rate > 0:
                layers.append(Dropout(cfg.drop_rate))
            width = hidden
        self.features = nn.Sequential(*layers)
        # Layer groups: each hidden layer (its Linear up to the next one), then the head.
        hidden: dict[str, list[str]] = {}
        for i, m in enumerate(self.features):
            hidden_index = len(hidden) + isinstance(m, nn.Linear)
            hidden.setdefault(f"hidden{hidden_index}", []).append(f"features.{i}")
        self.group_layout = {**hidden, "head": ("head",)}
        self.num_features = width
        self._head_in_features = width
        self.head: nn.Module = nn.Linear(width, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if cfg.init != "default":
            self.apply_init(cfg.init)

    def forward_features(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.in_features:
            raise ValueError(
                f"MLP expected input of shape (B, {self.in_features}) or (B, ...) with "
                f"{self.in_features} values per sample, got {tuple(x.shape)}. "
                "Set model.in_features (or in_chans/img_size) to match the data."
            )
        return self.features(x.reshape(B, -1))  # (B, in_features) -> (B, hidden[-1])

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)


def _vector_norm(spec: Any) -> Any:
    # The generic names mean BatchNorm2d for CNNs; an MLP normalises (B, C) vectors.
    if isinstance(spec, str) and spec.lower().replace("_", "") in ("batchnorm", "bn"):
        return "batchnorm1d"
    return spec


@register_model(kind="vector")
def mlp(**kwargs: Any) -> MLP:
    """MLP, two hidden layers (128, 64) with ReLU by default."""
    return MLP(MLPConfig(**kwargs))
