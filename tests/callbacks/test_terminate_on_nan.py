"""TerminateOnNaN through dlkit-train: the run stops at the inf, the last good checkpoint still loads."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

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
