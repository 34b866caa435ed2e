"""DropoutSchedule: the rate every dropout module holds at every step equals the schedule's formula.

A tiny model holds every kind of dropout dlkit has (a Dropout, a stacked LSTM's dropout,
MultiheadAttention's, a TransformerEncoderLayer's three and its attention's) and trains a
few steps in a real Lightning Trainer through dlkit's Classifier.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import dlkit.callbacks.dropout_schedule
from dlkit import Classifier
from dlkit.callbacks import DropoutSchedule
from dlkit.callbacks.dropout_schedule import SCHEDULES, dropout_sites
from dlkit.config import instantiate_node
from dlkit.layers import LSTM, Dropout, MultiheadAttention, TransformerEncoderLayer

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS, PER_EPOCH = 4, 3  # 12 optimiser steps: 24 samples in batches of 8


class Tiny(nn.Module):
    """(B, T, 4) -> dropout -> 2-layer LSTM -> self-attention -> encoder layer -> mean -> 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = Dropout(0.3)
        self.lstm = LSTM(4, 8, num_layers=2, dropout=0.2, batch_first=True)
        self.attn = MultiheadAttention(8, 2, dropout=0.1, batch_first=True)
        self.enc = TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.drop(x))  # (B, T, 8)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(self.enc(a).mean(dim=1))  # (B, 3)


def _rates(model: nn.Module) -> dict[str, float]:
    """Every rate the model holds, read back through each layer's own attribute."""
    rates = {name: getattr(module, attr) for name, (module, attr) in dropout_sites(model).items()}
    net = model.net if hasattr(model, "net") else model
    rates["<MultiheadAttention.dropout>"] = net.attn.dropout  # the torch-compatible float property
    rates["<encoder self_attn.dropout>"] = net.enc.self_attn.dropout
    return rates


class Recorder(L.Callback):
    """``{global_step: {site: rate}}`` as the training step sees it (runs after the schedule)."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[str, float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen[trainer.global_step] = _rates(pl_module)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 5, 4, generator=g), torch.randint(0, 3, (24,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def _fit(*callbacks: L.Callback, epochs: int = EPOCHS, ckpt_path: str | None = None, **trainer_kw) -> Classifier:
    torch.manual_seed(0)
    task = Classifier(Tiny(), metrics=[])
    trainer_kw = {"logger": False, "enable_checkpointing": False, **trainer_kw}
    trainer = L.Trainer(max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=list(callbacks), **trainer_kw)  # fmt: skip
    trainer.fit(task, train_dataloaders=_loader(), ckpt_path=ckpt_path)
    return task


def _liu(drop_rate: float, epochs: int, niter_per_ep: int, cutoff_epoch: int, mode: str, schedule: str) -> np.ndarray:
    """facebookresearch/dropout's drop_scheduler (Liu et al. 2023), per iteration."""
    early_iters = cutoff_epoch * niter_per_ep
    late_iters = (epochs - cutoff_epoch) * niter_per_ep
    if mode == "early":
        early = np.full(early_iters, drop_rate) if schedule == "constant" else np.linspace(drop_rate, 0, early_iters)
        return np.concatenate((early, np.full(late_iters, 0)))
    return np.concatenate((np.full(early_iters, 0), np.full(late_iters, drop_rate)))


N = EPOCHS * PER_EPOCH
# schedule kwargs -> the rate of step t (0-based), by the formulas in the papers / docstring.
CASES = {
    "constant": ({"p": 0.25}, lambda t: 0.25),
    "linear": ({"start": 0.0, "end": 0.4}, lambda t: 0.4 * t / (N - 1)),
    "linear_cutoff": ({"schedule": "linear", "start": 0.4, "end": 0.1, "cutoff_epoch": 2},
                      lambda t: 0.4 - 0.3 * min(1, t / (2 * PER_EPOCH - 1))),
    "cosine": ({"start": 0.5, "end": 0.1}, lambda t: 0.1 + 0.4 * (1 + math.cos(math.pi * t / (N - 1))) / 2),
    "step": ({"start": 0.0, "end": 0.3, "step_size": 1}, lambda t: 0.3 * (t // PER_EPOCH) / (EPOCHS - 1)),
    "step_2": ({"schedule": "step", "start": 0.2, "end": 0.0, "step_size": 2}, lambda t: 0.2 if t < 6 else 0.0),
    "curriculum": ({"theta_bar": 0.6, "gamma": 0.2}, lambda t: 1 - ((1 - 0.6) * math.exp(-0.2 * t) + 0.6)),
    "early": ({"p": 0.3, "cutoff_epoch": 2}, lambda t: _liu(0.3, EPOCHS, PER_EPOCH, 2, "early", "linear")[t]),
    "early_constant": ({"schedule": "early", "p": 0.3, "cutoff_epoch": 3, "early_mode": "constant"},
                       lambda t: _liu(0.3, EPOCHS, PER_EPOCH, 3, "early", "constant")[t]),
    "late": ({"p": 0.2, "cutoff_epoch": 1}, lambda t: _liu(0.2, EPOCHS, PER_EPOCH, 1, "late", "constant")[t]),
}  # fmt: skip


def test_every_schedule_is_tested() -> None:
    assert {kw.get("schedule", name) for name, (kw, _) in CASES.items()} == set(SCHEDULES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_dropout_module_holds_the_formulas_rate_at_every_step(case: str) -> None:
    kwargs, formula = CASES[case]
    kwargs = {"schedule": case, **kwargs}
    recorder = Recorder()
    _fit(DropoutSchedule(**kwargs), recorder)
    assert sorted(recorder.seen) == list(range(N))
    for t, rates in recorder.seen.items():
        # drop, lstm, attn.attn_dropout, enc.{self_attn.attn_dropout, dropout, dropout1, dropout2}, 2 properties
        assert len(rates) == 9
        np.testing.assert_allclose(list(rates.values()), formula(t), rtol=0, atol=1e-12, err_msg=f"step {t}: {rates}")


def test_per_epoch_interval_uses_the_epoch() -> None:
    recorder = Recorder()
    _fit(DropoutSchedule("linear", start=0.1, end=0.4, interval="epoch"), recorder)
    for t, rates in recorder.seen.items():
        epoch = t // PER_EPOCH
        np.testing.assert_allclose(list(rates.values()), 0.1 + 0.3 * epoch / (EPOCHS - 1), rtol=1e-12)


def test_the_filter_drives_only_the_matching_modules_and_logs_per_group() -> None:
    recorder = Recorder()
    enc = DropoutSchedule("constant", p=0.45, modules="*enc*", name="enc")
    lstm = DropoutSchedule("late", p=0.35, cutoff_epoch=2, modules=["re:lstm$"], name="lstm")
    task = _fit(enc, lstm, recorder)
    assert sorted(enc.sites) == [
        "net.enc.dropout", "net.enc.dropout1", "net.enc.dropout2", "net.enc.self_attn.attn_dropout"
    ]  # fmt: skip
    for t, rates in recorder.seen.items():
        assert rates["net.drop"] == 0.3 and rates["net.attn.attn_dropout"] == 0.1  # untouched
        assert rates["net.enc.dropout1"] == rates["<encoder self_attn.dropout>"] == 0.45
        assert rates["net.lstm"] == (0.0 if t < 2 * PER_EPOCH else 0.35)
    metrics = task.trainer.callback_metrics
    assert metrics["train/dropout_p_enc"] == pytest.approx(0.45)
    assert metrics["train/dropout_p_lstm"] == pytest.approx(0.35)
    assert "train/dropout_p" not in metrics


def test_the_rate_is_logged_every_step() -> None:
    class Logged(L.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.values.append(float(trainer.callback_metrics["train/dropout_p"]))

    logged = Logged()
    _fit(DropoutSchedule("linear", start=0.0, end=0.44), logged)
    np.testing.assert_allclose(logged.values, [0.44 * t / (N - 1) for t in range(N)], rtol=1e-6)


def test_a_resumed_run_continues_the_schedule_exactly(tmp_path: Path) -> None:
    def schedule() -> DropoutSchedule:
        return DropoutSchedule("early", p=0.3, cutoff_epoch=3)

    whole = Recorder()
    _fit(schedule(), whole)
    # Stopped after 4 steps (in the middle of epoch 1), then resumed from that checkpoint.
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    _fit(schedule(), ckpt, epochs=EPOCHS, max_steps=4, enable_checkpointing=True)
    path = tmp_path / "step=4.ckpt"
    saved = torch.load(path, weights_only=True)["callbacks"]
    state = next(v for k, v in saved.items() if k.startswith("DropoutSchedule"))
    assert state["last_rate"] == pytest.approx(whole.seen[3]["net.drop"])
    resumed = Recorder()
    _fit(schedule(), resumed, ckpt_path=str(path))
    assert min(resumed.seen) == 4 and max(resumed.seen) == N - 1
    for t, rates in resumed.seen.items():
        assert rates == whole.seen[t], t


def test_resuming_with_other_settings_warns() -> None:
    sched = DropoutSchedule("early", p=0.3, cutoff_epoch=3)
    state = sched.state_dict()
    with pytest.warns(UserWarning, match=r"settings other than the checkpoint's \(cutoff_epoch, p\)"):
        DropoutSchedule("early", p=0.2, cutoff_epoch=2).load_state_dict(state)


def test_torch_nn_dropout_layers_are_found_too() -> None:
    net = nn.Sequential(nn.Dropout(0.1), nn.LSTM(4, 4, num_layers=2), nn.GRU(4, 4), nn.MultiheadAttention(4, 2),
                        nn.TransformerEncoderLayer(4, 2, 8), LSTM(4, 4))  # fmt: skip
    sites = {name: attr for name, (_, attr) in dropout_sites(net).items()}
    assert sites == {"0": "p", "1": "dropout", "3": "dropout", "4.self_attn": "dropout", "4.dropout": "p",
                     "4.dropout1": "p", "4.dropout2": "p"}  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"p": 1.0}, r"DropoutSchedule.p must lie in \[0, 1\), got 1.0"),
     ({"p": -0.1}, r"DropoutSchedule.p must lie in \[0, 1\)"),
     ({"schedule": "linear", "end": 1.2}, r"DropoutSchedule.end must lie in \[0, 1\)"),
     ({"schedule": "curriculum", "theta_bar": 0.0}, r"DropoutSchedule.theta_bar .* must lie in \(0, 1\], got 0.0"),
     ({"schedule": "curriculum", "theta_bar": 1.5}, r"theta_bar .* must lie in \(0, 1\]"),
     ({"schedule": "curriculum", "gamma": -0.001}, r"DropoutSchedule.gamma must be >= 0, got -0.001"),
     ({"schedule": "curricullum"},
      r"DropoutSchedule.schedule must be one of constant, linear, step, cosine, curriculum, early, late"),
     ({"schedule": "early"}, r"DropoutSchedule.cutoff_epoch \(an integer >= 1\) is required by schedule='early'"),
     ({"schedule": "late", "cutoff_epoch": 0}, r"DropoutSchedule.cutoff_epoch must be an integer >= 1, got 0"),
     ({"schedule": "early", "cutoff_epoch": 2, "early_mode": "cosine"},
      r"DropoutSchedule.early_mode must be 'linear' or 'constant'"),
     ({"interval": "batch"}, r"DropoutSchedule.interval must be 'step' or 'epoch'"),
     ({"schedule": "step", "step_size": 0}, r"DropoutSchedule.step_size must be an integer >= 1")],
)  # fmt: skip
def test_bad_values_fail_at_construction_naming_key_and_range(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DropoutSchedule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"schedule": "early", "cutoff_epoch": 5}, r"cutoff_epoch must lie in \[1, 4\] .*max_epochs=4, got 5"),
     ({"schedule": "late", "cutoff_epoch": 4}, r"cutoff_epoch must lie in \[1, 3\] .*got 4 \(so late dropout never"),
     ({"schedule": "linear", "cutoff_epoch": 9}, r"cutoff_epoch must lie in \[1, 4\]"),
     ({"schedule": "step", "step_size": 4}, r"DropoutSchedule.step_size must lie in \[1, 3\]"),
     ({"modules": ["*enc*", "*decoder*"]},
      (r"pattern '\*decoder\*' matches no dropout module; there are: net.drop \(Dropout.p\), "
       r"net.lstm \(LSTM.dropout\), net.attn.attn_dropout \(Dropout.p\), net.enc.self_attn.attn_dropout"))],
)  # fmt: skip
def test_bad_settings_for_the_run_fail_before_the_first_step(kwargs: dict, match: str) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match=match):
        _fit(DropoutSchedule(**kwargs), recorder)
    assert recorder.seen == {}


def test_a_model_without_dropout_is_an_error() -> None:
    task = Classifier(nn.Linear(4, 3), metrics=[])
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        callbacks=[DropoutSchedule()])  # fmt: skip
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))), batch_size=4)
    with pytest.raises(ValueError, match="the model has no dropout module"):
        trainer.fit(task, train_dataloaders=loader)


def test_two_schedules_on_the_same_modules_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"both drive net.enc.dropout, "):
        _fit(DropoutSchedule(modules="*enc*", name="a"), DropoutSchedule(modules="*enc.drop*", name="b"))
    with pytest.raises(ValueError, match="Two DropoutSchedule callbacks log train/dropout_p"):
        _fit(DropoutSchedule(modules="*enc*"), DropoutSchedule(modules="*lstm*"))


def test_the_config_composes_as_the_issue_writes_it(compose_train) -> None:
    cfg = compose_train("callbacks=[default,dropout_schedule]", "callbacks.dropout_schedule.schedule=curriculum",
                        "callbacks.dropout_schedule.theta_bar=0.75")  # fmt: skip
    assert {"model_checkpoint", "early_stopping", "lr_logger", "dropout_schedule"} <= cfg.callbacks.keys()
    sched = instantiate_node(cfg.callbacks.dropout_schedule, "callbacks.dropout_schedule")
    assert isinstance(sched, DropoutSchedule) and sched.schedule == "curriculum" and sched.theta_bar == 0.75
    assert sched.rate(1000) == pytest.approx(0.25 * (1 - math.exp(-1)))


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(dlkit.callbacks.dropout_schedule)
