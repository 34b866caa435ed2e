"""The IDX DataModules' options for pretrained networks: a training subset (num_train) and given
normalisation statistics (mean, std). Synthetic IDX files; the defaults keep the old behaviour."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

import dlkit.data.idx as idx_mod
from dlkit.config import ConfigError
from dlkit.data import FashionMNISTDataModule
from dlkit.validation import validate_config
from tests.data.test_idx import make_idx_folder


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """200 training images (20 per class) and 50 test images; nothing else on the search path."""
    monkeypatch.delenv("DLKIT_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_mod, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return make_idx_folder(tmp_path / "d")


def splits(folder: Path, **kwargs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    dm = FashionMNISTDataModule(data_dir=str(folder), val_size=20, **kwargs)
    dm.setup("fit")
    return dm.splits


# ----------------------------------------------------------------------------- num_train


@pytest.mark.parametrize("n", [1, 45, 100, 180])
def test_num_train_keeps_exactly_that_many_with_every_class_its_share(folder, n) -> None:
    x, y = splits(folder, num_train=n)["train"]
    assert len(x) == len(y) == n
    counts = Counter(y.tolist())
    # 180 images of 10 classes left after the split, 18 each: every class within one of n / 10.
    assert all(abs(counts.get(c, 0) - n / 10) < 1 for c in range(10))


def test_num_train_samples_the_training_split_only_and_follows_the_seed(folder) -> None:
    full, sub = splits(folder), splits(folder, num_train=50)
    # Validation and test do not move; the subset is made of training images.
    for name in ("val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(full[name], sub[name]))
    rows = {tuple(img.flatten().tolist()) for img in full["train"][0]}
    assert all(tuple(img.flatten().tolist()) in rows for img in sub["train"][0])
    assert torch.equal(splits(folder, num_train=50)["train"][0], sub["train"][0])
    assert not torch.equal(splits(folder, num_train=50, seed=7)["train"][0], sub["train"][0])
    # A larger subset contains the smaller one (the same order of keys, a longer prefix).
    bigger = {tuple(img.flatten().tolist()) for img in splits(folder, num_train=100)["train"][0]}
    assert all(tuple(img.flatten().tolist()) in bigger for img in sub["train"][0])


def test_num_train_errors_name_the_key_and_the_fix(folder) -> None:
    with pytest.raises(ValueError, match=r"data.num_train=181 is more than the 180 training images .*"
                                         r"data.val_size=20.*null"):
        splits(folder, num_train=181)
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match=r"data.num_train must be a number of images >= 1, or null"):
            FashionMNISTDataModule(num_train=bad)


# ----------------------------------------------------------------------------- mean / std


def test_given_statistics_replace_the_data_sets(folder) -> None:
    dm = FashionMNISTDataModule(data_dir=str(folder), val_size=20, mean=127 / 255, std=128 / 255)
    x = dm.example_input(4)
    raw = dm.splits["train"][0][:4].float()
    # EfficientNet-Lite's input, (x * 255 - 127) / 128, from the standardisation.
    torch.testing.assert_close(x, (raw - 127) / 128, atol=1e-6, rtol=0)
    assert dm.mean == (127 / 255,) and dm.std == (128 / 255,)


def test_without_statistics_the_data_sets_own_are_used(folder) -> None:
    dm = FashionMNISTDataModule(data_dir=str(folder), val_size=20)
    dm.setup("fit")
    assert dm.mean == (0.2860,) and dm.std == (0.3530,) and dm.num_train is None
    assert len(dm.splits["train"][0]) == 180


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mean": 0.5}, r"data.mean and data.std go together \(got mean=0.5, std=None\)"),
        ({"std": 0.5}, r"data.mean and data.std go together"),
        ({"mean": 0.5, "std": 0.0}, r"data.std must be > 0, got 0.0"),
        ({"mean": "grey", "std": 0.5}, r"data.mean must be a finite number \(one grey channel\), got 'grey'"),
        ({"mean": 0.5, "std": [0.5, 0.5]}, r"data.std must be a finite number"),
        ({"mean": 0.5, "std": 0.5, "normalize": False}, r"data.normalize=false: set normalize=true, or drop them"),
    ],
)
def test_statistics_errors_name_the_keys(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        FashionMNISTDataModule(**kwargs)


# ----------------------------------------------------------------------------- config


def test_config_defaults_keep_todays_behaviour_and_bad_values_are_caught_early(compose_train, folder) -> None:
    cfg = compose_train("data=fashion_mnist", f"data.data_dir={folder}", "data.val_size=20")
    assert cfg.data.mean is None and cfg.data.std is None and cfg.data.num_train is None
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert dm.mean == (0.2860,) and len(dm.splits["train"][0]) == 180
    for override, key in (("data.std=0", "data.std"), ("data.mean=[.5,nan]", "data.mean"),
                          ("data.num_train=0", "data.num_train")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(compose_train("data=fashion_mnist", override))
