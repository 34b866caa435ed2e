"""Keras-style ``summary()``: layers, output shapes, parameter counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["ModelSummary", "summarize"]


@dataclass
class ModelSummary:
    """The numbers behind the table; ``str(summary)`` is the table itself.

    Attributes:
        rows: ``(layer name, layer type, output shape or "?", parameter count)`` per layer.
        total_params: ``sum(p.numel())`` over all parameters.
        trainable_params: The part with ``requires_grad=True``.
        non_trainable_params: The part with ``requires_grad=False`` (frozen layers).
    """

    title: str
    rows: list[tuple[str, str, str, int]]
    total_params: int
    trainable_params: int
    non_trainable_params: int

    def __str__(self) -> str:
        header = ("Layer (type)", "Output Shape", "Param #")
        cells = [(f"{name} ({kind})", shape, f"{n:,}") for name, kind, shape, n in self.rows]
        w = [max(len(r[i]) for r in [header, *cells]) + 2 for i in range(3)]
        width = sum(w)
        lines = [f'Model: "{self.title}"', "=" * width]
        lines.append(header[0].ljust(w[0]) + header[1].ljust(w[1]) + header[2].rjust(w[2]))
        lines.append("=" * width)
        for r in cells:
            lines.append(r[0].ljust(w[0]) + r[1].ljust(w[1]) + r[2].rjust(w[2]))
        lines.append("=" * width)
        lines.append(f"Total params: {self.total_params:,}")
        lines.append(f"Trainable params: {self.trainable_params:,}")
        lines.append(f"Non-trainable params: {self.non_trainable_params:,}")
        lines.append("=" * width)
        return "\n".join(lines)


def _shape_of(out: Any) -> str:
    if isinstance(out, Tensor):
        return str(list(out.shape)).replace(" ", "")
    if isinstance(out, Mapping):
        return "{" + ", ".join(f"{k}: {_shape_of(v)}" for k, v in out.items()) + "}"
    if isinstance(out, Sequence) and not isinstance(out, str):
        return "(" + ", ".join(_shape_of(v) for v in out) + ")"
    return "?"


def summarize(net: nn.Module, example_input: Any = None, title: str | None = None) -> ModelSummary:
    """Summarise ``net``: one row per leaf layer (and per module owning parameters directly).

    Args:
        net: The network.
        example_input: A batch to run once (in eval mode, without gradients) so the
            table shows output shapes; None leaves them as ``"?"``.
        title: Heading. Defaults to the class name.

    Returns:
        A :class:`ModelSummary`; print it for Keras' table.

    Example:
        >>> print(summarize(create_model("lenet5"), torch.zeros(1, 1, 32, 32)))
    """
    layers = [
        (name, m)
        for name, m in net.named_modules()
        if name and (not any(True for _ in m.children()) or any(True for _ in m.parameters(recurse=False)))
    ]
    shapes: dict[str, str] = {}
    if example_input is not None:
        def recorder(name: str) -> Any:
            def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:  # None keeps the output
                shapes.setdefault(name, _shape_of(out))

            return hook

        hooks = [m.register_forward_hook(recorder(name)) for name, m in layers]
        was_training = net.training
        try:
            net.eval()
            with torch.no_grad():
                net(example_input)
        finally:
            net.train(was_training)
            for h in hooks:
                h.remove()
    rows = [
        (name, type(m).__name__, shapes.get(name, "?"), sum(p.numel() for p in m.parameters(recurse=False)))
        for name, m in layers
    ]
    params = list(net.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return ModelSummary(title or type(net).__name__, rows, total, trainable, total - trainable)
