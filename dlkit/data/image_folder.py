"""A user's own images: ``root/class_name/*.png`` folders, loaded once into memory.

Every image is decoded with Pillow once, converted to grey or RGB, resized to one
fixed size and stored as uint8, so an epoch costs no decoding: a folder of 20,000
64x64 RGB images is 246 MB. Larger collections than memory allows need a streaming
loader instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dlkit.data.tensor import stratified_split
from dlkit.data.image import ImageDataModule, channel_stats
from dlkit.data.transforms import size_pair

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataModule", "find_images", "load_images"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_SPLITS = ("train", "val", "test")
_MODES = {1: "L", 3: "RGB"}


def _class_dirs(root: Path) -> list[Path]:
    # Hidden folders (.ipynb_checkpoints, .git) are never classes.
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(dirs, key=lambda p: p.name)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def find_images(
    root: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> tuple[list[str], list[Path], np.ndarray]:
    """List the images of a ``root/class_name/*.ext`` tree.

    Args:
        root: Folder whose sub-folders are the classes.
        class_names: Fix the classes (and their label order) instead of reading them
            from ``root``; used for ``val/``/``test/`` folders, which must not add
            classes. Defaults to None (the sorted sub-folder names).

    Returns:
        ``(class_names, paths, labels)``: classes sorted by folder name, image paths
        sorted by class then file name, and int64 labels ``(N,)``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: No class folders, a class folder without images, or a class
            unknown to ``class_names``; the message names the folders.

    Example:
        >>> classes, paths, labels = find_images("~/data/flowers")
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist (data.root).")
    dirs = _class_dirs(root)
    if not dirs:
        raise ValueError(
            f"{root} has no class folders. Expected root/<class_name>/<image> with images "
            f"ending in {', '.join(IMAGE_EXTENSIONS)}."
        )
    found = [d.name for d in dirs]
    if class_names is None:
        class_names = found
    else:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise ValueError(f"{root} has class folders not in the training classes: {', '.join(unknown)}.")
    index = {name: i for i, name in enumerate(class_names)}
    paths: list[Path] = []
    labels: list[int] = []
    empty = []
    for d in dirs:
        files = _images_in(d)
        if not files:
            empty.append(d.name)
        paths += files
        labels += [index[d.name]] * len(files)
    if empty:
        raise ValueError(
            f"Class folders without images ({', '.join(IMAGE_EXTENSIONS)}) in {root}: {', '.join(empty)}."
        )
    return list(class_names), paths, np.asarray(labels, dtype=np.int64)


def load_images(paths: Sequence[Path], image_size: int | Sequence[int], in_chans: int = 3) -> Tensor:
    """Decode, convert and resize images into one uint8 tensor.

    Args:
        paths: Image files (anything Pillow reads).
        image_size: Side length or ``(height, width)``; images are stretched to it
            (bilinear), not cropped, so the aspect ratio is not kept.
        in_chans: 1 for grey (Pillow mode ``"L"``), 3 for ``"RGB"`` (alpha dropped).
            Defaults to 3.

    Returns:
        uint8 ``(N, in_chans, height, width)``.

    Raises:
        OSError: Naming the file that Pillow cannot read.

    Example:
        >>> load_images([Path("cat.png")], 32, in_chans=1).shape
        torch.Size([1, 1, 32, 32])
    """
    from PIL import Image, ImageOps

    if in_chans not in _MODES:
        raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}.")
    h, w = size_pair(image_size, "image_size")
    mode = _MODES[in_chans]
    out = np.empty((len(paths), h, w, in_chans), dtype=np.uint8)  # (N, H, W, C): Pillow's layout
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                im.draft(mode, (w, h))  # JPEG decodes at 1/2..1/8 scale when that still covers (w, h)
                im = ImageOps.exif_transpose(im)  # camera photos store their rotation in EXIF
                im = im.convert(mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, in_chans)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise OSError(f"Cannot read image {path}: {err}") from err
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


class ImageFolderDataModule(ImageDataModule):
    """Images in ``root/class_name/*.png|jpg|jpeg|bmp`` folders, held in memory as uint8.

    Classes are the sub-folder names, sorted (label ``i`` is ``class_names[i]``). If
    ``root`` has a ``train/`` folder, the splits come from ``train/``, ``val/`` and
    ``test/`` (each laid out by class); a missing ``val/`` or ``test/`` is carved from
    ``train/`` with ``val_fraction``/``test_fraction``. Otherwise all images are split
    by those fractions. Carved splits are stratified and a pure function of ``seed``.

    Args:
        root: The image folder; None fails when the images are first needed.
        image_size: Side length (or ``[height, width]``) every image is resized to at
            load time. Defaults to 64.
        in_chans: 1 converts to grey (``"L"``), 3 to RGB. Defaults to 3.
        val_fraction: Share of the images for validation, when there is no ``val/``.
            Defaults to 0.1.
        test_fraction: Share for testing, when there is no ``test/``. Defaults to 0.1.
        batch_size: Samples per batch. Defaults to 64.
        augment: Random crop (and flip) of training batches. Defaults to True.
        random_crop_padding: Padding of the random crop (0: no crop). Defaults to 4.
        hflip: Random horizontal flips in training. Defaults to True.
        resize: Side length the batches are resized to on the device, or None to keep
            ``image_size``. Defaults to None.
        normalize: Standardise with ``mean``/``std``. Defaults to True.
        mean: Per-channel pixel mean in ``[0, 1]``; None measures it on the training
            split. Defaults to None.
        std: Per-channel pixel std; None measures it on the training split.
            Defaults to None.
        seed: Seed of the split, the shuffling order and the augmentation.
            Defaults to 42.
        train_transforms: A batch callable replacing the built training pipeline.
            Defaults to None.
        eval_transforms: A batch callable replacing the built evaluation pipeline.
            Defaults to None.

    Shapes:
        Loader batches: x uint8 ``(B, in_chans, H, W)``; y int64 ``(B,)``. After
        ``on_after_batch_transfer``: x float32 ``(B, in_chans, S, S)``,
        ``S = resize or image_size``.

    Example:
        >>> dm = ImageFolderDataModule("~/data/flowers", image_size=64, in_chans=3)
        >>> dm.setup("fit"); dm.num_classes, dm.input_shape
        (5, (3, 64, 64))
    """

    def __init__(
        self,
        root: str | None,
        image_size: int | Sequence[int] = 64,
        in_chans: int = 3,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        augment: bool = True,
        random_crop_padding: int = 4,
        hflip: bool = True,
        resize: int | Sequence[int] | None = None,
        normalize: bool = True,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        seed: int = 42,
        train_transforms: Callable[[Tensor], Tensor] | None = None,
        eval_transforms: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            seed=seed,
            augment=augment,
            random_crop_padding=random_crop_padding,
            hflip=hflip,
            resize=resize,
            normalize=normalize,
            train_transforms=train_transforms,
            eval_transforms=eval_transforms,
        )
        if in_chans not in _MODES:
            raise ValueError(f"data.in_chans must be 1 (grey) or 3 (RGB), got {in_chans}.")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                "data.val_fraction and data.test_fraction must lie in [0, 1) and sum to less than 1, "
                f"got {val_fraction} and {test_fraction}."
            )
        try:
            self.image_size = size_pair(image_size, "data.image_size")
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"data.image_size must be a positive side length or [height, width]: {err}"
            ) from None
        # Checked when the images are first needed, so a config without a root still builds.
        self.root = Path(root).expanduser() if root else None
        self.in_chans = in_chans
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self._mean_arg, self._std_arg = mean, std
        self.files: dict[str, list[Path]] = {}
        self._class_names: list[str] | None = None

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """The class folder names, sorted; label ``i`` is ``class_names[i]``."""
        if self._class_names is None:  # a directory listing, cheap enough before setup
            self._class_names = find_images(self._train_root())[0]
        return tuple(self._class_names)

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """Number of class folders."""
        return len(self.class_names)

    def _train_root(self) -> Path:
        if self.root is None:
            raise ValueError(
                "data.root is not set: give the folder holding one sub-folder of images per class "
                "(dlkit-train data=image_folder data.root=/path/to/images)."
            )
        return self.root / "train" if (self.root / "train").is_dir() else self.root

    def _listing(self) -> dict[str, tuple[list[Path], np.ndarray]]:
        """Paths and labels per split, before any image is decoded."""
        classes, paths, labels = find_images(self._train_root())
        self._class_names = classes
        given: dict[str, tuple[list[Path], np.ndarray]] = {}
        if self._train_root() != self.root:  # split folders
            for split in ("val", "test"):
                if (self.root / split).is_dir():
                    _, p, lab = find_images(self.root / split, class_names=classes)
                    given[split] = (p, lab)
        carve = {"val": self.val_fraction, "test": self.test_fraction}
        fractions = [carve[s] if s not in given else 0.0 for s in ("val", "test")]
        parts = stratified_split(labels, (1.0 - sum(fractions), *fractions), self.seed)
        listing = {}
        for split, idx in zip(_SPLITS, parts):
            if split in given:
                listing[split] = given[split]
            elif len(idx):
                listing[split] = ([paths[i] for i in idx], labels[idx])
        if "train" not in listing:
            raise ValueError(f"{self._train_root()}: no training images left after the split.")
        return listing

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # setup runs once per stage; the split never changes
            return
        started = time.perf_counter()
        for split, (paths, labels) in self._listing().items():
            images = load_images(paths, self.image_size, self.in_chans)
            self.splits[split] = (images, torch.from_numpy(labels))
            self.files[split] = paths
        mean, std = self._mean_arg, self._std_arg
        if mean is None or std is None:
            measured_mean, measured_std = channel_stats(self.splits["train"][0])
            mean = measured_mean if mean is None else mean
            # A constant channel has std 0; dividing by 1 keeps it finite.
            std = [s if s > 1e-6 else 1.0 for s in measured_std] if std is None else std
        mean = [float(mean)] if isinstance(mean, (int, float)) else list(mean)
        std = [float(std)] if isinstance(std, (int, float)) else list(std)
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, self.in_chans):
                raise ValueError(f"data.{name} needs 1 or {self.in_chans} values, got {values}.")
        self._set_stats(mean, std, self.image_size)
        sizes = ", ".join(f"{k} {len(v[0])}" for k, v in self.splits.items())
        log.info("%s: %d classes, %s images, loaded in %.2f s", self.root, self.num_classes, sizes,
                 time.perf_counter() - started)

