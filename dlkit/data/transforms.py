"""Batched image transforms, run on the device a batch is on.

Every transform takes a whole batch ``(B, C, H, W)`` and draws all its random numbers
in one call, so augmentation costs a few tensor ops per batch instead of a Python
call per sample (``torchvision``-style per-sample transforms inside a ``DataLoader``
are the usual bottleneck of small-image training on few CPU cores).

Random numbers are drawn on the CPU from an optional ``torch.Generator`` and moved to
the batch's device: the same seed gives the same augmentation on CPU and GPU, and one
CPU generator serves any device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BatchTransform",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomTransform",
    "Resize",
    "ToFloat",
    "build_transforms",
    "size_pair",
]


def size_pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """An image size as ``(height, width)``: a side length, or a pair given as a sequence.

    Args:
        size: One side length for square images, or ``(height, width)``.
        name: How to name the option in error messages, e.g. ``"data.resize"``.

    Returns:
        ``(height, width)``, both positive ints.

    Raises:
        ValueError: For a sequence that is not a pair, or a size below 1.

    Example:
        >>> size_pair(32, "resize"), size_pair([28, 32], "resize")
        ((32, 32), (28, 32))
    """
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


class RandomTransform(BatchTransform):
    """Base of the random transforms: draws come from ``generator`` (or torch's global one).

    The generator's state is part of the module's ``state_dict`` (its extra state), so
    a DataModule that saves its transforms in a checkpoint resumes the same random
    stream; with the global generator (None) there is nothing of its own to save.

    Args:
        generator: Source of the random numbers. Defaults to None (torch's global generator).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator

    def get_extra_state(self) -> dict[str, Tensor]:
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


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
        self.size = size_pair(size, "Resize size")
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


class RandomCrop(RandomTransform):
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
        super().__init__(generator)
        if padding < 0:
            raise ValueError(f"RandomCrop padding must be >= 0, got {padding}.")
        self.size = None if size is None else size_pair(size, "RandomCrop size")
        self.padding, self.fill = int(padding), fill

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


class RandomHorizontalFlip(RandomTransform):
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
        super().__init__(generator)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip p must lie in [0, 1], got {p}.")
        self.p = float(p)

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
