"""Batched image transforms, and the DataModule base that runs them on the device.

Every transform takes a whole batch ``(B, C, H, W)`` and draws all its random numbers
in one call, so augmentation costs a few tensor ops per batch instead of a Python
call per sample (``torchvision``-style per-sample transforms inside a ``DataLoader``
are the usual bottleneck of small-image training on few CPU cores).

Random numbers are drawn on the CPU from an optional ``torch.Generator`` and moved to
the batch's device: the same seed gives the same augmentation on CPU and GPU, and one
CPU generator serves any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlkit.data.tensor import TensorBatchLoader, TensorDataModule

__all__ = [
    "BatchTransform",
    "Compose",
    "ImageDataModule",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "ToFloat",
    "build_transforms",
    "channel_stats",
]


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, int):
        pair = (size, size)
    else:
        pair = tuple(int(s) for s in size)
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {size!r}.")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {size!r}.")
    return pair  # type: ignore[return-value]


def _check_batch(x: Tensor, name: str) -> tuple[int, int, int, int]:
    if x.dim() != 4:
        raise ValueError(f"{name} expects a batch of images (B, C, H, W), got shape {tuple(x.shape)}.")
    B, C, H, W = x.shape
    return B, C, H, W


class BatchTransform(nn.Module):
    """Base of the batched transforms: an ``nn.Module`` mapping ``(B, C, H, W)`` to a batch.

    Being modules, transforms print as a tree, nest in :class:`Compose` or
    ``nn.Sequential``, and can live inside a model.
    """

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ToFloat(BatchTransform):
    """Convert a batch to floating point and multiply it by ``scale``.

    Args:
        scale: Factor applied after the conversion; ``1/255`` maps uint8 pixels to
            ``[0, 1]``. Defaults to ``1/255``.
        dtype: Floating dtype of the result. Defaults to ``torch.float32``.

    Call arguments:
        x: ``(B, C, H, W)`` of any dtype.

    Returns:
        ``(B, C, H, W)`` of ``dtype``.

    Example:
        >>> ToFloat()(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)).max()
        tensor(1.)
    """

    def __init__(self, scale: float = 1 / 255, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.scale, self.dtype = float(scale), dtype

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype)
        return x * self.scale if self.scale != 1.0 else x

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}, dtype={self.dtype}"


class Normalize(BatchTransform):
    """Subtract a per-channel mean and divide by a per-channel standard deviation.

    Args:
        mean: One value for all channels, or one per channel.
        std: Same form as ``mean``; every value must be positive.

    Call arguments:
        x: ``(B, C, H, W)`` floating point, ``C`` equal to the number of values given
            (or any ``C`` for single values).

    Returns:
        ``(B, C, H, W)``, ``(x - mean) / std``.

    Example:
        >>> Normalize(0.5, 0.25)(torch.ones(2, 1, 4, 4)).unique()
        tensor([2.])
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        self.mean = tuple(float(m) for m in (mean if isinstance(mean, Sequence) else [mean]))
        self.std = tuple(float(s) for s in (std if isinstance(std, Sequence) else [std]))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std need the same number of values, got {self.mean} and {self.std}.")
        if min(self.std) <= 0:
            raise ValueError(f"std values must be positive, got {self.std}.")
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cache:  # built once per device, not once per batch
            mean = torch.tensor(self.mean, dtype=torch.float64).view(1, -1, 1, 1)
            inv_std = 1.0 / torch.tensor(self.std, dtype=torch.float64).view(1, -1, 1, 1)
            # (x - mean) / std == x * inv_std + shift: one fused multiply-add per pixel.
            self._cache[key] = (inv_std.to(x.device, x.dtype), (-mean * inv_std).to(x.device, x.dtype))
        return self._cache[key]

    def forward(self, x: Tensor) -> Tensor:
        _, C, _, _ = _check_batch(x, "Normalize")
        if len(self.mean) not in (1, C):
            raise ValueError(f"Normalize has {len(self.mean)} channel values but the batch has {C} channels.")
        if not x.is_floating_point():
            raise TypeError(f"Normalize expects a floating-point batch (add ToFloat first), got {x.dtype}.")
        inv_std, shift = self._stats(x)
        return torch.addcmul(shift, x, inv_std)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


class Resize(BatchTransform):
    """Resize every image of a batch to a fixed size with bilinear interpolation.

    Args:
        size: Output side length, or ``(height, width)``.
        antialias: Low-pass filter when shrinking (avoids aliasing for large
            down-scaling factors). Defaults to False.

    Call arguments:
        x: ``(B, C, H, W)``; integer batches are interpolated in float32 and rounded
            back to their dtype.

    Returns:
        ``(B, C, height, width)``; the input itself when it already has that size.

    Example:
        >>> Resize(32)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, size: int | Sequence[int], antialias: bool = False) -> None:
        super().__init__()
        self.size = _pair(size, "Resize size")
        self.antialias = antialias

    def forward(self, x: Tensor) -> Tensor:
        _, _, H, W = _check_batch(x, "Resize")
        if (H, W) == self.size:
            return x
        dtype = x.dtype
        y = x if x.is_floating_point() else x.float()
        y = F.interpolate(y, size=self.size, mode="bilinear", align_corners=False, antialias=self.antialias)
        if dtype.is_floating_point:
            return y
        info = torch.iinfo(dtype)
        return y.round_().clamp_(info.min, info.max).to(dtype)

    def extra_repr(self) -> str:
        return f"size={self.size}, antialias={self.antialias}"


class RandomCrop(BatchTransform):
    """Crop every image at its own random offset, after padding the borders.

    The crops of a whole batch are read with one advanced-indexing gather: row and
    column indices are ``offset + arange(size)`` per sample, so there is no loop
    over samples.

    Args:
        size: Crop side length or ``(height, width)``; None keeps the input size
            (the usual "pad and crop back" augmentation). Defaults to None.
        padding: Pixels added on every side before cropping. Defaults to 0.
        fill: Value of the padded pixels (0 is black for ``[0, 1]`` or uint8 images;
            pad before normalising). Defaults to 0.
        generator: Source of the offsets; a seeded generator makes the crops
            repeatable. Defaults to None (torch's global generator).

    Call arguments:
        x: ``(B, C, H, W)``, any dtype.

    Returns:
        ``(B, C, height, width)``, same dtype and device.

    Example:
        >>> crop = RandomCrop(padding=4, generator=torch.Generator().manual_seed(0))
        >>> crop(torch.rand(8, 1, 28, 28)).shape
        torch.Size([8, 1, 28, 28])
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        padding: int = 0,
        fill: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"RandomCrop padding must be >= 0, got {padding}.")
        self.size = None if size is None else _pair(size, "RandomCrop size")
        self.padding, self.fill, self.generator = int(padding), fill, generator

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = _check_batch(x, "RandomCrop")
        h, w = self.size or (H, W)
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p), value=self.fill)  # (B, C, H + 2p, W + 2p)
        Hp, Wp = H + 2 * p, W + 2 * p
        if h > Hp or w > Wp:
            raise ValueError(f"RandomCrop size {(h, w)} is larger than the padded image {(Hp, Wp)}.")
        # One draw for all offsets; randint's high is exclusive, so +1 allows the last offset.
        top = torch.randint(0, Hp - h + 1, (B,), generator=self.generator).to(x.device)
        left = torch.randint(0, Wp - w + 1, (B,), generator=self.generator).to(x.device)
        rows = top[:, None] + torch.arange(h, device=x.device)  # (B, h)
        cols = left[:, None] + torch.arange(w, device=x.device)  # (B, w)
        b = torch.arange(B, device=x.device)[:, None, None]  # (B, 1, 1)
        # Advanced indices split by the channel slice put their broadcast shape first.
        out = x[b, :, rows[:, :, None], cols[:, None, :]]  # (B, h, w, C)
        return out.permute(0, 3, 1, 2).contiguous()  # (B, C, h, w)

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}, fill={self.fill}"


class RandomHorizontalFlip(BatchTransform):
    """Mirror each image left-right with probability ``p``, independently per sample.

    Args:
        p: Probability of flipping one image. Defaults to 0.5.
        generator: Source of the coin flips. Defaults to None (torch's global generator).

    Call arguments:
        x: ``(B, C, H, W)``, any dtype.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> x = torch.rand(4, 3, 8, 8)
        >>> torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
        True
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip p must lie in [0, 1], got {p}.")
        self.p, self.generator = float(p), generator

    def forward(self, x: Tensor) -> Tensor:
        B, _, _, _ = _check_batch(x, "RandomHorizontalFlip")
        flip = (torch.rand(B, generator=self.generator) < self.p).to(x.device)
        return torch.where(flip.view(B, 1, 1, 1), x.flip(-1), x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Compose(BatchTransform):
    """Apply batch transforms one after the other.

    Args:
        transforms: Callables mapping a batch to a batch (modules are registered, so
            they print and move with ``.to``).

    Call arguments:
        x: ``(B, C, H, W)``.

    Returns:
        The last transform's output.

    Example:
        >>> t = Compose([ToFloat(), Resize(32), Normalize(0.5, 0.5)])
        >>> t(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]) -> None:
        super().__init__()
        self.transforms = list(transforms)
        # Registered separately so plain functions are allowed alongside modules.
        self.modules_ = nn.ModuleList(t for t in self.transforms if isinstance(t, nn.Module))

    def forward(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = "".join(f"\n  {t!r}" for t in self.transforms)
        return f"Compose({inner}\n)" if inner else "Compose()"


def build_transforms(
    *,
    train: bool,
    augment: bool = False,
    random_crop_padding: int = 0,
    hflip: bool = False,
    resize: int | Sequence[int] | None = None,
    normalize: bool = True,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
) -> Compose:
    """The standard pipeline from a few config options: augment, float, resize, normalise.

    Augmentation (crop, flip) runs on the stored pixels, before ``resize``, so a
    padding of 4 pixels means 4 pixels of the original image.

    Args:
        train: Build the training pipeline (with augmentation when ``augment``);
            False builds the evaluation one.
        augment: Random crop and/or flip in training. Defaults to False.
        random_crop_padding: Padding of the random crop; 0 disables the crop.
            Defaults to 0.
        hflip: Random horizontal flips (p=0.5). Defaults to False.
        resize: Output side length or ``(height, width)``; None keeps the size.
            Defaults to None.
        normalize: Subtract ``mean`` and divide by ``std`` (of ``[0, 1]`` pixels).
            Defaults to True.
        mean: Per-channel mean of the ``[0, 1]`` pixels. Defaults to 0.0.
        std: Per-channel standard deviation. Defaults to 1.0.
        generator: Shared by the random transforms. Defaults to None.

    Returns:
        A :class:`Compose` mapping uint8 ``(B, C, H, W)`` to float32 ``(B, C, H', W')``.

    Example:
        >>> build_transforms(train=True, augment=True, random_crop_padding=4, hflip=True)
    """
    steps: list[BatchTransform] = []
    if train and augment:  # on the stored uint8 pixels: a quarter of float32's memory traffic
        if random_crop_padding:
            steps.append(RandomCrop(padding=random_crop_padding, generator=generator))
        if hflip:
            steps.append(RandomHorizontalFlip(0.5, generator=generator))
    steps.append(ToFloat())
    if resize is not None:
        steps.append(Resize(resize))
    if normalize:
        steps.append(Normalize(mean, std))
    return Compose(steps)


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
                resize = _pair(resize, "data.resize")
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
