"""dlkit.schedulers: warm-up then cosine, built from torch's schedulers."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import dlkit.schedulers
from dlkit import Classifier, create_model
from dlkit.schedulers import warmup_cosine


def _rates(sched_factory, steps: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=lr)
    sched = sched_factory(opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize(("T_max", "warmup", "start"), [(10, 2, 0.01), (20, 5, 0.1), (7, 1, 0.5)])
def test_linear_warmup_then_cosine(T_max: int, warmup: int, start: float) -> None:
    lr, eta_min = 0.1, 0.001
    rates = _rates(lambda o: warmup_cosine(o, T_max=T_max, warmup=warmup, start_factor=start, eta_min=eta_min), T_max)
    expected = [lr * (start + (1 - start) * t / warmup) for t in range(warmup)]
    cos_len = T_max - warmup
    expected += [eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / cos_len)) / 2 for t in range(cos_len)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-9)


def test_no_warmup_is_torchs_cosine() -> None:
    ours = _rates(lambda o: warmup_cosine(o, T_max=12, warmup=0), 15)
    torchs = _rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12), 15)
    assert ours == torchs


def test_state_dict_resumes_the_schedule() -> None:
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    sched = warmup_cosine(opt, T_max=10, warmup=3)
    for _ in range(4):
        opt.step()
        sched.step()
    state = (opt.state_dict(), sched.state_dict())
    rest = []
    for _ in range(4):
        opt.step()
        sched.step()
        rest.append(opt.param_groups[0]["lr"])

    opt2 = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    sched2 = warmup_cosine(opt2, T_max=10, warmup=3)
    opt2.load_state_dict(state[0])
    sched2.load_state_dict(state[1])
    resumed = []
    for _ in range(4):
        opt2.step()
        sched2.step()
        resumed.append(opt2.param_groups[0]["lr"])
    np.testing.assert_allclose(resumed, rest, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"warmup": 10}, r"scheduler.warmup must lie in \[0, T_max\) = \[0, 10\), got 10"),
     ({"warmup": -1}, "scheduler.warmup"),
     ({"start_factor": 0.0}, r"scheduler.start_factor must lie in \(0, 1\]")],
)  # fmt: skip
def test_bad_values_name_the_key(kwargs: dict, match: str) -> None:
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        warmup_cosine(opt, T_max=10, **kwargs)


def _fit(scheduler, epochs: int) -> list[float]:
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 64), dtype=np.float32), rng.integers(0, 10, 64)
    clf = Classifier(create_model("mlp", in_features=64, hidden_sizes=(8,), num_classes=10))
    clf.compile(optimizer="sgd", lr=0.1, scheduler=scheduler)
    return clf.fit(x, y, epochs=epochs, batch_size=32, verbose=False).history["train/lr"]


def test_task_fills_T_max_from_the_run() -> None:
    rates = _fit(functools.partial(warmup_cosine, T_max=None, warmup=2, start_factor=0.1), epochs=6)
    np.testing.assert_allclose(rates[:3], [0.01, 0.055, 0.1], rtol=1e-6)
    assert rates[3] < rates[2] and rates[-1] < rates[3]


def test_a_warmup_longer_than_the_run_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"scheduler.warmup must lie in \[0, T_max\) = \[0, 3\), got 5"):
        _fit(functools.partial(warmup_cosine, T_max=None, warmup=5), epochs=3)


@pytest.mark.parametrize(("T_max", "warmup"), [(1, 0), (2, 1), (3, 1), (40, 2), (4690, 234)])
def test_default_warmup_is_five_percent_of_the_run(T_max: int, warmup: int) -> None:
    rates = _rates(lambda o: warmup_cosine(o, T_max=T_max), min(T_max, 300))
    peak = max(range(len(rates)), key=rates.__getitem__)
    assert peak == warmup


def test_config_name_works_for_a_short_run() -> None:
    rates = _fit("warmup_cosine", epochs=3)  # warm-up of 1 epoch: 0.001, 0.1, then cosine
    np.testing.assert_allclose(rates[:2], [0.001, 0.1], rtol=1e-6)
    assert rates[2] < rates[1]


def test_docstring_example_runs(docstring_examples) -> None:
    docstring_examples(dlkit.schedulers)
