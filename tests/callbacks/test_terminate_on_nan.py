"""TerminateOnNaN through dlkit-train: the run stops at the inf, the last good checkpoint still loads."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from dlkit import Classifier
from dlkit.callbacks import TerminateOnNaN
from dlkit.checkpoint import load_run
from dlkit.run_output import NonFiniteLossError
from dlkit.train import train
from tests.conftest import FAST


class PoisonAt(L.Callback):
    """Test-only: turn the inputs of the training batch at ``step`` into inf."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch[0].fill_(math.inf)


def test_an_inf_stops_the_run_and_the_last_checkpoint_still_loads(compose_train, tmp_path: Path, monkeypatch) -> None:
    steps_per_epoch = 21  # digits at batch 64 in the default split
    cfg = compose_train("trainer.max_epochs=3", *FAST,
                        f"+callbacks.poison._target_={__name__}.PoisonAt",
                        f"+callbacks.poison.step={steps_per_epoch + 5}")  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"step \d+"):
        train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    monkeypatch.setenv("DLKIT_ALLOWED_TARGETS", __name__)  # the run stored this test's callback
    task, _ = load_run(last)
    assert all(torch.isfinite(v).all() for v in task.state_dict().values() if v.is_floating_point())
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the end of the last good epoch


# ---- the deferred check (accelerators) --------------------------------------------


def _trainer(step: int, log_every: int = 50) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, current_epoch=0, log_every_n_steps=log_every, sanity_checking=False,
                           optimizers=[])  # fmt: skip


def test_the_check_is_read_every_step_on_cpu_and_every_log_interval_elsewhere() -> None:
    on_cpu, elsewhere = torch.zeros(()), torch.zeros((), device="meta")
    assert TerminateOnNaN().every_n_steps(_trainer(0, 25), on_cpu) == 1
    assert TerminateOnNaN().every_n_steps(_trainer(0, 25), elsewhere) == 25
    assert TerminateOnNaN(check_every_n_steps=3).every_n_steps(_trainer(0), on_cpu) == 3


def test_deferred_check_reads_the_device_once_a_window_and_names_it(monkeypatch) -> None:
    reads = []
    original = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(1) or original(t))
    cb = TerminateOnNaN(check_every_n_steps=4)
    losses = [1.0, math.inf, 2.0, 3.0]
    for step, value in enumerate(losses[:3]):
        cb.on_before_backward(_trainer(step), None, torch.tensor(value))
    assert reads == []  # nothing read back inside the window
    with pytest.raises(NonFiniteLossError, match=r"between 0 and 3 .*checked every 4 steps"):
        cb.on_before_backward(_trainer(3), None, torch.tensor(losses[3]))
    assert len(reads) == 1
    cb.on_before_backward(_trainer(4), None, torch.tensor(1.0))  # a new window starts clean
    cb.on_train_epoch_end(_trainer(5), None)  # finite: the epoch-end read passes


def test_deferred_check_is_read_before_validation_and_at_epoch_end() -> None:
    cb = TerminateOnNaN(check_every_n_steps=100)
    cb.on_before_backward(_trainer(7), None, torch.tensor(math.nan))
    with pytest.raises(NonFiniteLossError, match=r"between 7 and 8 .*before validation"):
        cb.on_validation_start(_trainer(8), None)
    cb.on_before_backward(_trainer(9), None, torch.tensor(math.nan))
    with pytest.raises(NonFiniteLossError, match=r"end of the epoch"):
        cb.on_train_epoch_end(_trainer(10), None)


def test_deferred_check_stops_a_fit() -> None:
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    with pytest.raises(NonFiniteLossError, match=r"between 0 and 3"):
        Classifier(nn.Linear(4, 2)).fit(x, y, epochs=2, batch_size=8, verbose=False,
                                         callbacks=[PoisonAt(1), TerminateOnNaN(check_every_n_steps=4)])  # fmt: skip


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_check_every_n_steps_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(ValueError, match=r"check_every_n_steps must be a positive integer"):
        TerminateOnNaN(check_every_n_steps=bad)
