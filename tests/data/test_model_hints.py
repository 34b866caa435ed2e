"""ImageDataModule.model_hints: classes, channels and the side the model sees, before setup."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dlkit.data import FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule
from dlkit.config import fill_model_from_data


@pytest.mark.parametrize(
    ("resize", "img_size"), [(None, 28), (32, 32), (64, 64), ([32, 32], 32)]
)
def test_idx_hints_follow_resize(resize, img_size) -> None:
    # No files are read: the hints must be available before setup (train.py asks first).
    dm = FashionMNISTDataModule(data_dir="/nonexistent", resize=resize)
    assert dm.model_hints() == {"num_classes": 10, "in_chans": 1, "img_size": img_size}


def test_non_square_resize_gives_no_img_size() -> None:
    assert MNISTDataModule(data_dir="/nonexistent", resize=[32, 28]).model_hints() == {
        "num_classes": 10, "in_chans": 1,
    }


def test_image_folder_hints_count_class_folders(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image", reason="ImageFolderDataModule needs Pillow")
    for name in ("ant", "bee", "cat"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (10, 12), (0, 0, 0)).save(tmp_path / name / "a.png")
    dm = ImageFolderDataModule(tmp_path, image_size=24, in_chans=3, resize=20)
    assert dm.model_hints() == {"num_classes": 3, "in_chans": 3, "img_size": 20}


def test_null_model_keys_are_filled_and_set_ones_kept() -> None:
    cfg = OmegaConf.create({"model": {"name": "lenet5", "num_classes": None, "in_chans": 3, "img_size": None}})
    filled = fill_model_from_data(cfg, FashionMNISTDataModule(data_dir="/nonexistent", resize=32))
    assert filled == {"num_classes": 10, "img_size": 32}
    assert cfg.model.in_chans == 3  # a key the config sets wins over the data
