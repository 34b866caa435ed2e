"""Recurrent sequence classifiers: an RNN, LSTM or GRU reads the sequence, a linear layer classifies.

Images are read row by row: a ``(B, C, H, W)`` batch is ``H`` time steps of ``C·W``
features (the classic "pixel rows" MNIST benchmark of recurrent networks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from dlkit.layers import GRU, LSTM, RNN, Dropout
from dlkit.models.base import ClassifierNet
from dlkit.models.registry import register_model

__all__ = ["RNNClassifier", "RNNClassifierConfig"]

_CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
_POOLINGS = ("last", "mean", "max")


@dataclass
class RNNClassifierConfig:
    """Hyper-parameters of :class:`RNNClassifier`; Hydra's ``model/rnn_classifier.yaml`` fills them.

    Attributes:
        num_classes: Output classes. 0 = no head (``forward`` returns pooled features).
        in_chans: Channels of image inputs; each time step reads ``in_chans`` rows side by side.
        input_size: Features per time step. None = ``in_chans * img_size`` (image rows).
        img_size: Image width, used when ``input_size`` is None (the digits DataModule's
            ``model_hints`` fills it; 28 for (Fashion-)MNIST).
        cell: ``"rnn"`` (Elman, tanh), ``"lstm"`` or ``"gru"``.
        hidden_size: Units per layer and direction.
        num_layers: Stacked recurrent layers.
        bidirectional: Add a reverse-time direction; the features double.
        dropout: Dropout between stacked recurrent layers (training only).
        pooling: How the outputs over time become one vector: ``"last"`` (the final
            state ``h_n`` of the top layer; for bidirectional layers the forward
            direction's state after the last step and the backward one's after the
            first), ``"mean"`` or ``"max"`` over the valid steps.
        drop_rate: Dropout before the classifier.
        init: Weight initialisation scheme (``dlkit.layers.init.INIT_SCHEMES``).
        rnn_backend: How the recurrent layer runs its time loop (:class:`dlkit.layers.RNNBase`):
            ``"bptt"`` (default), ``"autograd"``, or for ``cell="lstm"`` ``"native"``,
            the C++ loop built on first use (about 40 s once per machine), which closes
            most of the gap to torch.nn.LSTM on CPUs where torch runs oneDNN's fused kernel.
    """

    num_classes: int = 10
    in_chans: int = 1
    input_size: int | None = None
    img_size: int | None = None
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    pooling: Literal["last", "mean", "max"] = "last"
    drop_rate: float = 0.0
    init: str = "default"
    rnn_backend: Literal["bptt", "autograd", "native"] = "bptt"


_BACKENDS = ("bptt", "autograd", "native")


class RNNClassifier(ClassifierNet):
    """A recurrent layer over the sequence, pooled over time, then a linear classifier.

    Args:
        cfg: An :class:`RNNClassifierConfig`. Keyword arguments override its fields.

    Call arguments:
        x: ``(B, T, input_size)`` sequences, or ``(B, in_chans, H, W)`` images read as
            ``H`` steps of ``in_chans * W`` features.
        lengths: ``(B,)`` valid lengths of padded sequences, in ``[1, T]``; padded steps
            change neither the state nor the pooling. Defaults to None (all valid).

    Returns:
        ``(B, num_classes)`` logits.

    Example:
        >>> net = RNNClassifier(input_size=8, cell="gru", bidirectional=True, pooling="max")
        >>> net(torch.randn(4, 8, 8)).shape, net(torch.randn(4, 1, 8, 8)).shape
        (torch.Size([4, 10]), torch.Size([4, 10]))
    """

    head_path = "fc"
    group_layout = {"rnn": ("rnn",), "head": ("fc",)}

    def __init__(self, cfg: RNNClassifierConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = RNNClassifierConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        if cfg.cell not in _CELLS:
            raise ValueError(f"model.cell must be one of {sorted(_CELLS)}, got {cfg.cell!r}.")
        if cfg.rnn_backend not in _BACKENDS or (cfg.rnn_backend == "native" and cfg.cell != "lstm"):
            allowed = list(_BACKENDS) if cfg.cell == "lstm" else ["bptt", "autograd"]
            raise ValueError(f"model.rnn_backend must be one of {allowed} for model.cell={cfg.cell}, got "
                             f"{cfg.rnn_backend!r} ('native' exists for lstm only).")
        if cfg.pooling not in _POOLINGS:
            raise ValueError(f"model.pooling must be one of {list(_POOLINGS)}, got {cfg.pooling!r}.")
        for key in ("num_classes", "in_chans"):
            value = getattr(cfg, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"model.{key} must be an int >= 0, got {value!r}. Leave it null with an image "
                    "DataModule (train.py fills it from model_hints()) or set it."
                )
        if cfg.input_size is None and cfg.img_size is None:
            raise ValueError(
                "RNNClassifier needs model.input_size (features per time step) or model.img_size "
                "(image width: rows are read as steps), got both null. Set one, e.g. "
                "model.input_size=28 for MNIST rows."
            )
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        self.input_size = cfg.input_size or cfg.in_chans * cfg.img_size
        self.rnn = _CELLS[cfg.cell](
            self.input_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
            backend=cfg.rnn_backend,
        )
        self.num_features = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        self._head_in_features = self.num_features
        self.head_drop = Dropout(cfg.drop_rate)
        self.fc: nn.Module = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if cfg.init != "default":
            self.apply_init(cfg.init)

    def _as_sequence(self, x: Tensor) -> Tensor:
        """``(B, T, F)`` as is; ``(B, C, H, W)`` images -> ``(B, H, C*W)`` rows."""
        if x.ndim == 4 and x.shape[1] == self.in_chans:
            B, C, H, W = x.shape
            x = x.permute(0, 2, 1, 3).reshape(B, H, C * W)  # (B, C, H, W) -> (B, H, C, W) -> (B, H, C*W)
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"RNNClassifier expected (B, T, {self.input_size}) sequences or (B, {self.in_chans}, H, "
                f"{self.input_size // max(self.in_chans, 1)}) images, got {tuple(x.shape)}. Set "
                "model.input_size (or in_chans and img_size) to match the data."
            )
        return x

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Run the recurrent layers and pool over time: ``-> (B, num_features)``."""
        x = self._as_sequence(x)
        B, T, _ = x.shape
        outputs, state = self.rnn(x, lengths=lengths)  # (B, T, D*H), (L*D, B, H)
        if self.cfg.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state
            D = 2 if self.cfg.bidirectional else 1
            # Top layer's h_n: forward after the last valid step, backward after step 0.
            return h_n[-D:].transpose(0, 1).reshape(B, self.num_features)  # (D, B, H) -> (B, D*H)
        valid = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            valid = torch.arange(T, device=x.device) < lengths.unsqueeze(1)  # (B, T)
        if self.cfg.pooling == "mean":
            if valid is None:
                return outputs.mean(dim=1)
            # Padded outputs are zero, so the sum only counts valid steps.
            return outputs.sum(dim=1) / lengths.unsqueeze(1).to(outputs.dtype)  # (B, D*H)
        if valid is not None:
            outputs = outputs.masked_fill(~valid.unsqueeze(-1), float("-inf"))  # (B, T, 1) broadcast
        return outputs.amax(dim=1)  # (B, D*H)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(x, lengths))


@register_model(kind="sequence")
def rnn_classifier(**kwargs: Any) -> RNNClassifier:
    """Recurrent classifier (LSTM, 128 units, last state by default); images are read row by row."""
    return RNNClassifier(RNNClassifierConfig(**kwargs))
