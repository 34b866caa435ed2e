"""Weights and inputs made by a closed formula, for output checks across torch versions.

Random generators are not guaranteed to draw the same numbers across torch releases,
so reference outputs saved with torchvision (in a separate, newer venv) are computed
with weights that need no RNG: each tensor is a sine wave over its flat index, phased
by a checksum of its state_dict key, scaled like a He initialisation. Both
``scripts/make_torchvision_fixtures.py`` (torchvision side) and the tests (dlkit side)
import this module, so the two models receive identical tensors.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["formula_state_dict", "formula_input"]


_PERIOD = 9973  # prime, so rows of common layer widths do not line up with it


def _wave(n: int, phase: float) -> Tensor:
    """``n`` float32 values in ``[-1, 1]``: one computed period of two sines, tiled.

    Only ``_PERIOD`` sines are evaluated (in float64), so a 100 M-element VGG layer costs
    a copy, not 100 M transcendental calls.
    """
    k = torch.arange(min(n, _PERIOD), dtype=torch.float64)
    # Two incommensurate frequencies, so neighbouring filters are not near-copies.
    period = 0.5 * torch.sin(k * 0.7853 + phase) + 0.5 * torch.sin(k * 0.1309 + 2.0 * phase)
    return period.float().repeat(-(-n // _PERIOD))[:n]


def formula_state_dict(template: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state_dict with the keys, shapes and dtypes of ``template`` and formula values.

    Conv/linear weights (2-D and more) get amplitude ``2 / sqrt(fan_in)`` (a standard
    deviation near He's ``sqrt(2 / fan_in)``); norm scales ``1 +- 0.1``; biases and
    norm shifts ``+- 0.05``; running means ``+- 0.1``; running variances in
    ``[1, 1.5]``; ``num_batches_tracked`` 0. ``template`` may live on the meta device.
    """
    out: dict[str, Tensor] = {}
    for key, t in template.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = torch.zeros(t.shape, dtype=t.dtype)
            continue
        phase = (zlib.crc32(key.encode()) % 10_000) / 1_000.0
        w = _wave(t.numel(), phase).reshape(t.shape)
        if leaf == "running_mean":
            w = 0.1 * w
        elif leaf == "running_var":
            w = 1.0 + 0.25 * (w + 1.0)
        elif t.ndim >= 2:
            fan_in = math.prod(t.shape[1:])
            w = w * (2.0 / math.sqrt(fan_in))
        elif leaf == "weight":
            w = 1.0 + 0.1 * w
        else:
            w = 0.05 * w
        out[key] = w.to(t.dtype).contiguous()
    return out


def formula_input(shape: tuple[int, ...]) -> Tensor:
    """A float32 batch of ``shape`` with values in ``[-2, 2]``, made without RNG.

    Each sample has its own phase, so the samples (and their outputs) differ.
    """
    B, per_sample = shape[0], math.prod(shape[1:])
    samples = [2.0 * _wave(per_sample, 0.3 + 1.9 * b) for b in range(B)]
    return torch.stack(samples).reshape(shape)  # (B, C*H*W) -> (B, C, H, W)
