"""IDX reader and the MNIST/Fashion-MNIST DataModules: real files, synthetic files, errors, download."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

import dlkit.data.idx as idx_mod
from dlkit.data import FashionMNISTDataModule, IDXDataModule, MNISTDataModule, read_idx
from dlkit.data.idx import (
    FASHION_MNIST,
    DownloadError,
    IDXFormatError,
    IDXSpec,
    find_idx_files,
)

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_real = pytest.mark.skipif(
    not (REAL_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {REAL_DIR} (apt-get install dataset-fashion-mnist)",
)

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as an IDX file: magic, big-endian dimensions, big-endian values."""
    code = _CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool | None = None) -> Path:
    """Write an IDX file, gzipped when the name ends in .gz (or when ``gz`` says so)."""
    data = idx_bytes(array)
    if gz if gz is not None else path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def synthetic_arrays(n_train: int = 200, n_test: int = 50, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_train = np.arange(n_train, dtype=np.uint8) % classes  # balanced: n_train / classes each
    y_test = np.arange(n_test, dtype=np.uint8) % classes
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    return x_train, y_train, x_test, y_test


def make_idx_folder(folder: Path, gz: bool = True, **kw) -> Path:
    """The four files of a tiny MNIST-format data set in ``folder``."""
    for name, array in zip(NAMES, synthetic_arrays(**kw)):
        write_idx(folder / (name if gz else name[:-3]), array)
    return folder


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download attempt that a test did not fake fails loudly instead of going online."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a URL")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Search paths under tmp_path only: no $DLKIT_DATA_DIR, system folder and cache moved."""
    monkeypatch.delenv("DLKIT_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_mod, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


# --- the reader -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips(tmp_path, dtype, gz):
    array = np.arange(24).reshape(2, 3, 4).astype(dtype)
    if np.dtype(dtype).kind != "u":
        array -= 5  # negative values check the sign and the byte order
    path = write_idx(tmp_path / "a.idx", array, gz=gz)  # no .gz suffix: detected from content
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable


def test_read_idx_errors_name_the_file(tmp_path):
    good = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    cases = {
        "magic.idx": (b"\x08\x03" + good[2:], "magic number"),
        "text.idx": (b"hello, not an idx file", "magic number"),
        "truncated.idx": (good[:-100], "truncated"),
        "header.idx": (good[:9], "truncated"),
        "trailing.idx": (good + b"\x00" * 3, "longer than its header"),
        "code.idx": (good[:2] + b"\x07" + good[3:], "type code"),
        "gzip.idx.gz": (gzip.compress(good)[:-20], "gzip"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(IDXFormatError, match=message) as info:
            read_idx(path)
        assert str(path) in str(info.value)
    with pytest.raises(IDXFormatError, match="idx1"):
        read_idx(write_idx(tmp_path / "images.gz", np.zeros((2, 3, 3), np.uint8)), ndim=1)


# --- the real Fashion-MNIST files -------------------------------------------------------


@pytest.fixture(scope="module")
def real_dm():
    """The real data set, read once for the module (about 1 s)."""
    dm = FashionMNISTDataModule(data_dir=str(REAL_DIR), batch_size=256, resize=32)
    dm.setup("fit")
    return dm


@needs_real
def test_real_files_shapes_dtypes_and_class_counts():
    images = read_idx(REAL_DIR / "t10k-images-idx3-ubyte.gz", ndim=3)
    labels = read_idx(REAL_DIR / "t10k-labels-idx1-ubyte.gz", ndim=1)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist() == [1000] * 10


@needs_real
def test_real_datamodule_splits(real_dm):
    x_tr, y_tr = real_dm.splits["train"]
    x_va, y_va = real_dm.splits["val"]
    x_te, y_te = real_dm.splits["test"]
    assert x_tr.shape == (55000, 1, 28, 28) and x_tr.dtype == torch.uint8
    assert x_va.shape == (5000, 1, 28, 28) and x_te.shape == (10000, 1, 28, 28)
    assert y_tr.dtype == torch.int64
    # 6,000 per class in the 60k training file: 5,500 train + 500 validation each.
    assert torch.bincount(torch.cat([y_tr, y_va])).tolist() == [6000] * 10
    assert torch.bincount(y_va).tolist() == [500] * 10
    assert torch.bincount(y_te).tolist() == [1000] * 10
    assert real_dm.num_classes == 10 and real_dm.class_names[9] == "Ankle boot"
    assert real_dm.input_shape == (1, 32, 32)


@needs_real
def test_real_batches_after_the_device_transforms(real_dm):
    x, y = next(iter(real_dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (256, 1, 28, 28)
    real_dm.trainer = SimpleNamespace(training=True, predicting=False)
    try:
        xt, yt = real_dm.on_after_batch_transfer((x, y), 0)
        real_dm.trainer = SimpleNamespace(training=False, predicting=False)
        xe, _ = real_dm.on_after_batch_transfer((x, y), 0)
    finally:
        real_dm.trainer = None
    assert torch.equal(yt, y)
    for out in (xt, xe):
        assert out.shape == (256, 1, 32, 32) and out.dtype == torch.float32
    lo, hi = (0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530
    assert lo - 1e-5 <= float(xt.min()) and float(xt.max()) <= hi + 1e-5
    # Standardised: roughly zero mean, unit spread (one batch, so loose bounds).
    assert abs(float(xe.mean())) < 0.15 and 0.8 < float(xe.std()) < 1.2
    assert not torch.equal(xt, xe)  # augmentation changed the training batch
    # Outside a trainer the hook applies the evaluation pipeline.
    torch.testing.assert_close(real_dm.on_after_batch_transfer((x, y), 0)[0], xe)


# --- synthetic files: search order, errors, the DataModule ------------------------------


def test_search_order(isolated, monkeypatch):
    own, env, system, cache = (isolated / d for d in ("own", "env", "system", "cache"))
    for folder in (own, env / "fashion-mnist", system / "fashion-mnist", cache / "dlkit" / "fashion-mnist"):
        make_idx_folder(folder)
    monkeypatch.setenv("DLKIT_DATA_DIR", str(env))
    assert find_idx_files(FASHION_MNIST, own)["train_images"].parent == own
    assert find_idx_files(FASHION_MNIST)["train_images"].parent == env / "fashion-mnist"
    monkeypatch.delenv("DLKIT_DATA_DIR")
    assert find_idx_files(FASHION_MNIST)["train_images"].parent == system / "fashion-mnist"
    # A configured folder without the files falls through to the next place.
    fallback = find_idx_files(FASHION_MNIST, isolated / "nothing")
    assert fallback["test_labels"].parent == system / "fashion-mnist"
    for f in (system / "fashion-mnist").iterdir():
        f.unlink()
    assert find_idx_files(FASHION_MNIST)["train_images"].parent == cache / "dlkit" / "fashion-mnist"


def test_uncompressed_files_are_accepted(isolated):
    folder = make_idx_folder(isolated / "raw", gz=False)
    files = find_idx_files(FASHION_MNIST, folder)
    assert files["train_images"].name == "train-images-idx3-ubyte"
    dm = FashionMNISTDataModule(data_dir=str(folder), val_size=20)
    dm.setup("fit")
    assert len(dm.splits["train"][0]) == 180


def test_missing_files_error_lists_every_place_and_the_remedies(isolated, monkeypatch):
    monkeypatch.setenv("DLKIT_DATA_DIR", str(isolated / "env"))
    partial = isolated / "partial"
    write_idx(partial / NAMES[0], np.zeros((2, 28, 28), np.uint8))
    dm = FashionMNISTDataModule(data_dir=str(partial))
    with pytest.raises(FileNotFoundError) as info:
        dm.setup("fit")
    msg = str(info.value)
    for expected in (
        str(partial), str(isolated / "env" / "fashion-mnist"), str(isolated / "system" / "fashion-mnist"),
        str(isolated / "cache" / "dlkit" / "fashion-mnist"),
        "missing train-labels-idx1-ubyte.gz", "apt-get install dataset-fashion-mnist",
        "$DLKIT_DATA_DIR", "download=true",
    ):
        assert expected in msg, expected
    # MNIST has no Debian package, so the message does not invent one.
    with pytest.raises(FileNotFoundError) as info:
        MNISTDataModule().setup("fit")
    assert "apt-get" not in str(info.value) and "$DLKIT_DATA_DIR/mnist" in str(info.value)


def test_inconsistent_files_are_reported(isolated):
    folder = make_idx_folder(isolated / "d")
    write_idx(folder / NAMES[1], np.zeros(199, np.uint8))
    with pytest.raises(IDXFormatError, match=r"200 images but .* 199 labels"):
        FashionMNISTDataModule(data_dir=str(folder)).setup("fit")
    write_idx(folder / NAMES[1], np.full(200, 12, np.uint8))
    with pytest.raises(IDXFormatError, match=r"labels must lie in 0..9"):
        FashionMNISTDataModule(data_dir=str(folder)).setup("fit")
    write_idx(folder / NAMES[1], np.zeros(200, np.uint8))
    write_idx(folder / NAMES[0], np.zeros((200, 28, 28), np.float32))
    with pytest.raises(IDXFormatError, match="expected uint8 pixels"):
        FashionMNISTDataModule(data_dir=str(folder)).setup("fit")
    (folder / NAMES[2]).write_bytes(b"\x00\x00\x08")
    with pytest.raises(IDXFormatError, match="t10k-images"):
        MNISTDataModule(data_dir=str(folder)).setup("fit")


def test_synthetic_datamodule_split_is_stratified_and_seeded(isolated):
    folder = make_idx_folder(isolated / "d", n_train=400, n_test=30)

    def val_labels_and_images(seed: int):
        dm = MNISTDataModule(data_dir=str(folder), val_size=100, seed=seed)
        dm.setup("fit")
        return dm

    a, b, c = (val_labels_and_images(s) for s in (0, 0, 1))
    assert len(a.splits["train"][0]) == 300 and len(a.splits["val"][0]) == 100
    assert len(a.splits["test"][0]) == 30
    assert torch.bincount(a.splits["val"][1]).tolist() == [10] * 10
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])
    # Train and validation together are exactly the training file.
    both = torch.cat([a.splits["train"][0], a.splits["val"][0]]).flatten(1)
    assert len(torch.unique(both, dim=0)) == 400
    # No validation at all.
    dm = MNISTDataModule(data_dir=str(folder), val_size=0)
    dm.setup("fit")
    assert "val" not in dm.splits and dm.val_dataloader() == []
    with pytest.raises(ValueError, match=r"data\.val_size"):
        MNISTDataModule(data_dir=str(folder), val_size=400).setup("fit")


def test_defaults_come_from_the_spec(isolated):
    fashion, mnist = FashionMNISTDataModule(), MNISTDataModule()
    assert fashion.hflip and not mnist.hflip
    assert (fashion.random_crop_padding, mnist.random_crop_padding) == (4, 2)
    assert not FashionMNISTDataModule(hflip=False).hflip
    with pytest.raises(ValueError, match="IDXSpec"):
        IDXDataModule()


def test_example_input_and_predict_batches_are_model_ready(isolated):
    folder = make_idx_folder(isolated / "d")
    dm = FashionMNISTDataModule(data_dir=str(folder), val_size=20, batch_size=16, resize=32)
    example = dm.example_input(3)
    assert example.shape == (3, 1, 32, 32) and example.dtype == torch.float32
    x, y = next(iter(dm.predict_dataloader()))
    assert x.shape == (16, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # The trainer's predict loop then leaves them alone.
    dm.trainer = SimpleNamespace(training=False, predicting=True)
    assert dm.on_after_batch_transfer((x, y), 0)[0] is x
    dm.trainer = None


def test_augmentation_state_survives_a_checkpoint(isolated):
    folder = make_idx_folder(isolated / "d")
    dm = FashionMNISTDataModule(data_dir=str(folder), val_size=20, batch_size=32)
    dm.setup("fit")
    x = dm.splits["train"][0][:32]
    dm.train_transforms(x)  # advance the generator a little
    state = dm.state_dict()
    expected = dm.train_transforms(x)
    resumed = FashionMNISTDataModule(data_dir=str(folder), val_size=20, batch_size=32)
    resumed.setup("fit")
    resumed.load_state_dict(state)
    assert torch.equal(resumed.train_transforms(x), expected)


# --- download ---------------------------------------------------------------------------


def _serve(files: dict[str, bytes], calls: list[str], fail_hosts: tuple[str, ...] = ()):
    def fake_urlopen(request, timeout=None):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        calls.append(url)
        if url.startswith(fail_hosts):
            raise urllib.error.URLError("no route to host")
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    return fake_urlopen


def test_download_with_fallback_mirror_checksums_and_atomic_rename(isolated, monkeypatch):
    source = make_idx_folder(isolated / "source")
    payload = {name: (source / name).read_bytes() for name in NAMES}
    spec = IDXSpec(
        name="Tiny", folder="tiny", class_names=tuple("abcdefghij"), mean=0.5, std=0.29,
        mirrors=("https://down.example/", "https://mirror.example/data"),
        md5={name: hashlib.md5(data).hexdigest() for name, data in payload.items()},
    )
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", _serve(payload, calls, fail_hosts=("https://down.",)))
    target = isolated / "downloaded"
    dm = IDXDataModule(spec=spec, data_dir=str(target), download=True, val_size=20)
    dm.prepare_data()
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)  # no .part files left
    assert calls[:2] == ["https://down.example/train-images-idx3-ubyte.gz",
                         "https://mirror.example/data/train-images-idx3-ubyte.gz"]
    dm.setup("fit")
    assert len(dm.splits["train"][0]) == 180
    # Files already there are not fetched again.
    calls.clear()
    IDXDataModule(spec=spec, data_dir=str(target), download=True).prepare_data()
    assert calls == []


def test_download_without_data_dir_goes_to_dlkit_data_dir(isolated, monkeypatch):
    source = make_idx_folder(isolated / "source")
    payload = {name: (source / name).read_bytes() for name in NAMES}
    spec = IDXSpec(name="Tiny", folder="tiny", class_names=tuple("abcdefghij"), mean=0.5, std=0.29,
                   mirrors=("https://mirror.example/",))
    monkeypatch.setattr(urllib.request, "urlopen", _serve(payload, []))
    monkeypatch.setenv("DLKIT_DATA_DIR", str(isolated / "env"))
    dm = IDXDataModule(spec=spec, download=True, val_size=0)
    dm.setup("fit")  # without prepare_data, as Keras-style code calls it
    assert (isolated / "env" / "tiny" / NAMES[0]).is_file()


def test_download_checksum_mismatch_keeps_nothing(isolated, monkeypatch):
    source = make_idx_folder(isolated / "source")
    payload = {name: (source / name).read_bytes() for name in NAMES}
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", _serve(payload, calls))
    target = isolated / "fm"
    with pytest.raises(DownloadError) as info:
        FashionMNISTDataModule(data_dir=str(target), download=True).prepare_data()
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and "checksum mismatch" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert len(calls) == len(FASHION_MNIST.mirrors)  # every mirror tried for the first file
    assert list(target.iterdir()) == []


# --- Hydra configs ----------------------------------------------------------------------


def test_configs_build_the_datamodules(compose_train, isolated):
    fashion = compose_train("data=fashion_mnist")
    assert fashion.data.data_dir is None and fashion.data.seed == fashion.seed
    dm = instantiate(fashion.data)
    assert isinstance(dm, FashionMNISTDataModule) and dm.hflip and dm.resize == (32, 32)
    mnist = instantiate(compose_train("data=mnist").data)
    assert isinstance(mnist, MNISTDataModule) and not mnist.hflip and mnist.random_crop_padding == 2


def test_default_model_accepts_the_configured_batches(compose_train, isolated):
    folder = make_idx_folder(isolated / "d")
    cfg = compose_train("data=fashion_mnist", f"data.data_dir={folder}", "data.val_size=20")
    dm, net = instantiate(cfg.data), instantiate(cfg.model)
    assert net(dm.example_input()).shape == (2, 10)
