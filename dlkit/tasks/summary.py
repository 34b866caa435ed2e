"""Keras-style ``summary()``: layers, output shapes, parameter counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["ModelSummary", "summarize"]


@dataclass(repr=False)  # __repr__ below: one line, not the fields
class ModelSummary:
    """The numbers behind the table; ``str(summary)`` is the table itself, ``repr`` one line.

    Attributes:
        rows: ``(layer name, layer type, output shape or "?", parameter count)`` per layer.
        total_params: ``sum(p.numel())`` over all parameters.
        trainable_params: The part with ``requires_grad=True``.
        non_trainable_params: The part with ``requires_grad=False`` (frozen layers; a
            frozen BatchNorm's scale and shift, while its running statistics are buffers
            and counted nowhere).
        trainable: Per row, whether the layer's own parameters train: ``"Y"``, ``"N"``,
            ``"partial"``, or ``"-"`` for a layer without parameters (Keras'
            ``show_trainable`` column). Empty: no column.
    """

    title: str
    rows: list[tuple[str, str, str, int]]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    trainable: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        # One line: summary() has printed the table, and a notebook shows the returned
        # object's repr after it; the table is str(summary).
        return (f"ModelSummary({self.title!r}: {len(self.rows)} layers, {self.total_params:,} params, "
                f"{self.trainable_params:,} trainable)")

    def __str__(self) -> str:
        header = ("Layer (type)", "Output Shape", "Param #", "Trainable")
        cells = [(f"{name} ({kind})", shape, f"{n:,}") for name, kind, shape, n in self.rows]
        if len(self.trainable) == len(cells) and cells:
            cells = [(*c, t) for c, t in zip(cells, self.trainable)]
        else:
            header = header[:3]
        k = len(header)
        w = [max(len(r[i]) for r in [header, *cells]) + 2 for i in range(k)]
        width = sum(w)

        def line(r: tuple[str, ...]) -> str:
            # Name and shape left-aligned, the count right-aligned, the flag centred after it.
            text = r[0].ljust(w[0]) + r[1].ljust(w[1]) + r[2].rjust(w[2])
            return (text + (r[3].center(w[3]) if k == 4 else "")).rstrip()

        lines = [f'Model: "{self.title}"', "=" * width, line(header), "=" * width]
        lines += [line(r) for r in cells]
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
    flags = [_trainable_flag(list(m.parameters(recurse=False))) for _, m in layers]
    params = list(net.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return ModelSummary(title or type(net).__name__, rows, total, trainable, total - trainable, flags)


def _trainable_flag(params: list[nn.Parameter]) -> str:
    if not params:
        return "-"
    trains = [p.requires_grad for p in params]
    return "Y" if all(trains) else "N" if not any(trains) else "partial"
