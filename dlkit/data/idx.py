"""IDX files (the MNIST format), and DataModules for MNIST and Fashion-MNIST.

The four files of an IDX data set (train/test images and labels, gzipped or not) are
looked for in a fixed order of folders, optionally downloaded (checksummed, renamed
into place atomically), and held in memory as uint8: 60,000 28x28 images are 47 MB
as uint8 against 188 MB as float32, and the conversion to float happens per batch on
the device (see :class:`dlkit.data.image.ImageDataModule`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import struct
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from dlkit.data.tensor import stratified_split
from dlkit.data.image import ImageDataModule

__all__ = [
    "FASHION_MNIST",
    "MNIST",
    "DownloadError",
    "FashionMNISTDataModule",
    "IDXDataModule",
    "IDXFormatError",
    "IDXSpec",
    "MNISTDataModule",
    "download_idx_files",
    "find_idx_files",
    "read_idx",
]

log = logging.getLogger(__name__)

# Where Debian's dataset-* packages install data sets; a module constant so tests can move it.
SYSTEM_DATA_DIR = Path("/usr/share/datasets")

# IDX type codes (third magic byte) -> NumPy dtype; multi-byte values are big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """An IDX file that cannot be parsed: wrong magic number, bad header, truncated data."""


class DownloadError(OSError):
    """Every mirror of a file failed (network error or checksum mismatch)."""


def read_idx(path: str | os.PathLike[str], ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a NumPy array.

    The format is a 4-byte magic number (two zero bytes, a type code, the number of
    dimensions), one big-endian uint32 per dimension, then the values in C order.
    Compression is detected from the content, not the file name.

    Args:
        path: The ``.idx*-ubyte`` or ``.idx*-ubyte.gz`` file.
        ndim: Expected number of dimensions (3 for images, 1 for labels), or None to
            accept any. Defaults to None.

    Returns:
        A writable array with the file's shape, in native byte order.

    Raises:
        IDXFormatError: Naming the file, for a wrong magic number, an unknown type
            code, an unexpected ``ndim``, a corrupt gzip stream, or a size that does
            not match the header (truncated or trailing bytes).

    Example:
        >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", ndim=3)
        >>> images.shape, images.dtype
        ((10000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({err}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(
            f"{path} is not an IDX file: its magic number is {raw[:4].hex() or 'empty'}, "
            "an IDX file starts with two zero bytes, a type code and the number of dimensions."
        )
    code, dims_count = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise IDXFormatError(f"{path}: unknown IDX type code 0x{code:02x} (known: 08 09 0b 0c 0d 0e).")
    if ndim is not None and dims_count != ndim:
        raise IDXFormatError(f"{path}: expected an idx{ndim} file ({ndim} dimensions), it has {dims_count}.")
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise IDXFormatError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header.")
    shape = struct.unpack(f">{dims_count}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise IDXFormatError(
            f"{path} is {what}: the header announces shape {shape} ({expected} data bytes), "
            f"the file has {got}."
        )
    # One copy into a bytearray makes the array writable, so torch.from_numpy shares it quietly.
    data = np.frombuffer(bytearray(memoryview(raw)[header:]), dtype=dtype).reshape(shape)
    return data if dtype.isnative else data.astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class IDXSpec:
    """Everything that tells one IDX data set from another, as data.

    Args:
        name: Display name, used in messages.
        folder: Folder name under ``$DLKIT_DATA_DIR`` and ``/usr/share/datasets``.
        class_names: One name per label value.
        mean: Mean of the training pixels scaled to ``[0, 1]``.
        std: Standard deviation of the training pixels scaled to ``[0, 1]``.
        mirrors: Base URLs tried in order by the download.
        md5: Expected MD5 of each downloaded (gzipped) file; files without one are
            not checked. Defaults to no checksums.
        hflip: Whether random horizontal flips suit the data (not for digits).
            Defaults to False.
        random_crop_padding: Default padding of the random-crop augmentation.
            Defaults to 2.
        apt_package: Debian package installing the files under
            ``/usr/share/datasets/<folder>``, or None. Defaults to None.
        train_images: File name of the training images. Defaults to
            ``"train-images-idx3-ubyte.gz"``.
        train_labels: Defaults to ``"train-labels-idx1-ubyte.gz"``.
        test_images: Defaults to ``"t10k-images-idx3-ubyte.gz"``.
        test_labels: Defaults to ``"t10k-labels-idx1-ubyte.gz"``.

    Example:
        >>> KMNIST = IDXSpec("Kuzushiji-MNIST", "kmnist", tuple("o ki su tsu na ha ma ya re wo".split()),
        ...                  mean=0.19, std=0.35, mirrors=("https://example.org/kmnist/",))
    """

    name: str
    folder: str
    class_names: tuple[str, ...]
    mean: float
    std: float
    mirrors: tuple[str, ...] = ()
    md5: Mapping[str, str] = field(default_factory=dict)
    hflip: bool = False
    random_crop_padding: int = 2
    apt_package: str | None = None
    train_images: str = "train-images-idx3-ubyte.gz"
    train_labels: str = "train-labels-idx1-ubyte.gz"
    test_images: str = "t10k-images-idx3-ubyte.gz"
    test_labels: str = "t10k-labels-idx1-ubyte.gz"

    @property
    def file_names(self) -> dict[str, str]:
        """``{"train_images": ..., "train_labels": ..., "test_images": ..., "test_labels": ...}``."""
        return {
            "train_images": self.train_images,
            "train_labels": self.train_labels,
            "test_images": self.test_images,
            "test_labels": self.test_labels,
        }


FASHION_MNIST = IDXSpec(
    name="Fashion-MNIST",
    folder="fashion-mnist",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # Of the 60,000 training images: 0.28604, 0.35302.
    mean=0.2860,
    std=0.3530,
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    # The checksums published with the data set (zalandoresearch/fashion-mnist README).
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    hflip=True,  # clothes are left-right symmetric; digits are not
    random_crop_padding=4,
    apt_package="dataset-fashion-mnist",
)

MNIST = IDXSpec(
    name="MNIST",
    folder="mnist",
    class_names=tuple(str(d) for d in range(10)),
    mean=0.1307,
    std=0.3081,
    mirrors=(
        "http://yann.lecun.com/exdb/mnist/",
        # The original host often refuses scripted downloads; this copy serves the same files.
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    hflip=False,
    random_crop_padding=2,
)


def _cache_dir(spec: IDXSpec) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dlkit" / spec.folder


def search_dirs(
    spec: IDXSpec, data_dir: str | os.PathLike[str] | None = None
) -> list[tuple[str, Path | None]]:
    """The folders searched for a data set's files, in order, each with a label.

    Order: ``data_dir`` (the config value), ``$DLKIT_DATA_DIR/<folder>``,
    ``/usr/share/datasets/<folder>`` (Debian packages), and the download cache
    ``$XDG_CACHE_HOME/dlkit/<folder>`` (``~/.cache/dlkit/<folder>``) where
    ``download=True`` puts files when no folder is configured. A folder is None when
    its setting is unset.

    Example:
        >>> [label for label, _ in search_dirs(FASHION_MNIST)]
        ['data.data_dir', '$DLKIT_DATA_DIR/fashion-mnist', 'system folder', 'download cache']
    """
    env = os.environ.get("DLKIT_DATA_DIR")
    return [
        ("data.data_dir", Path(data_dir).expanduser() if data_dir else None),
        (f"$DLKIT_DATA_DIR/{spec.folder}", Path(env).expanduser() / spec.folder if env else None),
        ("system folder", SYSTEM_DATA_DIR / spec.folder),
        ("download cache", _cache_dir(spec)),
    ]


def _resolve(folder: Path, name: str) -> Path | None:
    """``folder/name``, or the same name without ``.gz`` (or with it), if it is a file."""
    alt = name[:-3] if name.endswith(".gz") else name + ".gz"
    for candidate in (folder / name, folder / alt):
        if candidate.is_file():
            return candidate
    return None


def _missing(folder: Path, spec: IDXSpec) -> list[str]:
    return [name for name in spec.file_names.values() if _resolve(folder, name) is None]


def find_idx_files(spec: IDXSpec, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Locate the four files of a data set in the first folder that has all of them.

    Args:
        spec: The data set.
        data_dir: The configured folder, searched first. Defaults to None.

    Returns:
        ``{"train_images": path, "train_labels": ..., "test_images": ..., "test_labels": ...}``.

    Raises:
        FileNotFoundError: Listing every folder searched (and what each lacks) and
            the ways to get the files.

    Example:
        >>> find_idx_files(FASHION_MNIST)["test_labels"]
        PosixPath('/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz')
    """
    report = []
    for i, (label, folder) in enumerate(search_dirs(spec, data_dir), start=1):
        if folder is None:
            report.append(f"  {i}. {label}: not set")
            continue
        if not folder.is_dir():
            report.append(f"  {i}. {label}: {folder} (no such folder)")
            continue
        missing = _missing(folder, spec)
        if not missing:
            files = {key: _resolve(folder, name) for key, name in spec.file_names.items()}
            if data_dir and i > 1:
                log.warning("%s files not in data.data_dir=%s; using %s", spec.name, data_dir, folder)
            return files  # type: ignore[return-value]
        report.append(f"  {i}. {label}: {folder} (missing {', '.join(missing)})")
    raise FileNotFoundError(_not_found_message(spec, report))


def _not_found_message(spec: IDXSpec, report: list[str]) -> str:
    hints = []
    if spec.apt_package:
        hints.append(
            f"install Debian's package: `apt-get install {spec.apt_package}` "
            f"(puts the full set in {SYSTEM_DATA_DIR / spec.folder})"
        )
    hints.append(f"put the files in $DLKIT_DATA_DIR/{spec.folder} or in the folder given as data.data_dir")
    if spec.mirrors:
        hints.append(f"set data.download=true (download=True) to fetch them from {spec.mirrors[0]}")
    names = ", ".join(spec.file_names.values())
    return (
        f"{spec.name} IDX files not found. Looked in, in this order:\n" + "\n".join(report)
        + f"\nExpected files: {names} (gzipped or not).\nTo get them: "
        + "; or ".join(hints) + "."
    )


def _fetch(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Download ``url`` to ``dest`` through a temporary file renamed into place."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": "dlkit"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        if md5 and digest.hexdigest() != md5:
            raise DownloadError(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
        # A reader never sees a half-written file: the rename is atomic within a folder.
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_idx_files(spec: IDXSpec, folder: str | os.PathLike[str], timeout: float = 60.0) -> Path:
    """Download the files of a data set that ``folder`` lacks, checking their MD5.

    Each file is tried from every mirror in turn and written through a temporary
    file that is renamed into place only after its checksum matched, so an
    interrupted download never leaves a partial file under the real name.

    Args:
        spec: The data set (its mirrors and checksums).
        folder: Destination, created if needed.
        timeout: Seconds to wait for a connection or a read. Defaults to 60.

    Returns:
        ``folder`` as a Path.

    Raises:
        DownloadError: When every mirror failed for a file; lists the URLs and errors.

    Example:
        >>> download_idx_files(FASHION_MNIST, "~/data/fashion-mnist")
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    for name in spec.file_names.values():
        if _resolve(folder, name) is not None:
            continue
        errors = []
        for mirror in spec.mirrors:
            url = mirror.rstrip("/") + "/" + name
            log.info("Downloading %s", url)
            try:
                _fetch(url, folder / name, spec.md5.get(name), timeout)
                break
            except OSError as err:  # URLError, HTTPError, timeouts and DownloadError are all OSErrors
                errors.append(f"  {url}: {err}")
        else:
            tried = "\n".join(errors or ["  no mirrors"])
            apt = spec.apt_package
            offline = f"\nWithout a network: `apt-get install {apt}`." if apt else ""
            raise DownloadError(
                f"Could not download {spec.name} file {name} into {folder}:\n{tried}{offline}"
            )
    return folder


class IDXDataModule(ImageDataModule):
    """A data set of IDX files (MNIST format): official train/test, validation carved from train.

    The validation split is a stratified sample of ``val_size`` training images (a
    pure function of ``seed``); the test split is the official test file. Images stay
    uint8 ``(N, 1, H, W)`` in memory; batches are augmented, converted, resized and
    normalised on the device (see :class:`~dlkit.data.image.ImageDataModule`).
    Subclasses set ``spec``; :class:`FashionMNISTDataModule` and
    :class:`MNISTDataModule` are the two built in.

    Args:
        data_dir: Folder with the four files. None searches
            ``$DLKIT_DATA_DIR/<folder>``, ``/usr/share/datasets/<folder>`` and the
            download cache; a given folder is searched first. Defaults to None.
        download: Fetch missing files (checksummed) into ``data_dir``, else
            ``$DLKIT_DATA_DIR/<folder>``, else ``~/.cache/dlkit/<folder>``.
            Defaults to False.
        batch_size: Samples per batch. Defaults to 128.
        val_size: Training images held out for validation (stratified, so the exact
            count can differ by a few when classes are unbalanced); 0 disables
            validation. Defaults to 5000.
        augment: Random crop (and flip) of training batches. Defaults to True.
        random_crop_padding: Padding of the random crop; None uses the data set's
            default (``spec.random_crop_padding``). Defaults to None.
        hflip: Random horizontal flips; None uses the data set's default
            (``spec.hflip``: on for clothes, off for digits). Defaults to None.
        resize: Side length the batches are resized to on the device (32 for
            LeNet-5's classic input), or None for the stored 28x28. Defaults to None.
        normalize: Standardise with the data set's pixel mean/std (``spec.mean``,
            ``spec.std``), or ``mean``/``std`` when given. Defaults to True.
        mean: Mean to normalise with instead of the data set's, e.g. a pretrained
            network's (``127/255`` for ``(x * 255 - 127) / 128``); set with ``std``.
            Defaults to None.
        std: Standard deviation to go with ``mean`` (``128/255``). Defaults to None.
        num_train: Keep this many training images, a sample taken after the
            validation split in which every class keeps its share (to one image), a pure
            function of ``seed``; None keeps all. Defaults to None.
        seed: Seed of the split, the shuffling order and the augmentation.
            Defaults to 42.
        train_transforms: A batch callable replacing the built training pipeline.
            Defaults to None.
        eval_transforms: A batch callable replacing the built evaluation pipeline.
            Defaults to None.
        spec: The data set, for a class without one. Defaults to the class's ``spec``.

    Shapes:
        Loader batches: x uint8 ``(B, 1, 28, 28)``, y int64 ``(B,)``. After
        ``on_after_batch_transfer``: x float32 ``(B, 1, S, S)`` with ``S = resize or 28``.

    Example:
        >>> dm = IDXDataModule(spec=FASHION_MNIST, data_dir="/usr/share/datasets/fashion-mnist")
        >>> dm.setup("fit"); dm.input_shape
        (1, 28, 28)
    """

    spec: ClassVar[IDXSpec | None] = None
    in_chans = 1

    def __init__(
        self,
        data_dir: str | None = None,
        download: bool = False,
        batch_size: int = 128,
        val_size: int = 5000,
        augment: bool = True,
        random_crop_padding: int | None = None,
        hflip: bool | None = None,
        resize: int | Sequence[int] | None = None,
        normalize: bool = True,
        seed: int = 42,
        train_transforms: Callable[[Tensor], Tensor] | None = None,
        eval_transforms: Callable[[Tensor], Tensor] | None = None,
        spec: IDXSpec | None = None,
        num_train: int | None = None,
        mean: float | None = None,
        std: float | None = None,
    ) -> None:
        spec = spec or type(self).spec
        if spec is None:
            raise ValueError(f"{type(self).__name__} needs an IDXSpec (pass spec= or subclass with one).")
        if not isinstance(spec, IDXSpec):
            # A spec names download URLs and a cache folder: only a real IDXSpec, never a mapping.
            raise TypeError(f"{type(self).__name__}(spec=...) must be an IDXSpec, got {type(spec).__name__}.")
        if val_size is None or val_size < 0:
            raise ValueError(f"data.val_size must be a non-negative number of images, got {val_size}.")
        if num_train is not None and (isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 1):
            raise ValueError(f"data.num_train must be a number of images >= 1, or null for all, got {num_train!r}.")
        _check_stats(mean, std, normalize)
        super().__init__(
            batch_size=batch_size,
            seed=seed,
            augment=augment,
            random_crop_padding=spec.random_crop_padding if random_crop_padding is None
            else random_crop_padding,
            hflip=spec.hflip if hflip is None else hflip,
            resize=resize,
            normalize=normalize,
            train_transforms=train_transforms,
            eval_transforms=eval_transforms,
        )
        self.spec = spec  # type: ignore[misc]  # the instance may carry its own
        self.data_dir, self.download, self.val_size = data_dir, download, int(val_size)
        # The statistics batches are normalised with: the data set's, or a pretrained network's.
        self.num_train, self.norm_stats = num_train, (spec.mean, spec.std) if mean is None else (mean, std)
        self.class_names = spec.class_names
        self.num_classes = len(spec.class_names)
        self.image_size = (28, 28)  # the format's usual size until setup reads the header

    def _download_target(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        env = os.environ.get("DLKIT_DATA_DIR")
        return Path(env).expanduser() / self.spec.folder if env else _cache_dir(self.spec)

    def locate(self) -> dict[str, Path]:
        """Find the files (downloading them first when ``download`` and not found)."""
        try:
            return find_idx_files(self.spec, self.data_dir)
        except FileNotFoundError:
            if not self.download:
                raise
        download_idx_files(self.spec, self._download_target())
        return find_idx_files(self.spec, self.data_dir)  # the target is on the search path

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node, so a download happens once.
        if self.download:
            self.locate()

    def _read(self, files: Mapping[str, Path]) -> dict[str, np.ndarray]:
        arrays = {key: read_idx(path, ndim=3 if key.endswith("images") else 1) for key, path in files.items()}
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if len(images) != len(labels):
                raise IDXFormatError(
                    f"{files[f'{split}_images']} has {len(images)} images but "
                    f"{files[f'{split}_labels']} has {len(labels)} labels."
                )
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise IDXFormatError(
                    f"{files[f'{split}_labels']}: labels must lie in 0..{self.num_classes - 1} "
                    f"({self.spec.name} has {self.num_classes} classes), "
                    f"found {labels.min()}..{labels.max()}."
                )
            if images.dtype != np.uint8:
                raise IDXFormatError(
                    f"{files[f'{split}_images']}: expected uint8 pixels, got {images.dtype}."
                )
        if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
            raise IDXFormatError(
                f"Train and test images differ in size: {arrays['train_images'].shape[1:]} in "
                f"{files['train_images']} vs {arrays['test_images'].shape[1:]} in {files['test_images']}."
            )
        return arrays

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # setup runs once per stage; the split never changes
            return
        started = time.perf_counter()
        arrays = self._read(self.locate())
        x_train = torch.from_numpy(arrays["train_images"]).unsqueeze(1)  # (N, 1, H, W)
        y_train = torch.from_numpy(arrays["train_labels"].astype(np.int64))
        N = len(x_train)
        if self.val_size >= N:
            raise ValueError(f"data.val_size={self.val_size} must be smaller than the {N} training images.")
        if self.val_size:
            frac = self.val_size / N
            train_idx, val_idx = stratified_split(arrays["train_labels"], (1.0 - frac, frac), self.seed)
            for name, idx in (("train", train_idx), ("val", val_idx)):
                t = torch.from_numpy(idx)
                self.splits[name] = (x_train[t], y_train[t])
        else:
            self.splits["train"] = (x_train, y_train)
        if self.num_train is not None:
            self.splits["train"] = self._subset(*self.splits["train"])
        x_test = torch.from_numpy(arrays["test_images"]).unsqueeze(1)  # (N, 1, H, W)
        self.splits["test"] = (x_test, torch.from_numpy(arrays["test_labels"].astype(np.int64)))
        H, W = x_train.shape[-2:]
        self._set_stats([self.norm_stats[0]], [self.norm_stats[1]], (H, W))
        log.info("%s: %s in %.2f s", self.spec.name,
                 ", ".join(f"{k} {len(v[0])}" for k, v in self.splits.items()), time.perf_counter() - started)

    def _subset(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Exactly ``num_train`` of the training images, every class keeping its share (to one image)."""
        N = len(x)
        if self.num_train > N:  # type: ignore[operator]
            raise ValueError(
                f"data.num_train={self.num_train} is more than the {N} training images left after "
                f"data.val_size={self.val_size}: lower it, or set it to null to train on all {N}."
            )
        labels, rng = y.numpy(), np.random.default_rng(self.seed)
        # Each class shuffled and spread evenly over [0, 1): any prefix of the sorted keys is stratified.
        keys = np.empty(N)
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            rng.shuffle(idx)
            keys[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
        keep = torch.from_numpy(np.sort(np.argsort(keys, kind="stable")[: self.num_train]))
        return x[keep], y[keep]


def _check_stats(mean: float | None, std: float | None, normalize: bool) -> None:
    """Refuse a ``mean`` without ``std`` (or the reverse), a ``std`` <= 0, or either with ``normalize=False``."""
    if mean is None and std is None:
        return
    if mean is None or std is None:
        raise ValueError(
            f"data.mean and data.std go together (got mean={mean!r}, std={std!r}): set both, or neither "
            "for the data set's own statistics."
        )
    for key, value in (("data.mean", mean), ("data.std", std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number (one grey channel), got {value!r}.")
    if std <= 0:
        raise ValueError(f"data.std must be > 0, got {std!r}.")
    if not normalize:
        raise ValueError("data.mean/data.std are set but data.normalize=false: set normalize=true, or drop them.")


class FashionMNISTDataModule(IDXDataModule):
    """Fashion-MNIST: 70,000 28x28 grey images of Zalando articles in 10 classes.

    60,000 training images (minus ``val_size`` for validation) and the official 10,000
    test images; 6,000 / 1,000 per class. Files are searched in ``data_dir``,
    ``$DLKIT_DATA_DIR/fashion-mnist`` and ``/usr/share/datasets/fashion-mnist`` (where
    ``apt-get install dataset-fashion-mnist`` puts them). Defaults: random crop with
    padding 4 and horizontal flips in training, normalised with mean 0.2860, std 0.3530.
    All arguments are those of :class:`IDXDataModule`.

    Shapes:
        x: float32 ``(B, 1, S, S)`` after the device transforms, ``S = resize or 28``;
        y: int64 ``(B,)`` in ``0..9`` (``class_names`` gives the article type).

    Example:
        >>> dm = FashionMNISTDataModule(batch_size=256, resize=32)
        >>> dm.setup("fit")
        >>> len(dm.splits["train"][0]), len(dm.splits["val"][0]), len(dm.splits["test"][0])
        (55000, 5000, 10000)
    """

    spec = FASHION_MNIST


class MNISTDataModule(IDXDataModule):
    """MNIST: 70,000 28x28 grey handwritten digits, read from IDX files.

    Same splits and options as :class:`FashionMNISTDataModule`; files are searched in
    ``data_dir``, ``$DLKIT_DATA_DIR/mnist``, ``/usr/share/datasets/mnist`` and the
    download cache. Defaults: random crop with padding 2, no flips (a mirrored digit
    is another shape), normalised with mean 0.1307, std 0.3081. All arguments are
    those of :class:`IDXDataModule`.

    Shapes:
        x: float32 ``(B, 1, S, S)`` after the device transforms, ``S = resize or 28``;
        y: int64 ``(B,)`` in ``0..9``.

    Example:
        >>> dm = MNISTDataModule(data_dir="~/data/mnist", download=True)
        >>> dm.setup("fit"); dm.num_classes
        10
    """

    spec = MNIST
