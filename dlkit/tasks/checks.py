"""Checks a task runs on its data: targets against the network's outputs, and one dry forward pass.

Labels outside ``[0, num_classes)`` otherwise end in ``IndexError: Target 7 is out of
bounds`` deep inside torch (or, on a GPU, a device-side assert), float labels in a dtype
error (unless they are whole numbers, which are taken as class indices), and a batch whose labels all equal the loss' ``ignore_index`` in a NaN loss.
:func:`check_class_targets` runs on every batch: on the usual, valid batch it costs one
``min`` and one ``max`` over the labels (a few microseconds), and only a bad batch pays
for finding the first bad sample.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from dlkit.config import ConfigError
from dlkit.data.checks import DataError, first_non_finite

__all__ = ["as_class_indices", "check_class_targets", "check_net_accepts", "check_regression_targets"]


def _first(mask: Tensor) -> int:
    """Index along dim 0 of the first sample where ``mask`` holds anywhere."""
    return int(mask.reshape(len(mask), -1).any(1).nonzero()[0, 0])


def check_class_targets(out: Tensor, target: Tensor, where: str, ignore_index: int | None = None) -> None:
    """Raise a :class:`~dlkit.data.checks.DataError` unless ``target`` fits classifier outputs ``out``.

    Accepted: class indices (integers, or floats holding whole numbers, as Keras takes
    them) of shape ``(B, *out.shape[2:])`` in ``[0, C)``, where
    ``C = out.shape[1]`` (``ignore_index`` allowed, as long as some label is not ignored);
    class probabilities shaped like ``out``; for one-logit (binary) outputs, 0/1 labels or
    probabilities in ``[0, 1]``, one per sample.

    Args:
        out: The network's outputs ``(B, C, ...)``, or ``(B,)`` / ``(B, 1)`` for a binary problem.
        target: The targets of the same ``B`` samples (or of all ``N`` samples: only the
            per-sample shape of ``out`` is used).
        where: What the error calls the targets, e.g. ``"train batch 12: y"`` or ``"y"``;
            the first bad sample is named as ``where[i]``.
        ignore_index: Label the loss skips (``CrossEntropyLoss``'s -100), or None.

    Raises:
        DataError: Naming ``where[i]``, the value, the allowed range and the fix.

    Example:
        >>> check_class_targets(torch.zeros(4, 3), torch.tensor([0, 2, 3, 1]), "y")
        Traceback (most recent call last):
        DataError: y[2] = 3 is not a class index in [0, 3) (the network has 3 outputs, model.num_classes). ...
    """
    per_sample = tuple(out.shape[1:])
    classes = per_sample[0] if per_sample else 1
    binary = classes == 1
    if target.numel() == 0:
        return
    if target.is_floating_point() and not (binary or tuple(target.shape[1:]) == per_sample):
        whole = target == target.round()  # NaN and inf are not whole
        if not bool(whole.all()):
            i = _first(~whole)
            raise DataError(
                f"{where}[{i}] = {target[i].flatten()[~whole[i].flatten()][0].item()}: {where} holds floats "
                f"({target.dtype}) that are not whole numbers, but a classifier with {classes} outputs takes class "
                f"indices, shape (B,): convert labels with y.astype('int64') in NumPy (y.long() in torch), give "
                f"class probabilities of shape (B, {classes}), or use a Regressor for real-valued targets."
            )
        target = target.long()  # whole numbers: class indices, checked as such below
    if target.is_floating_point():
        if float(target.min()) >= 0 and float(target.max()) <= 1:  # NaN fails both
            return
        i = _first(~((target >= 0) & (target <= 1)))
        raise DataError(
            f"{where}[{i}] holds {target[i].flatten()[0].item() if target[i].numel() == 1 else target[i].tolist()}: "
            "class probabilities (and binary labels) must lie in [0, 1]. "
            "Check the labels, or use a Regressor for real-valued targets."
        )
    if target.dtype == torch.bool:
        return
    if binary:
        if target.numel() != len(target):
            raise DataError(f"{where} has shape {tuple(target.shape)}; a one-output (binary) classifier takes one 0/1 "
                            "label per sample, shape (B,).")
        classes = 2
    elif tuple(target.shape[1:]) != per_sample[1:]:
        hint = " (use y.reshape(-1))" if tuple(target.shape[1:]) == (1,) else ""
        raise DataError(
            f"{where} has shape {tuple(target.shape)}, but the network gives {classes} class scores per sample: "
            f"class indices must have shape (B,){hint}, or give class probabilities of shape (B, {classes})."
        )
    if int(target.min()) >= 0 and int(target.max()) < classes:
        return
    valid = (target >= 0) & (target < classes)
    ignored = target == ignore_index if ignore_index is not None else torch.zeros_like(valid)
    if bool(ignored.all()):
        raise DataError(
            f"Every label of {where} equals the loss' ignore_index {ignore_index}, so the loss is undefined (NaN): "
            "each batch needs at least one real label. Check the labels, or shuffle the data."
        )
    if bool((valid | ignored).all()):
        return
    i = _first(~(valid | ignored))
    value = target[i].flatten()[~(valid | ignored)[i].flatten()][0].item()
    what = "the two labels of a one-output (binary) classifier are 0 and 1" if binary else (
        f"the network has {classes} outputs, model.num_classes")
    raise DataError(
        f"{where}[{i}] = {value} is not a class index in [0, {classes}) ({what}). "
        "Fix the labels (classes are numbered from 0), or set model.num_classes to the number of classes."
    )


def as_class_indices(out: Tensor, target: Tensor) -> Tensor:
    """``target`` as int64 when it holds float class indices (Keras' ``np.array([0., 2.])``), else unchanged.

    Float targets shaped like ``out`` are class probabilities, and those of a one-output
    (binary) classifier are 0/1 labels for its BCE loss: both stay floats. Run it after
    :func:`check_class_targets`, which rejects floats that are not whole numbers.

    Args:
        out: The network's outputs ``(B, C, ...)``.
        target: The targets of the same samples.

    Returns:
        The targets the loss and metrics take.

    Example:
        >>> as_class_indices(torch.zeros(3, 4), torch.tensor([0.0, 3.0, 1.0]))
        tensor([0, 3, 1])
    """
    per_sample = tuple(out.shape[1:])
    binary = (per_sample[0] if per_sample else 1) == 1
    if target.is_floating_point() and not binary and tuple(target.shape[1:]) != per_sample:
        return target.long()
    return target


def check_regression_targets(out: Tensor, target: Tensor, where: str) -> None:
    """Raise a :class:`~dlkit.data.checks.DataError` unless ``target`` has one finite value per output.

    Args:
        out: The network's outputs ``(B, D)``.
        target: ``(B, D)`` (or ``(B,)`` when ``D = 1``); or the targets of all ``N`` samples
            (only the per-sample shape of ``out`` is used).
        where: What the error calls the targets (``"val batch 3: y"``).

    Example:
        >>> check_regression_targets(torch.zeros(4, 1), torch.zeros(4, 3), "y")
        Traceback (most recent call last):
        DataError: y has shape (4, 3), 3 target(s) per sample, but the network gives 1 output(s) per sample ...
    """
    per_sample = out[0].numel() if len(out) else 0
    if len(target) and target.numel() != len(target) * per_sample:
        raise DataError(
            f"{where} has shape {tuple(target.shape)}, {target.numel() // len(target)} target(s) per sample, "
            f"but the network gives {per_sample} output(s) per sample (outputs {tuple(out.shape)}): a regressor "
            "needs one target per output. Set model.num_classes to the number of targets per sample, or use a "
            "Classifier for class labels."
        )
    i = first_non_finite(target)
    if i is not None:
        raise DataError(f"{where}[{i}] holds NaN or inf; drop or impute those samples (np.nan_to_num).")


def check_net_accepts(net: nn.Module, example: Any, model: str, data: str) -> Any:
    """Run ``net`` once on a small example batch, so a model/data mismatch fails before training.

    The pass runs in eval mode, without gradients and with the RNG states put back, so it
    changes nothing a run depends on.

    Args:
        net: The network.
        example: A batch of inputs (e.g. the DataModule's ``example_input()``, 2 samples).
        model: How the error names the model (``"model lenet5"``).
        data: How the error names the data (``"data DigitsDataModule"``).

    Returns:
        The network's outputs on ``example``.

    Raises:
        ConfigError: The network failed on the example; both sides and the input shape are named.

    Example:
        >>> out = check_net_accepts(torch.nn.Linear(4, 2), torch.zeros(2, 4), "model linear", "data arrays")
    """
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return net(example)
    except Exception as err:
        shape = tuple(example.shape) if isinstance(example, Tensor) else type(example).__name__
        dtype = f", {example.dtype}" if isinstance(example, Tensor) else ""
        raise ConfigError(
            f"{model} does not fit {data}: on an example batch of shape {shape}{dtype} it raised "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        net.train(was_training)
