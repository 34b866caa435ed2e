"""The face every dlkit image/vector classifier shows (timm's): features, head, new head."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from dlkit.layers.init import init_weights
from dlkit.models.freezing import Freezable

__all__ = ["ClassifierNet"]


class ClassifierNet(Freezable):
    """Base class of dlkit's classification networks.

    A subclass builds its layers, names its final ``nn.Linear`` in ``head_path``
    (a dotted attribute path such as ``"fc"`` or ``"classifier.6"``, so
    torchvision-style Sequential indices keep working) and implements
    :meth:`forward_features` and :meth:`forward_head`. The base class adds input
    checks, :meth:`get_classifier`, :meth:`reset_classifier` and the ``init`` scheme;
    :class:`~dlkit.models.freezing.Freezable` adds the layer groups (the family's
    ``group_layout``) and ``freeze`` / ``unfreeze`` / ``freeze_to``.

    Attributes:
        num_classes: Outputs of the head (0 means no head: ``forward`` returns features).
        in_chans: Channels (or features, for vectors) the network expects.
        head_path: Dotted path of the final linear layer.
    """

    head_path: str = "fc"
    num_classes: int
    in_chans: int

    def _check_channels(self, x: Tensor, min_ndim: int = 4) -> None:
        """Raise a clear error when ``x`` is not ``(B, in_chans, ...)``."""
        if x.ndim != min_ndim or x.shape[1] != self.in_chans:
            layout = "(B, C, H, W)" if min_ndim == 4 else "(B, C)"
            raise ValueError(
                f"{type(self).__name__} expected input of shape {layout} with C = in_chans = "
                f"{self.in_chans}, got {tuple(x.shape)}. Set in_chans to match the data "
                f"(e.g. model.in_chans={x.shape[1] if x.ndim > 1 else '?'})."
            )

    def _check_min_size(self, x: Tensor, min_size: int, hint: str = "") -> None:
        """Raise a clear error when the image is smaller than ``min_size`` on a side."""
        H, W = x.shape[-2:]
        if H < min_size or W < min_size:
            raise ValueError(
                f"{type(self).__name__} needs inputs of at least {min_size}x{min_size} px, "
                f"got {H}x{W} (input shape {tuple(x.shape)}). Resize the data"
                f"{' or ' + hint if hint else ''}."
            )

    def apply_init(self, scheme: str) -> None:
        """Re-initialise weights with ``scheme`` (see ``dlkit.layers.init.INIT_SCHEMES``)."""
        init_weights(self, scheme)

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything before the classifier: ``(B, C, H, W) -> (B, D, ...)``."""
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool/flatten features and apply the classifier; ``pre_logits`` stops before it."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final classification layer (``nn.Identity`` after ``reset_classifier(0)``)."""
        return self.get_submodule(self.head_path)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer by a freshly initialised one with ``num_classes`` outputs.

        Args:
            num_classes: New number of classes; 0 removes the head (``forward``
                then returns pre-logit features, useful for embeddings).

        Example:
            >>> net = create_model("lenet5", num_classes=10)
            >>> net.reset_classifier(3); net.get_classifier()
            Linear(in_features=84, out_features=3, bias=True)
        """
        old = self.get_classifier()
        in_features = getattr(old, "in_features", None) or self._head_in_features
        self._head_in_features = in_features
        new: nn.Module = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        parent_path, _, leaf = self.head_path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        if isinstance(parent, nn.Sequential) and leaf.isdigit():
            parent[int(leaf)] = new
        else:
            setattr(parent, leaf, new)
        self.num_classes = num_classes

    _head_in_features: int = 0
