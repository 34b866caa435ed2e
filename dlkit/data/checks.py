"""Checks on in-memory data before any training step: empty splits, mismatched lengths, NaN/inf.

A NaN pixel or an empty array otherwise surfaces epochs later as a NaN model or a
torch-internal error; these checks name the split and the first bad sample instead.
They run once per array (one vectorised pass), when a :class:`~dlkit.data.tensor.TensorDataModule`
or an evaluation loader is built from arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["DataError", "check_arrays", "check_splits", "first_non_finite"]


class DataError(ValueError):
    """Data a run cannot use; the message names the split, the sample index and the fix."""


def first_non_finite(t: Tensor) -> int | None:
    """Index along dim 0 of the first sample holding NaN or inf, or None (integer tensors: None).

    Example:
        >>> first_non_finite(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
        1
    """
    if not t.is_floating_point() or t.numel() == 0:
        return None
    finite = torch.isfinite(t)
    if bool(finite.all()):
        return None
    bad = ~finite.reshape(len(t), -1).all(1)
    return int(bad.nonzero()[0, 0])


def _check_finite(t: Tensor, name: str) -> None:
    i = first_non_finite(t)
    if i is not None:
        values = t[i].flatten()
        bad = values[~torch.isfinite(values)][0].item()
        raise DataError(
            f"{name}[{i}] holds {bad} (NaN/inf values make the loss and the weights NaN). "
            "Drop or impute those samples (np.nan_to_num, or keep the samples where np.isfinite holds)."
        )


def check_arrays(x: Tensor, y: Any, name: str = "data") -> None:
    """Raise a :class:`DataError` for empty inputs, lengths that differ, or NaN/inf values.

    Args:
        x: Inputs, ``(N, ...)``.
        y: Targets ``(N, ...)``, a dict of them per output, or None.
        name: How the error names the arrays (``"train"``, ``"evaluate data"``).

    Raises:
        DataError: Naming ``name``, the array (``x``/``y``) and the first bad sample index.

    Example:
        >>> check_arrays(torch.zeros(0, 3), torch.zeros(0), "train")
        Traceback (most recent call last):
        DataError: train: x is empty (0 samples); training and evaluation need at least one sample.
    """
    if not isinstance(x, Tensor):
        raise DataError(f"{name}: x must be a tensor or array of numbers, got {type(x).__name__}.")
    if x.ndim == 0:
        raise DataError(f"{name}: x is a scalar; give samples along the first dimension, (N, ...).")
    if len(x) == 0:
        raise DataError(f"{name}: x is empty (0 samples); training and evaluation need at least one sample.")
    targets = y.items() if isinstance(y, Mapping) else ([("", y)] if y is not None else [])
    for key, t in targets:
        label = f"y[{key!r}]" if key else "y"
        if not isinstance(t, Tensor):
            raise DataError(f"{name}: {label} must be a tensor or array of numbers, got {type(t).__name__}.")
        if t.ndim == 0 or len(t) != len(x):
            raise DataError(f"{name}: x has {len(x)} samples but {label} has {len(t) if t.ndim else 'none (a scalar)'}; "
                            "give one target per sample.")
        _check_finite(t, f"{name} {label}")
    _check_finite(x, f"{name} x")


def check_splits(splits: Mapping[str, tuple[Tensor, Any]]) -> None:
    """:func:`check_arrays` on every ``name -> (x, y)`` split of a DataModule.

    Example:
        >>> check_splits({"train": (torch.randn(8, 3), torch.zeros(8, dtype=torch.long))})
    """
    for name, (x, y) in splits.items():
        check_arrays(x, y, f"{name} split")
