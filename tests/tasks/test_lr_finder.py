"""The LR range test: fastai's suggestions, a real sweep, and nothing left changed afterwards."""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dlkit import Classifier, create_model
from dlkit.data import DigitsDataModule
from dlkit.tasks.lr_finder import LRFinder, find_lr, suggest_lr

pytestmark = pytest.mark.usefixtures("one_thread")

LRS = [10 ** (-6 + i * 0.1) for i in range(70)]
# Flat, then falling between 1e-4 and 1e-2 (steepest at 1e-3), then blowing up.
LOSSES = [2.3 - 1.5 / (1 + math.exp(-(math.log10(lr) + 3) * 3)) + (max(0.0, math.log10(lr) + 1.5) ** 2) for lr in LRS]


def test_suggestions_follow_fastais_definitions() -> None:
    steep = suggest_lr(LRS, LOSSES, "steep")
    assert 5e-4 < steep < 2e-3  # where the falling sigmoid is steepest
    low = int(np.argmin(LOSSES[7:-5])) + 7
    assert suggest_lr(LRS, LOSSES, "minimum") == pytest.approx(LRS[low] / 10)
    valley = suggest_lr(LRS, LOSSES, "valley")
    assert 1e-5 < valley < LRS[low]  # inside the longest falling stretch, before its bottom


def test_valley_is_the_middle_of_the_longest_falling_stretch() -> None:
    lrs = [float(i + 1) for i in range(40)]
    losses = [5.0] * 10 + [4.0 - 0.1 * i for i in range(20)] + [9.0] * 10
    # Ignoring the first 10 % (4 points) and last 5, the longest decreasing run is one flat
    # point and the fall (21 points) ending at index 29; fastai counts the stretch back
    # from its end by that length and picks 1/3 + 1/6 of the way along it.
    begin, end = 29 - 21, 29
    third = (end - begin) / 3
    assert suggest_lr(lrs, losses, "valley") == lrs[begin + int(third) + int(third / 2)]


def test_unknown_suggestion_and_short_curves_are_errors() -> None:
    with pytest.raises(ValueError, match="valley, steep, minimum"):
        suggest_lr(LRS, LOSSES, "middle")
    with pytest.raises(ValueError, match="at least 3 points"):
        suggest_lr([1e-3, 1e-2], [1.0, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"min_lr": 0.0}, "min_lr"), ({"max_lr": 1e-8}, "max_lr"), ({"num_steps": 5}, "num_steps"),
     ({"beta": 1.0}, "beta"), ({"diverge": 1.0}, "diverge"), ({"max_lr": math.inf}, "max_lr")],
)  # fmt: skip
def test_bad_sweep_arguments_name_the_key(kwargs, key) -> None:
    with pytest.raises(ValueError, match=f"find_lr.{key}"):
        LRFinder(**kwargs)


def test_every_group_keeps_its_ratio_to_the_first() -> None:
    finder = LRFinder(min_lr=1e-5, max_lr=1.0, num_steps=11)
    groups = [{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.0}]
    trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=groups)], global_step=0)
    finder.on_train_start(trainer, None)
    for step in (0, 5, 10):
        trainer.global_step = step
        finder.on_train_batch_start(trainer, None, None, 0)
        assert groups[0]["lr"] == pytest.approx(1e-5 * 1e5 ** (step / 10))
        assert groups[1]["lr"] == pytest.approx(groups[0]["lr"] * 0.1) and groups[2]["lr"] == 0.0


@pytest.fixture
def digits() -> DigitsDataModule:
    return DigitsDataModule(resize=32, batch_size=64, seed=0)


def lenet_task(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    task = Classifier(create_model("lenet5", num_classes=10, in_chans=1, variant="modern"))
    return task.compile(optimizer="adam", lr=1e-3)


def test_a_real_sweep_suggests_a_rate_and_leaves_everything_as_it_was(digits, tmp_path: Path) -> None:
    task = lenet_task()
    before = {k: v.clone() for k, v in task.state_dict().items()}
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    rng = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    result = find_lr(task, digits, num_steps=60)
    assert (random.random(), np.random.rand(), torch.rand(1)) == rng  # RNG state put back
    assert all(torch.equal(v, before[k]) for k, v in task.state_dict().items())
    assert 1e-7 <= result.suggestion <= 10 and set(result.suggestions) == {"valley", "steep", "minimum"}
    assert min(result.losses) < result.losses[0]  # the sweep did train
    assert result.lrs == sorted(result.lrs) and len(result.lrs) == len(result.losses)
    png = result.save_plot(tmp_path / "lr_find.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fit_after_the_sweep_equals_a_fit_without_it(digits) -> None:
    plain, swept = lenet_task(), lenet_task()
    find_lr(swept, digits, num_steps=20)
    for task in (plain, swept):
        torch.manual_seed(7)
        task.fit(digits, epochs=1, verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), swept.state_dict().values()))
