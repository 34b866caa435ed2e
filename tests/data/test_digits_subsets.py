"""DigitsDataModule's transfer-learning options: some digits (relabelled), a few labels per class."""

from __future__ import annotations

import pytest
import torch

from dlkit.config import ConfigError
from dlkit.data import DigitsDataModule
from dlkit.validation import validate_config

LATE = [5, 6, 7, 8, 9]


def _setup(**kwargs) -> DigitsDataModule:
    dm = DigitsDataModule(**kwargs)
    dm.setup("fit")
    return dm


def test_defaults_keep_all_ten_digits_and_their_labels() -> None:
    default, explicit = _setup(), _setup(classes=list(range(10)))
    for split in ("train", "val", "test"):
        assert torch.equal(default.splits[split][0], explicit.splits[split][0])
        assert torch.equal(default.splits[split][1], explicit.splits[split][1])
    assert default.num_classes == 10 and default.model_hints()["num_classes"] == 10


@pytest.mark.parametrize("classes", [LATE, [9, 3, 0]])
def test_classes_keep_those_digits_relabelled_in_order(classes: list[int]) -> None:
    full, some = _setup(), _setup(classes=classes)
    assert some.num_classes == len(classes) and some.model_hints()["num_classes"] == len(classes)
    for split in ("train", "val", "test"):
        x, y = full.splits[split]
        kept = torch.isin(y, torch.tensor(classes))
        sub_x, sub_y = some.splits[split]
        # The same images, in the same order, with label i for digit classes[i].
        assert torch.equal(sub_x, x[kept])
        assert torch.equal(torch.tensor(classes)[sub_y], y[kept])
        assert set(sub_y.tolist()) == set(range(len(classes)))


def test_labels_per_class_keeps_n_training_images_and_leaves_val_test_alone() -> None:
    some = _setup(classes=LATE)
    few = _setup(classes=LATE, labels_per_class=10)
    assert torch.bincount(few.splits["train"][1]).tolist() == [10] * 5
    for split in ("val", "test"):
        assert torch.equal(few.splits[split][0], some.splits[split][0])
        assert torch.equal(few.splits[split][1], some.splits[split][1])
    # Every kept image is one of the training split's (same image, same label).
    train_x, train_y = some.splits["train"]
    matches = (few.splits["train"][0].flatten(1)[:, None] == train_x.flatten(1)[None]).all(-1)
    assert (matches.sum(1) >= 1).all()
    assert torch.equal(train_y[matches.float().argmax(1)], few.splits["train"][1])


def test_labelled_subset_follows_the_seed_and_grows_by_adding() -> None:
    def picked(dm: DigitsDataModule) -> set[bytes]:
        return {img.numpy().tobytes() for img in dm.splits["train"][0]}

    ten = _setup(classes=LATE, labels_per_class=10)
    assert picked(ten) == picked(_setup(classes=LATE, labels_per_class=10))
    assert picked(ten) != picked(_setup(classes=LATE, labels_per_class=10, seed=7))
    assert picked(_setup(classes=LATE, labels_per_class=5)) < picked(ten)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": [5, 12]}, r"data.classes may only name the digits 0..9, got 12"),
        ({"classes": [5, 5, 6]}, r"data.classes names digit\(s\) \[5\] more than once"),
        ({"classes": []}, r"data.classes must be a non-empty list of digits 0..9"),
        ({"classes": "56789"}, r"data.classes must be a non-empty list of digits 0..9"),
        ({"classes": [3]}, r"data.classes must keep at least two digits"),
        ({"labels_per_class": 0}, r"data.labels_per_class must be a positive integer or null"),
        ({"labels_per_class": 2.5}, r"data.labels_per_class must be a positive integer or null"),
    ],
)
def test_bad_subset_options_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**kwargs)


def test_more_labels_than_a_class_has_names_the_largest_allowed() -> None:
    dm = DigitsDataModule(classes=LATE, labels_per_class=500)
    with pytest.raises(ValueError, match=r"data.labels_per_class=500 is more than .* use at most \d+"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.labels_per_class=0", "data.labels_per_class must be an integer > 0, got 0."),
        ("data.classes=[5,-1]", "data.classes must be a list of integers >= 0, got [5, -1]."),
    ],
)
def test_schema_checks_the_new_keys_before_anything_is_built(compose_train, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_config(compose_train(override))
