"""The DataModule base of the image data sets: uint8 images in memory, float batches on the device.

:class:`ImageDataModule` keeps a data set's images as uint8 tensors and runs the batched
transforms of :mod:`dlkit.data.transforms` (augmentation, conversion, resizing,
normalisation) on the device a batch has been moved to; :func:`channel_stats` gives the
pixel statistics it normalises with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from dlkit.data.tensor import TensorBatchLoader, TensorDataModule
from dlkit.data.transforms import Compose, build_transforms, size_pair

__all__ = ["ImageDataModule", "channel_stats"]


class _MappedLoader:
    """A loader whose batches' inputs pass through a transform (prediction on the CPU)."""

    def __init__(self, loader: TensorBatchLoader, transform: Callable[[Tensor], Tensor]) -> None:
        self.loader, self.transform = loader, transform

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield _map_inputs(batch, self.transform)


def _map_inputs(batch: Any, transform: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(batch, Tensor):
        return transform(batch)
    if isinstance(batch, (tuple, list)) and batch:
        return type(batch)([transform(batch[0]), *batch[1:]])
    raise TypeError(f"Expected a batch tensor or an (x, y) pair, got {type(batch).__name__}.")


class ImageDataModule(TensorDataModule):
    """Base of the image DataModules: uint8 images in memory, float batches on the device.

    Subclasses fill ``self.splits`` with uint8 ``(N, C, H, W)`` images and int64 labels
    in ``setup`` and then call :meth:`_set_stats` with the pixel mean/std. Batches
    travel to the device as uint8 (4x fewer bytes than float32) and are augmented,
    converted, resized and normalised there, in Lightning's ``on_after_batch_transfer``:
    the training pipeline while the trainer trains, the evaluation one otherwise.

    Args:
        batch_size: Samples per batch. Defaults to 128.
        seed: Seed of the split, the shuffling order and the augmentation. Defaults to 42.
        augment: Random crop/flip in training. Defaults to True.
        random_crop_padding: Padding of the random crop (0: no crop). Defaults to 4.
        hflip: Random horizontal flips in training. Defaults to False.
        resize: Side length (or ``(height, width)``) the batches are resized to on the
            device, or None. Defaults to None.
        normalize: Standardise with the data set's pixel mean/std. Defaults to True.
        train_transforms: A batch callable replacing the training pipeline built from
            the options above. Defaults to None.
        eval_transforms: A batch callable replacing the evaluation pipeline.
            Defaults to None.

    Example:
        >>> class Noise(ImageDataModule):
        ...     num_classes, in_chans = 2, 1
        ...     def setup(self, stage=None):
        ...         if not self.splits:
        ...             x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
        ...             self.splits["train"] = (x, torch.randint(0, 2, (64,)))
        ...             self._set_stats(*channel_stats(x), image_size=(8, 8))
        >>> Noise(batch_size=16).example_input().dtype
        torch.float32
    """

    num_classes: int
    in_chans: int
    class_names: tuple[str, ...]

    def __init__(
        self,
        batch_size: int = 128,
        seed: int = 42,
        augment: bool = True,
        random_crop_padding: int = 4,
        hflip: bool = False,
        resize: int | Sequence[int] | None = None,
        normalize: bool = True,
        train_transforms: Callable[[Tensor], Tensor] | None = None,
        eval_transforms: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        if random_crop_padding is None or random_crop_padding < 0:
            raise ValueError(f"data.random_crop_padding must be >= 0, got {random_crop_padding}.")
        if resize is not None:
            try:
                resize = size_pair(resize, "data.resize")
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"data.resize must be a positive side length, [height, width] or null: {err}"
                ) from None
        self.augment, self.random_crop_padding, self.hflip = augment, int(random_crop_padding), hflip
        self.resize, self.normalize = resize, normalize
        self._train_tf_arg, self._eval_tf_arg = train_transforms, eval_transforms
        self.train_transforms: Callable[[Tensor], Tensor] | None = None
        self.eval_transforms: Callable[[Tensor], Tensor] | None = None
        self.mean: tuple[float, ...] = ()
        self.std: tuple[float, ...] = ()
        # A private generator keeps the augmentation independent of model code using the global RNG.
        self.generator = torch.Generator().manual_seed(seed)
        self.image_size: tuple[int, int] = (0, 0)

    def _set_stats(self, mean: Sequence[float], std: Sequence[float], image_size: tuple[int, int]) -> None:
        """Record the pixel statistics and stored size, and build the two pipelines."""
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.image_size = image_size

        def build(train: bool) -> Compose:
            return build_transforms(
                train=train, augment=self.augment, random_crop_padding=self.random_crop_padding,
                hflip=self.hflip, resize=self.resize, normalize=self.normalize, mean=self.mean,
                std=self.std, generator=self.generator,
            )

        self.train_transforms = self._train_tf_arg or build(train=True)
        self.eval_transforms = self._eval_tf_arg or build(train=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one model input ``(C, H, W)``, after ``resize``."""
        h, w = self.resize or self.image_size
        return (self.in_chans, h, w)

    def model_hints(self) -> dict[str, Any]:
        """Model settings this data implies; ``dlkit-train`` fills ``null`` model keys from them.

        Answers before ``setup``: ``resize`` fixes the side length when it is set, and
        otherwise the subclass's stored size (IDX files: 28x28 until the header is read;
        image folders: ``image_size``) is used.

        Returns:
            ``{"num_classes": int, "in_chans": int, "img_size": int}``, where ``img_size``
            is the side the model sees (after ``resize``). It is left out for non-square
            inputs, whose side no single number describes, and while the size is unknown.

        Example:
            >>> FashionMNISTDataModule(resize=32).model_hints()
            {'num_classes': 10, 'in_chans': 1, 'img_size': 32}
        """
        hints: dict[str, Any] = {"num_classes": self.num_classes, "in_chans": self.in_chans}
        _, h, w = self.input_shape
        # LeNet/MLP size their first linear layer from one side length, so only a
        # known square size is a safe hint; anything else must be set by hand.
        if h == w and h > 0:
            hints["img_size"] = h
        return hints

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment and convert a batch on its device (Lightning calls this after the transfer).

        Args:
            batch: ``(x, y)`` with ``x`` uint8 ``(B, C, H, W)``, or ``x`` alone.
            dataloader_idx: Index of the loader (unused).

        Returns:
            The batch with ``x`` float32 ``(B, C, H', W')``; prediction batches pass
            through, as :meth:`predict_dataloader` already converted them.
        """
        trainer = self.trainer
        if trainer is not None and trainer.predicting:
            return batch
        if self.train_transforms is None:
            self.setup("fit")
        training = trainer is not None and trainer.training
        transform = self.train_transforms if training else self.eval_transforms
        assert transform is not None
        return _map_inputs(batch, transform)

    def example_input(self, n: int = 2) -> Tensor:
        """The first ``n`` training inputs after the evaluation pipeline (float, normalised)."""
        self.setup("fit")
        assert self.eval_transforms is not None
        return self.eval_transforms(self.splits["train"][0][:n])

    def state_dict(self) -> dict[str, Any]:
        """The augmentation generator's state, saved in checkpoints so a resumed run continues it."""
        return {"augment_rng": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the augmentation generator from :meth:`state_dict`."""
        if "augment_rng" in state_dict:
            self.generator.set_state(state_dict["augment_rng"])

    def predict_dataloader(self) -> _MappedLoader:  # type: ignore[override]
        # Ready-to-use inputs: callers iterating this loader themselves (Classifier.predict)
        # skip Lightning's transfer hooks, so the batches are converted here, on the CPU.
        self.setup("predict")
        assert self.eval_transforms is not None
        return _MappedLoader(self._loader("test"), self.eval_transforms)


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images scaled to ``[0, 1]``, in float64 chunks.

    Args:
        images: uint8 ``(N, C, H, W)``.
        chunk: Images converted to float at a time (bounds the extra memory).
            Defaults to 4096.

    Returns:
        ``(mean, std)``, one value per channel.

    Example:
        >>> channel_stats(torch.full((4, 1, 2, 2), 255, dtype=torch.uint8))
        ([1.0], [0.0])
    """
    _, C, H, W = images.shape
    total = torch.zeros(C, dtype=torch.float64)
    total_sq = torch.zeros(C, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3))
        total_sq += (part * part).sum(dim=(0, 2, 3))
    count = max(len(images) * H * W, 1)
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    return mean.tolist(), [math.sqrt(v) for v in var.tolist()]
