"""OptunaPruning: reports the validation curve to its trial, in-process or reloaded from storage, and prunes."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from dlkit import Classifier, create_model
from dlkit.callbacks import OptunaPruning
from dlkit.callbacks.optuna_pruning import (
    PRUNER_ATTR,
    MonitorNotLoggedError,
    load_trial,
    pruner_from_spec,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(callback: OptunaPruning, epochs: int = 3) -> Classifier:
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    clf = Classifier(create_model("mlp", in_features=8, num_classes=3, hidden_sizes=[8])).compile(metrics=["accuracy"])
    clf.fit(x, y, epochs=epochs, batch_size=32, validation_split=0.25, callbacks=[callback], verbose=False)
    return clf


def test_every_validation_epoch_is_reported_and_nothing_is_pruned_without_a_reason() -> None:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    _fit(OptunaPruning("val/loss", trial=trial))
    assert sorted(study.trials[0].intermediate_values) == [0, 1, 2]


def test_the_run_stops_with_trial_pruned_when_the_pruner_says_so() -> None:
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # any loss is too high
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match=r"trial 0 pruned at epoch 0: val/loss="):
        _fit(OptunaPruning("val/loss", trial=trial))
    assert list(study.trials[0].intermediate_values) == [0]


def test_a_job_reloads_its_trial_from_storage_with_the_studys_pruner(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="s")
    study.set_user_attr(PRUNER_ATTR, {"_target_": "optuna.pruners.ThresholdPruner", "upper": 0.0})
    study.ask()
    running = study.ask()  # the job's trial, asked by the sweeper
    assert type(load_trial(storage, "s", 1).study.pruner).__name__ == "ThresholdPruner"
    with pytest.raises(optuna.TrialPruned):
        _fit(OptunaPruning("val/loss", storage=storage, study_name="s", trial_number=running.number))
    stored = optuna.load_study(study_name="s", storage=storage).trials[1]
    assert stored.state == TrialState.RUNNING and list(stored.intermediate_values) == [0]  # the sweeper tells it


def test_a_metric_that_is_not_logged_is_an_error_listing_the_logged_ones() -> None:
    trial = optuna.create_study().ask()
    with pytest.raises(MonitorNotLoggedError, match=r"reports 'val/f1' .* Logged metrics: val/acc.*val/loss"):
        _fit(OptunaPruning("val/f1", trial=trial), epochs=1)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs trial=<optuna.Trial>, or storage, study_name and trial_number"):
        OptunaPruning("val/loss", storage="sqlite:///x.db")
    with pytest.raises(ValueError, match="needs the metric to report"):
        OptunaPruning("", trial=object())
    with pytest.raises(ValueError, match=r"pruner _target_ must be one of optuna.pruners.\{HyperbandPruner"):
        pruner_from_spec({"_target_": "subprocess.run"})
    with pytest.raises(KeyError, match="No trial 5 of study 'nope'"):
        load_trial(optuna.storages.InMemoryStorage(), "nope", 5)
    assert type(pruner_from_spec(None)).__name__ == "NopPruner"


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(pruner_from_spec)
