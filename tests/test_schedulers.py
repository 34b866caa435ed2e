"""LR schedules: every conf/scheduler option, composed, built and stepped, against its closed form.

Also dlkit.schedulers' own factories (warmup_cosine, one_cycle, noam, cosine_restarts), the
filling of null horizons from the run, each option's interval, and the bad-input errors.
"""

from __future__ import annotations

import functools
import math

import lightning as L
import numpy as np
import pytest
import torch

import dlkit.schedulers
from dlkit import Classifier, create_model
from dlkit.config import group_options, instantiate_node
from dlkit.schedulers import cosine_restarts, noam, one_cycle, warmup_cosine
from dlkit.tasks.optim import fill_schedule_defaults, schedule_interval


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


# ---------------------------------------------------------------- closed forms


def _cos_anneal(start: float, end: float, x: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * x)) / 2


def _one_cycle(t: int, n: int, lr: float, pct=0.3, div=25.0, final_div=1e4, m=(0.85, 0.95)) -> tuple[float, float]:
    """(lr, momentum) of step t of an n-step two-phase cosine one-cycle (Smith; torch's phases)."""
    rise_end, last = pct * n - 1, n - 1
    low, floor = lr / div, lr / div / final_div
    if t <= rise_end:
        x = t / rise_end
        return _cos_anneal(low, lr, x), _cos_anneal(m[1], m[0], x)
    x = (t - rise_end) / (last - rise_end)
    return _cos_anneal(lr, floor, x), _cos_anneal(m[0], m[1], x)


def _noam(t: int, lr: float, d_model: int, warmup: int) -> float:
    k = t + 1  # the first update is step 1
    return lr * d_model**-0.5 * min(k**-0.5, k * warmup**-1.5)


def _sgdr(t: int, lr: float, T_0: int, T_mult: int, eta_min: float = 0.0) -> float:
    T_i = T_0
    while t >= T_i:
        t, T_i = t - T_i, T_i * T_mult
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / T_i)) / 2


# Each option at its yaml defaults, lr 0.1, a run of 5 epochs x 8 steps; rate of step/epoch t.
EPOCHS, PER_EPOCH, LR = 5, 8, 0.1
CLOSED_FORMS = {
    "step": lambda t: LR * 0.1 ** (t // 10),
    "multistep": lambda t: LR * 0.1 ** sum(t >= m for m in (10, 15)),
    "exponential": lambda t: LR * 0.95**t,
    "cosine": lambda t: _cos_anneal(LR, 0.0, t / EPOCHS),
    "warmup_cosine": lambda t: 0.01 * LR if t == 0 else _cos_anneal(LR, 0.0, (t - 1) / (EPOCHS - 1)),  # warm-up 1
    "plateau": lambda t: LR,  # a constant metric: the 4th epoch without improvement (patience 3) is the 5th
    "one_cycle": lambda t: _one_cycle(t, EPOCHS * PER_EPOCH, LR)[0],
    "noam": lambda t: _noam(t, LR, d_model=16, warmup=2),  # 5 % of 40 steps
    "cosine_restarts": lambda t: _sgdr(t, LR, T_0=6, T_mult=2),  # ceil(40 / (1 + 2 + 4))
}
PER_STEP = {"one_cycle", "noam", "cosine_restarts"}


class _WithWidth(torch.nn.Linear):
    d_model = 16


def _option_rates(compose_train, name: str, steps: int, optimizer: type = torch.optim.SGD, **opt_kw):
    cfg = compose_train(f"scheduler={name}")
    factory = instantiate_node(cfg.scheduler, "scheduler")
    interval = schedule_interval(factory, "epoch")
    net = _WithWidth(2, 1)
    opt = optimizer(net.parameters(), lr=LR, **opt_kw)
    sched = fill_schedule_defaults(
        factory, max_epochs=EPOCHS, total_steps=EPOCHS * PER_EPOCH, per_step=interval == "step",
        monitor_mode="min", net=net,
    )(optimizer=opt)  # fmt: skip
    rates, momenta = [], []
    for _ in range(steps):
        group = opt.param_groups[0]
        rates.append(group["lr"])
        momenta.append(group["betas"][0] if "betas" in group else group["momentum"])
        opt.step()
        sched.step(0.0) if name == "plateau" else sched.step()
    return interval, rates, momenta


def test_every_option_has_a_closed_form_here() -> None:
    assert set(group_options("scheduler")) == set(CLOSED_FORMS)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_every_option_composes_and_follows_its_closed_form(name: str, compose_train) -> None:
    steps = EPOCHS * PER_EPOCH if name in PER_STEP else EPOCHS
    interval, rates, _ = _option_rates(compose_train, name, steps)
    assert interval == ("step" if name in PER_STEP else "epoch")
    np.testing.assert_allclose(rates, [CLOSED_FORMS[name](t) for t in range(steps)], rtol=1e-6, atol=1e-12)


def test_one_cycle_equals_torchs_onecycle_and_cycles_momentum(compose_train) -> None:
    n = EPOCHS * PER_EPOCH
    _, rates, momenta = _option_rates(compose_train, "one_cycle", n, momentum=0.9)
    torch_rates = _rates(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=LR, total_steps=n), n)
    np.testing.assert_allclose(rates, torch_rates, rtol=1e-12)
    np.testing.assert_allclose(momenta, [_one_cycle(t, n, LR)[1] for t in range(n)], rtol=1e-9)
    _, _, betas = _option_rates(compose_train, "one_cycle", n, optimizer=torch.optim.Adam)
    np.testing.assert_allclose(betas, momenta, rtol=1e-9)  # Adam's beta1 is cycled the same way


def test_one_cycle_leaves_plain_sgd_without_momentum(compose_train) -> None:
    _, _, momenta = _option_rates(compose_train, "one_cycle", 10)
    assert momenta == [0] * 10  # torch would cycle SGD's momentum 0 -> 0.95 -> 0.85


def test_one_cycle_keeps_per_group_rates() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    opt = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.01}, {"params": net[1].parameters()}], lr=0.1)
    sched = one_cycle(opt, total_steps=20)
    for t in range(20):
        lr0, lr1 = (g["lr"] for g in opt.param_groups)
        assert lr0 == pytest.approx(_one_cycle(t, 20, 0.01)[0]) and lr1 == pytest.approx(10 * lr0)
        opt.step()
        sched.step()


@pytest.mark.parametrize(("d_model", "warmup"), [(512, 4000), (16, 3)])
def test_noam_is_the_transformer_formula(d_model: int, warmup: int) -> None:
    steps = [0, 1, warmup - 2, warmup - 1, warmup, 2 * warmup, 5 * warmup]
    rates = _rates(lambda o: noam(o, d_model=d_model, warmup=warmup), max(steps) + 1, lr=1.0)
    np.testing.assert_allclose([rates[t] for t in steps], [_noam(t, 1.0, d_model, warmup) for t in steps], rtol=1e-9)
    assert max(range(len(rates)), key=rates.__getitem__) == warmup - 1  # the peak is update number `warmup`
    assert rates[warmup - 1] == pytest.approx((d_model * warmup) ** -0.5)


def test_noam_takes_d_model_from_the_network() -> None:
    net = create_model("transformer_seq2seq", src_vocab_size=12, tgt_vocab_size=12, d_model=32, nhead=2)
    factory = functools.partial(noam, d_model=None, warmup=None, T_max=None)
    filled = fill_schedule_defaults(factory, max_epochs=3, total_steps=100, per_step=True, monitor_mode="min", net=net)
    assert filled.keywords == {"d_model": 32, "warmup": None, "T_max": 100}
    with pytest.raises(ValueError, match=r"scheduler.d_model is null and the network \(Linear\) has no"):
        fill_schedule_defaults(factory, max_epochs=3, total_steps=100, per_step=True, monitor_mode="min",
                               net=torch.nn.Linear(2, 1))  # fmt: skip


@pytest.mark.parametrize(("T_0", "T_mult"), [(3, 1), (2, 2), (4, 3)])
def test_cosine_restarts_is_sgdr(T_0: int, T_mult: int) -> None:
    rates = _rates(lambda o: cosine_restarts(o, T_0=T_0, T_mult=T_mult, eta_min=0.001), 40)
    np.testing.assert_allclose(rates, [_sgdr(t, 0.1, T_0, T_mult, 0.001) for t in range(40)], rtol=1e-9)


@pytest.mark.parametrize(
    ("T_max", "cycles", "T_mult", "T_0"), [(40, 3, 2, 6), (14, 3, 2, 2), (10, 4, 1, 3), (5, 1, 2, 5)]
)
def test_cosine_restarts_fits_its_cycles_into_the_run(T_max: int, cycles: int, T_mult: int, T_0: int) -> None:
    sched = cosine_restarts(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1), T_max, cycles=cycles,
                            T_mult=T_mult)  # fmt: skip
    assert sched.T_0 == T_0
    assert sum(T_0 * T_mult**i for i in range(cycles)) >= T_max > sum(T_0 * T_mult**i for i in range(cycles - 1))


def test_an_options_interval_wins_unless_null() -> None:
    OneCycle = torch.optim.lr_scheduler.OneCycleLR
    assert schedule_interval(functools.partial(OneCycle, interval="step"), "epoch") == "step"
    assert schedule_interval(functools.partial(OneCycle, interval="epoch"), "step") == "epoch"
    assert schedule_interval(functools.partial(OneCycle, interval=None), "step") == "step"
    assert schedule_interval(OneCycle, "epoch") == "epoch"
    with pytest.raises(ValueError, match=r"scheduler.interval must be 'step', 'epoch' or null"):
        schedule_interval(functools.partial(OneCycle, interval="batch"))
    filled = fill_schedule_defaults(functools.partial(one_cycle, interval="step", total_steps=None), max_epochs=2,
                                    total_steps=30, per_step=True, monitor_mode="min")  # fmt: skip
    assert filled.keywords == {"total_steps": 30}  # `interval` is the task's to read, not the scheduler's


def _sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)


@pytest.mark.parametrize(
    ("make", "match"),
    [(lambda: one_cycle(_sgd(), total_steps=0), r"scheduler.total_steps must be an integer >= 1, got 0"),
     (lambda: one_cycle(_sgd(), 100, pct_start=1.0), r"scheduler.pct_start must lie in \(0, 1\), got 1.0"),
     (lambda: one_cycle(_sgd(), 100, pct_start=0.0), r"scheduler.pct_start must lie in \(0, 1\)"),
     (lambda: one_cycle(_sgd(), 100, pct_start=0.6, three_phase=True), r"scheduler.pct_start must lie in \(0, 0.5\)"),
     (lambda: one_cycle(_sgd(), 5, pct_start=0.3), r"scheduler.pct_start \* total_steps must be >= 2"),
     (lambda: one_cycle(_sgd(), 100, div_factor=0), r"scheduler.div_factor must be > 0"),
     (lambda: one_cycle(_sgd(), 100, max_lr=-1.0), r"scheduler.max_lr must be > 0"),
     (lambda: one_cycle(_sgd(), 100, base_momentum=0.99), r"scheduler.base_momentum \(0.99\) must be <="),
     (lambda: noam(_sgd(), d_model=0, warmup=10), r"scheduler.d_model must be an integer >= 1, got 0"),
     (lambda: noam(_sgd(), d_model=8, warmup=50, T_max=50),
      r"scheduler.warmup must lie in \[1, T_max\) = \[1, 50\), got 50"),
     (lambda: noam(_sgd(), d_model=8, warmup=0), r"scheduler.warmup must lie in \[1, inf\), got 0"),
     (lambda: noam(_sgd(), d_model=8), r"scheduler.warmup is needed"),
     (lambda: noam(_sgd(), d_model=8, T_max=0), r"scheduler.T_max must be >= 1, got 0"),
     (lambda: cosine_restarts(_sgd(), T_max=10, T_0=11), r"scheduler.T_0 must lie in \[1, T_max\] = \[1, 10\], got 11"),
     (lambda: cosine_restarts(_sgd(), T_0=0), r"scheduler.T_0 must be an integer >= 1, got 0"),
     (lambda: cosine_restarts(_sgd(), T_max=10, T_mult=0), r"scheduler.T_mult must be an integer >= 1"),
     (lambda: cosine_restarts(_sgd(), T_max=10, cycles=0), r"scheduler.cycles must be an integer >= 1"),
     (lambda: cosine_restarts(_sgd(), T_max=-3), r"scheduler.T_max must be >= 1, got -3")],
)  # fmt: skip
def test_out_of_range_values_name_the_key_and_range(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


class _Recorder(L.Callback):
    """The rate and momentum of every group before every training step."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []
        self.momenta: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups
        self.rates.append([g["lr"] for g in groups])
        self.momenta.append(groups[0]["betas"][0])


def test_one_cycle_option_steps_every_step_in_a_task_and_is_logged() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 64), dtype=np.float32), rng.integers(0, 10, 96)
    clf = Classifier(create_model("mlp", in_features=64, hidden_sizes=(8,), num_classes=10))
    clf.compile(optimizer="adam", lr=0.01, scheduler="one_cycle")  # task.scheduler_interval stays "epoch"
    recorder = _Recorder()
    history = clf.fit(x, y, epochs=4, batch_size=32, verbose=False, callbacks=[recorder])
    n = 4 * 3
    expected = [_one_cycle(t, n, 0.01) for t in range(n)]
    np.testing.assert_allclose([r[0] for r in recorder.rates], [e[0] for e in expected], rtol=1e-6)
    np.testing.assert_allclose(recorder.momenta, [e[1] for e in expected], rtol=1e-6)
    # train/lr is the rate of each epoch's last step, logged per step.
    np.testing.assert_allclose(history.history["train/lr"], [expected[3 * e + 2][0] for e in range(4)], rtol=1e-6)
    np.testing.assert_allclose(history.history["train/momentum"], [expected[3 * e + 2][1] for e in range(4)], rtol=1e-6)
