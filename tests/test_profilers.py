"""NullProfiler: the default profiler of fit, dlkit-train and dlkit-eval, replaced by any profiler asked for."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler
from omegaconf import open_dict
from torch import nn

from dlkit import Classifier
from dlkit.config import instantiate_trainer
from dlkit.profilers import NullProfiler
from dlkit.train import train


def test_profile_hands_back_one_shared_context(docstring_examples) -> None:
    profiler = NullProfiler()
    assert isinstance(profiler, PassThroughProfiler)  # Lightning treats it as its own no-op profiler
    first, second = profiler.profile("a"), profiler.profile("b")
    assert first is second
    with first as inner, second:  # re-entrant: hooks nest inside the epoch's profile block
        assert inner is None
    docstring_examples(NullProfiler)


class _TrainerSpy(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.profiler = trainer.profiler


@pytest.mark.parametrize("given, expected", [(None, NullProfiler), ("simple", SimpleProfiler)], ids=["default", "simple"])
def test_fit_uses_it_unless_another_is_asked_for(given, expected, tmp_path) -> None:
    spy = _TrainerSpy()
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    extra = {} if given is None else {"profiler": given, "default_root_dir": str(tmp_path)}
    Classifier(nn.Linear(4, 2)).fit(x, y, epochs=1, batch_size=16, callbacks=[spy], verbose=False, **extra)
    assert type(spy.profiler) is expected


@pytest.mark.parametrize("overrides, expected", [((), NullProfiler), (("debug=profiler",), SimpleProfiler)],
                         ids=["default", "debug=profiler"])  # fmt: skip
def test_dlkit_train_uses_it_unless_the_config_names_one(compose_train, overrides, expected) -> None:
    cfg = compose_train("trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                        "+trainer.limit_test_batches=1", *overrides)  # fmt: skip
    _, objects = train(cfg)
    assert type(objects["trainer"].profiler) is expected


@pytest.mark.parametrize("profiler, expected", [(None, NullProfiler), ("simple", SimpleProfiler)], ids=["default", "simple"])
def test_instantiate_trainer_is_what_train_and_eval_build(compose_train, profiler, expected) -> None:
    cfg = compose_train()
    with open_dict(cfg):
        cfg.trainer.profiler = profiler
    trainer = instantiate_trainer(cfg.trainer, callbacks=[], logger=False)
    assert type(trainer.profiler) is expected
