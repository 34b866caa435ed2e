"""Handwritten digits: scikit-learn's bundled 8x8 images, no download needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from dlkit.data.tensor import TensorDataModule, check_split_fractions, stratified_split
from dlkit.data.transforms import RandomCrop

__all__ = ["DigitsDataModule"]


class DigitsDataModule(TensorDataModule):
    """The 1,797 8x8 handwritten digits that ship with scikit-learn (UCI optdigits test set).

    The split is stratified and a pure function of ``seed``; scaling statistics come
    from the training split only. Everything lives in memory and is batched by slicing.

    For transfer learning, ``classes`` keeps some digits (relabelled ``0..k-1`` in the
    given order) and ``labels_per_class`` keeps a few labelled training images of each:
    the split of all ten digits is made first, so the validation and test images of the
    kept digits are the same whatever the two options say.

    Args:
        batch_size: Samples per batch. Defaults to 64.
        val_fraction: Share of the data for validation. Defaults to 0.15.
        test_fraction: Share of the data for testing. Defaults to 0.15.
        scaling: ``"minmax"`` divides the 0..16 pixel counts by 16 (range [0, 1]);
            ``"standard"`` subtracts the training mean and divides by its std.
            Defaults to ``"minmax"``.
        resize: Side length to resize to with bilinear interpolation (32 gives
            LeNet-5 its classic input), or None to keep 8x8. Defaults to None.
        flatten: Return ``(N, 64)`` vectors instead of images (for an MLP).
            Defaults to False.
        augment: Shift training images by up to ``random_crop_padding`` pixels in each
            direction (pad with 0, crop back at a random offset), batch-wise on the
            device. Not applied to flattened data. Defaults to False.
        random_crop_padding: Largest shift in pixels of the (resized) image.
            Defaults to 2.
        classes: Digits to keep, e.g. ``[5, 6, 7, 8, 9]``; label ``i`` is ``classes[i]``.
            Defaults to None (all ten, labels the digits themselves).
        labels_per_class: Keep only this many training images of each class, drawn at
            random (from ``seed``); validation and test are untouched. Defaults to None
            (the whole training split).
        seed: Seed of the split, the labelled subset, the shuffling order and the
            shifts. Defaults to 42.

    Shapes:
        x: ``(B, 1, S, S)`` float32 with ``S = resize or 8`` (``(B, S*S)`` when
        ``flatten``); y: ``(B,)`` int64 in ``0..num_classes-1``.

    Raises:
        ValueError: A bad option, named with what is allowed; at :meth:`setup`,
            ``labels_per_class`` above the training images a class has (the smallest
            count is given).

    Example:
        >>> dm = DigitsDataModule(resize=32)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> x.shape, y.shape
        (torch.Size([64, 1, 32, 32]), torch.Size([64]))
        >>> few = DigitsDataModule(resize=32, classes=[5, 6, 7, 8, 9], labels_per_class=10)
        >>> few.setup("fit")
        >>> torch.bincount(few.splits["train"][1]).tolist()
        [10, 10, 10, 10, 10]
    """

    in_chans = 1

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        scaling: Literal["minmax", "standard"] = "minmax",
        resize: int | None = None,
        flatten: bool = False,
        augment: bool = False,
        random_crop_padding: int = 2,
        classes: Sequence[int] | None = None,
        labels_per_class: int | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        if random_crop_padding < 0:
            raise ValueError(f"data.random_crop_padding must be >= 0, got {random_crop_padding}.")
        if scaling not in ("minmax", "standard"):
            raise ValueError(f"data.scaling must be 'minmax' or 'standard', got {scaling!r}.")
        check_split_fractions(val_fraction, test_fraction)
        if resize is not None and resize < 1:
            raise ValueError(f"data.resize must be a positive side length or null, got {resize}.")
        self.classes = _check_classes(classes)
        self.num_classes = len(self.classes)
        if labels_per_class is not None and (
            isinstance(labels_per_class, bool) or not isinstance(labels_per_class, int) or labels_per_class < 1
        ):
            raise ValueError(
                f"data.labels_per_class must be a positive integer or null (every training image), "
                f"got {labels_per_class!r}."
            )
        self.labels_per_class = labels_per_class
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.scaling, self.resize, self.flatten = scaling, resize, flatten
        self.augment = augment and not flatten and random_crop_padding > 0
        self.shift = RandomCrop(padding=random_crop_padding, generator=torch.Generator().manual_seed(seed))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        side = self.resize or 8
        return (side * side,) if self.flatten else (1, side, side)

    def model_hints(self) -> dict[str, Any]:
        """Model settings this data implies; ``null`` model keys are filled from them."""
        side = self.resize or 8
        return {"num_classes": self.num_classes, "in_chans": 1, "img_size": side, "in_features": side * side}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Shift the training images (on their device) when ``augment`` is on."""
        trainer = self.trainer
        if self.augment and trainer is not None and trainer.training and isinstance(batch, (tuple, list)):
            x, y = batch
            return self.shift(x), y
        return batch

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # setup runs once per stage; the split never changes
            return
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)
        x = torch.from_numpy(images.astype(np.float32)).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
        y = torch.from_numpy(labels.astype(np.int64))
        train_frac = 1.0 - self.val_fraction - self.test_fraction
        parts = stratified_split(labels, (train_frac, self.val_fraction, self.test_fraction), self.seed)
        parts = [self._kept(idx, labels) for idx in parts]
        parts[0] = self._labelled_subset(parts[0], labels)
        label_of = torch.full((10,), -1, dtype=torch.int64)  # digit -> label; dropped digits are in no split
        label_of[torch.tensor(self.classes)] = torch.arange(self.num_classes)
        y = label_of[y]
        if self.scaling == "minmax":
            x = x / 16.0
        else:
            train_x = x[torch.from_numpy(parts[0])]
            x = (x - train_x.mean()) / train_x.std()
        if self.resize is not None and self.resize != 8:
            x = torch.nn.functional.interpolate(
                x, size=(self.resize, self.resize), mode="bilinear", align_corners=False
            )
        if self.flatten:
            x = x.flatten(1)  # (N, S*S)
        for name, idx in zip(("train", "val", "test"), parts):
            if len(idx):
                t = torch.from_numpy(idx)
                self.splits[name] = (x[t].contiguous(), y[t])

    def _kept(self, idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The indices of ``idx`` whose digit is one of ``classes``."""
        return idx[np.isin(labels[idx], self.classes)]

    def _labelled_subset(self, train: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``labels_per_class`` random training indices of each class (sorted), or all of them."""
        if self.labels_per_class is None:
            return train
        counts = {c: int((labels[train] == c).sum()) for c in self.classes}
        short = min(counts, key=counts.__getitem__)
        if counts[short] < self.labels_per_class:
            raise ValueError(
                f"data.labels_per_class={self.labels_per_class} is more than the training split has of "
                f"digit {short} ({counts[short]} images with val_fraction={self.val_fraction}, "
                f"test_fraction={self.test_fraction}): use at most {counts[short]}, or null for all."
            )
        # A stream of its own (not the split's); taking the head of one permutation per class
        # makes a larger subset contain a smaller one.
        rng = np.random.default_rng((self.seed, 1))
        picked = [rng.permutation(train[labels[train] == c])[: self.labels_per_class] for c in self.classes]
        return np.sort(np.concatenate(picked))


def _check_classes(classes: Sequence[int] | None) -> list[int]:
    """``classes`` as a list of distinct digits (all ten for None), or a ``data.classes`` error."""
    if classes is None:
        return list(range(10))
    values = list(classes) if isinstance(classes, Sequence) and not isinstance(classes, str) else None
    if values is None or not values:
        raise ValueError(
            f"data.classes must be a non-empty list of digits 0..9 (e.g. [5, 6, 7, 8, 9]) or null for all ten, "
            f"got {classes!r}."
        )
    bad = [c for c in values if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 9]
    if bad:
        raise ValueError(f"data.classes may only name the digits 0..9, got {bad[0]!r} in {values}.")
    repeated = sorted({c for c in values if values.count(c) > 1})
    if repeated:
        raise ValueError(f"data.classes names digit(s) {repeated} more than once in {values}: list each digit once.")
    if len(values) < 2:
        raise ValueError(f"data.classes must keep at least two digits for a classifier, got {values}.")
    return [int(c) for c in values]
