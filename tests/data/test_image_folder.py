"""ImageFolderDataModule on small generated trees of images."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from dlkit.data import ImageFolderDataModule
from dlkit.data.image_folder import find_images, load_images

Image = pytest.importorskip("PIL.Image", reason="ImageFolderDataModule needs Pillow")

# Each class has its own colour, so a pixel tells which class an image came from.
COLOURS = {"bird": (255, 0, 0), "cat": (0, 255, 0), "dog": (0, 0, 255)}
FORMATS = ("png", "jpg", "jpeg", "bmp", "PNG")


def _save(path: Path, colour: tuple[int, int, int], size: tuple[int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    img.convert(mode).save(path)


def make_tree(root: Path, per_class: int = 10) -> Path:
    """``root/<class>/img_<i>.<ext>`` of varying sizes, formats and modes, plus clutter to skip."""
    for name, colour in COLOURS.items():
        for i in range(per_class):
            ext = FORMATS[i % len(FORMATS)]
            mode = "RGBA" if ext == "png" and i % 2 else ("L" if i == 3 else "RGB")
            _save(root / name / f"img_{i}.{ext}", colour, (20 + i, 12 + 2 * i), mode)
        (root / name / "notes.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "images")


def test_find_images_sorted_classes_and_counts(tree):
    classes, paths, labels = find_images(tree)
    assert classes == ["bird", "cat", "dog"]
    assert len(paths) == 30 and np.bincount(labels).tolist() == [10, 10, 10]
    assert all(p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp") for p in paths)
    assert all(p.parent.name == classes[label] for p, label in zip(paths, labels))


def test_load_images_converts_to_rgb_and_grey(tree):
    paths = [tree / "bird" / "img_0.png", tree / "cat" / "img_3.bmp", tree / "dog" / "img_1.jpg"]
    rgb = load_images(paths, 16, in_chans=3)
    assert rgb.shape == (3, 3, 16, 16) and rgb.dtype == torch.uint8
    assert rgb[0, :, 8, 8].tolist() == [255, 0, 0]
    # A grey file becomes three equal channels (Pillow's luma of pure green: 150).
    assert rgb[1, :, 8, 8].tolist() == [150, 150, 150]
    grey = load_images(paths, (8, 12), in_chans=1)
    assert grey.shape == (3, 1, 8, 12)
    assert grey[0, 0, 4, 4].item() == 76  # luma of pure red: 0.299 * 255
    assert abs(grey[2, 0, 4, 4].item() - 29) <= 2  # pure blue, through JPEG


def test_random_splits_are_stratified_disjoint_and_seeded(tree):
    def make(seed):
        dm = ImageFolderDataModule(str(tree), image_size=16, in_chans=3, val_fraction=0.2,
                                   test_fraction=0.2, seed=seed)
        dm.setup("fit")
        return dm

    dm, same, other = make(1), make(1), make(2)
    sizes = {k: len(v[0]) for k, v in dm.splits.items()}
    assert sizes == {"train": 18, "val": 6, "test": 6}
    for split, (x, y) in dm.splits.items():
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 16, 16)
        assert torch.bincount(y, minlength=3).tolist() == [sizes[split] // 3] * 3
        # The dominant channel of every image matches its label: images and labels stay paired
        # (argmax, not equality, as JPEG shifts pure colours by a few levels).
        # Files saved in grey (img_3) have three equal channels and are left out.
        pixels = x[:, :, 8, 8]
        expected = [int(np.argmax(COLOURS[dm.class_names[label]])) for label in y.tolist()]
        got = pixels.argmax(dim=1).tolist()
        keep = [i for i, f in enumerate(dm.files[split]) if f.stem != "img_3"]
        assert [got[i] for i in keep] == [expected[i] for i in keep]
        assert [dm.class_names[label] for label in y.tolist()] == [f.parent.name for f in dm.files[split]]
    files = [f for split in dm.files.values() for f in split]
    assert len(files) == len(set(files)) == 30
    assert dm.files == same.files and dm.files != other.files
    assert dm.num_classes == 3 and dm.input_shape == (3, 16, 16)


def test_grey_module_and_measured_normalisation(tree):
    dm = ImageFolderDataModule(str(tree), image_size=8, in_chans=1, val_fraction=0.0, test_fraction=0.2,
                               augment=False)
    dm.setup("fit")
    assert "val" not in dm.splits and dm.splits["train"][0].shape == (24, 1, 8, 8)
    assert len(dm.mean) == 1 and 0 < dm.mean[0] < 1
    x = dm.eval_transforms(dm.splits["train"][0])
    assert x.dtype == torch.float32
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std(unbiased=False)) - 1) < 1e-3


def test_split_folders_are_used_and_missing_ones_carved(tmp_path):
    root = tmp_path / "images"
    make_tree(root / "train", per_class=10)
    for name, colour in COLOURS.items():
        for i in range(2):
            _save(root / "test" / name / f"t{i}.png", colour, (9, 9))
    dm = ImageFolderDataModule(str(root), image_size=12, val_fraction=0.2)
    dm.setup("fit")
    assert {k: len(v[0]) for k, v in dm.splits.items()} == {"train": 24, "val": 6, "test": 6}
    assert all(p.is_relative_to(root / "test") for p in dm.files["test"])
    assert all(p.is_relative_to(root / "train") for p in dm.files["val"])
    assert dm.class_names == ("bird", "cat", "dog")

    _save(root / "val" / "fish" / "f.png", (1, 2, 3), (9, 9))
    with pytest.raises(ValueError, match="fish"):
        ImageFolderDataModule(str(root), image_size=12).setup("fit")


def test_training_batches_are_augmented_on_the_device_hook(tree):
    dm = ImageFolderDataModule(str(tree), image_size=16, batch_size=8, random_crop_padding=4, resize=24)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=True, predicting=False)
    x, y = dm.on_after_batch_transfer(batch, 0)
    dm.trainer = None
    assert x.shape == (8, 3, 24, 24) and x.dtype == torch.float32 and torch.equal(y, batch[1])
    assert dm.example_input(4).shape == (4, 3, 24, 24)


def test_bad_folders_and_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "nowhere")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderDataModule(str(tmp_path / "empty")).setup("fit")
    root = make_tree(tmp_path / "images", per_class=3)
    (root / "zebra").mkdir()
    (root / "zebra" / "readme.md").write_text("no images here")
    with pytest.raises(ValueError, match=r"without images.*zebra"):
        ImageFolderDataModule(str(root)).setup("fit")
    (root / "zebra" / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(OSError, match=r"Cannot read image .*broken\.png"):
        ImageFolderDataModule(str(root), val_fraction=0.0, test_fraction=0.0).setup("fit")
    with pytest.raises(ValueError, match=r"data\.root is not set"):
        ImageFolderDataModule(None).setup("fit")
    with pytest.raises(ValueError, match=r"data\.in_chans"):
        ImageFolderDataModule(str(root), in_chans=2)
    with pytest.raises(ValueError, match=r"data\.val_fraction"):
        ImageFolderDataModule(str(root), val_fraction=0.6, test_fraction=0.5)


def test_config_builds_with_a_root(compose_train, tree):
    cfg = compose_train("data=image_folder", f"data.root={tree}", "data.image_size=16", "data.in_chans=1",
                        "data.mean=[0.5]", "data.std=[0.25]")
    dm = instantiate(cfg.data)
    assert isinstance(dm, ImageFolderDataModule) and dm.num_classes == 3
    dm.setup("fit")
    assert dm.mean == (0.5,) and dm.std == (0.25,) and dm.input_shape == (1, 16, 16)
    # Without a root the config still builds; loading says what is missing.
    assert instantiate(compose_train("data=image_folder").data).root is None
