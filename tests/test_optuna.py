"""Optuna search: ``dlkit-train -m hparams_search=lenet_digits_optuna`` (the dlkit_optuna sweeper) and ``dlkit.tune``.

The curves that decide pruning are scripted (:class:`ScriptedCurve` logs ``val/scripted``
per trial and epoch), so which trial is pruned and which is best does not depend on what
TPE samples or on float rounding.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
import torch
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import dlkit
from dlkit import Classifier, create_model
from dlkit.callbacks.optuna_pruning import MonitorNotLoggedError
from dlkit.config import ConfigError, compose_config
from dlkit.data import DigitsDataModule
from dlkit.run_output import record_failure
from dlkit.tuning import check_direction, count_finished, parse_search_space, recover_interrupted
from hydra_plugins.dlkit_optuna_sweeper._core import OptunaSearch, SearchError, best_command
from tests.conftest import FAST

REPO = Path(__file__).resolve().parents[1]
TINY = ["trainer.max_epochs=2", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2", *FAST]
# val/scripted of each trial, per epoch: trial 3 falls far below the median at epoch 0.
CURVES = {0: [0.5, 0.6], 1: [0.6, 0.7], 2: [0.6, 0.68], 3: [0.05, 0.05], 4: [0.7, 0.8]}


class ScriptedCurve(L.Callback):
    """Test only: log ``val/scripted`` from :data:`CURVES` for the trial; SIGKILL the process at ``kill_at``."""

    def __init__(self, trial: int, kill_at: int | None = None) -> None:
        self.trial, self.kill_at, self.fits = int(trial), kill_at, -1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fits += 1  # dlkit.tune shares one instance between trials: count them
        if self.kill_at is not None and self.trial == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a search killed the hard way, mid-trial

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            trial = self.trial if self.trial >= 0 else self.fits
            pl_module.log("val/scripted", CURVES.get(trial, [0.3, 0.3])[trainer.current_epoch])


def _search(tmp: Path, sweep: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dlkit.train", "-m", "hparams_search=lenet_digits_optuna", f"paths.log_dir={tmp}",
           f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=4", "optimized_metric=val/scripted",
           "hydra.sweeper.monitor=val/scripted", "hydra.sweeper.pruner.n_startup_trials=2",
           "hydra.sweeper.pruner.n_warmup_steps=0", *TINY, *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 4-trial search SIGKILLed when trial 2 starts, then run again with the same sweep folder."""
    tmp = tmp_path_factory.mktemp("optuna")
    sweep = tmp / "sweep"
    scripted = "+callbacks.scripted={_target_:tests.test_optuna.ScriptedCurve,trial:${hydra:job.num}"
    first = _search(tmp, sweep, scripted + ",kill_at:2}")
    second = _search(tmp, sweep, scripted + "}")
    return {"sweep": sweep, "first": first, "second": second}


def _study(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="lenet_digits_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")


def test_a_killed_search_resumes_and_runs_only_the_missing_trials(killed_and_resumed: dict[str, Any]) -> None:
    first, second, sweep = killed_and_resumed["first"], killed_and_resumed["second"], killed_and_resumed["sweep"]
    assert first.returncode == -signal.SIGKILL, first.stdout[-3000:] + first.stderr[-3000:]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "2 of 4 trials finished, trials [2] interrupted (tried again); running 2." in second.stdout + second.stderr
    launched = [line for line in (second.stdout + second.stderr).splitlines() if "\t#" in line]
    assert [line.split("#")[1].split(" ")[0] for line in launched] == ["3", "4"]
    states = [t.state for t in _study(sweep).trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE]
    study = _study(sweep)
    assert study.trials[3].params == study.trials[2].params  # the interrupted trial, tried again
    assert count_finished(study) == 4


def test_the_search_prunes_the_bad_curve_and_prints_the_best_trial_as_a_command(
        killed_and_resumed: dict[str, Any]) -> None:
    sweep, out = killed_and_resumed["sweep"], killed_and_resumed["second"].stdout
    study = _study(sweep)
    assert study.trials[3].intermediate_values == {0: pytest.approx(0.05)}  # pruned after its first epoch
    assert study.best_trial.number == 4 and study.best_value == pytest.approx(0.8)
    best = OmegaConf.load(sweep / "best.yaml")
    assert best.best_trial == 4 and best.trials == {"complete": 3, "pruned": 1, "fail": 1}
    command = (sweep / "best_command.txt").read_text().strip()
    assert f"Train it: {command}" in out and command.startswith("dlkit-train ")
    assert "hparams_search" not in command and "optuna_pruning" not in command and "-m" not in command.split()
    for name, value in study.best_params.items():
        assert f"{name}={value}" in command
    # The command composes as one run with the best trial's values.
    args = [a.strip("'") for a in command.split()[1:] if not a.strip("'").startswith("+callbacks.scripted")]
    cfg = compose_config("train", args)
    assert cfg.optimizer.lr == pytest.approx(study.best_params["optimizer.lr"]) and cfg.trainer.max_epochs == 2
    with (sweep / "summary.csv").open() as f:
        rows = {r["job"]: r for r in csv.DictReader(f)}
    assert {j: r["status"] for j, r in rows.items()} == {"0": "ok", "1": "ok", "2": "missing", "3": "pruned", "4": "ok"}
    assert rows["3"]["error"] == "TrialPruned: trial 3 pruned at epoch 0: val/scripted=0.05"
    assert "optimizer.lr=" in rows["4"]["overrides"] and "optuna_pruning" not in rows["4"]["overrides"]


# ---------------------------------------------------------------- search spaces (in-process)
def test_search_spaces_are_written_as_hydras_optuna_sweeper_writes_them() -> None:
    space = parse_search_space({
        "optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
        "model.drop_rate": "interval(0, 0.5)",
        "model.width": "tag(int, interval(8, 64))",
        "model.depth": "range(1, 5)",
        "data.batch_size": "choice(32, 64)",
        "model.hidden_sizes": "choice([64,64], [128])",
        "optimizer": "adam,sgd",
        "trainer.max_epochs": 10,
    }, "hydra.sweeper.params")
    d = space.distributions
    assert d["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["model.drop_rate"] == FloatDistribution(0.0, 0.5)
    assert d["model.width"] == IntDistribution(8, 64)
    assert d["model.depth"] == IntDistribution(1, 4)  # range's stop is exclusive, as in Hydra and Python
    assert d["data.batch_size"] == CategoricalDistribution([32, 64])
    assert d["optimizer"] == CategoricalDistribution(["adam", "sgd"])
    params = {"optimizer.lr": 0.001, "model.drop_rate": 0.25, "model.width": 16, "model.depth": 3,
              "data.batch_size": 64, "model.hidden_sizes": "[64,64]", "optimizer": "sgd"}
    assert space.overrides(params) == [
        "trainer.max_epochs=10", "optimizer.lr=0.001", "model.drop_rate=0.25", "model.width=16", "model.depth=3",
        "data.batch_size=64", "model.hidden_sizes=[64,64]", "optimizer=sgd"]
    assert space.values(params)["model.hidden_sizes"] == [64, 64] and space.values(params)["trainer.max_epochs"] == 10
    # The command line wins over the config for the same key, searched or fixed.
    merged = space.merged(parse_search_space(["model.depth=3", "+trainer.max_epochs=2", "optimizer.lr=interval(0.1, 1)"]))
    assert "model.depth" not in merged.params and merged.distributions["optimizer.lr"] == FloatDistribution(0.1, 1.0)
    assert merged.fixed == ("model.depth=3", "+trainer.max_epochs=2")


@pytest.mark.parametrize("spec, message", [
    ("choice()", "hydra.sweeper.params.model.drop_rate: choice() is empty: give at least one option"),
    ("interval(5, 1)", ("hydra.sweeper.params.model.drop_rate: interval(5, 1) is inverted: its low end 5 is not "
                        "below its high end 1; write interval(1, 5).")),
    ("interval(1, 1)", "interval(1, 1) is empty"),
    ("tag(log, interval(0, 1))", "is log-scaled, so its low end must be > 0"),
    ("tag(exp, interval(0, 1))", "unknown tag exp in tag(exp, interval(0, 1)); interval() takes int and log"),
    ("tag(int, interval(0.5, 2))", "is tagged int, so its ends must be whole numbers"),
    ("tag(log, choice(1, 2))", "tags (log) apply to interval() only"),
    ("range(5, 1)", "range(5, 1) has no values"),
    ("glob(*)", "glob() is not supported"),
    ("interval(a, b)", "'interval(a, b)' does not parse"),
])
def test_a_bad_search_space_is_an_error_naming_the_parameter(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_search_space({"model.drop_rate": spec}, "hydra.sweeper.params")
    assert message in str(info.value) and "model.drop_rate" in str(info.value)


def test_bad_sweeper_settings_are_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"hydra.sweeper.direction must be 'minimize' or 'maximize' .*got 'up'"):
        OptunaSearch(direction="up")
    with pytest.raises(ConfigError, match="one metric"):
        OptunaSearch(direction=["maximize", "minimize"])
    with pytest.raises(ConfigError, match=r"hydra.sweeper.n_trials must be a positive integer, got 0"):
        OptunaSearch(n_trials=0)
    with pytest.raises(ConfigError, match=r"hydra.sweeper.pruner: pruner _target_ must be one of optuna.pruners"):
        OptunaSearch(pruner={"_target_": "os.system"})
    with pytest.raises(ConfigError, match=r"hydra.sweeper.sampler._target_ must be a class of optuna.samplers"):
        OptunaSearch(sampler={"_target_": "builtins.print"})
    assert check_direction("max") == "maximize" and check_direction("minimize") == "minimize"


def test_each_way_a_job_ends_is_told_to_optuna_and_a_metric_that_is_not_logged_stops_the_search() -> None:
    # A job's OptunaPruning raises MonitorNotLoggedError at its first validation (tests/callbacks).
    study, search = optuna.create_study(direction="maximize"), OptunaSearch(direction="maximize")
    ended = [JobReturn(status=JobStatus.COMPLETED, cfg=OmegaConf.create({"optimized_metric": "val/acc"})),
             JobReturn(status=JobStatus.FAILED), JobReturn(status=JobStatus.FAILED),
             JobReturn(status=JobStatus.FAILED)]
    ended[0].return_value = 0.9
    ended[1].return_value = optuna.TrialPruned("trial 1 pruned at epoch 0: val/acc=0.1")
    ended[2].return_value = ValueError("optimizer.lr must be > 0")
    ended[3].return_value = MonitorNotLoggedError("OptunaPruning reports 'val/f1' ... Logged metrics: val/acc")
    assert [search._tell(study, study.ask(), ret) for ret in ended[:3]] == [True, True, False]
    with pytest.raises(MonitorNotLoggedError, match="Logged metrics: val/acc"):
        search._tell(study, study.ask(), ended[3])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert study.trials[2].user_attrs["dlkit:error"] == "ValueError: optimizer.lr must be > 0"
    with pytest.raises(SearchError, match=r"hydra.sweeper.params.x: interval\(2, 1\) is inverted"):
        OptunaSearch(params={"x": "interval(2, 1)"}).sweep([])


def test_a_job_that_returns_no_objective_stops_the_search_listing_its_metrics(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"val/acc": 0.9, "test/acc": 0.8, "status": "ok"}')
    ret = JobReturn(cfg=OmegaConf.create({"optimized_metric": "val/f1"}),
                    hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}}),
                    status=JobStatus.COMPLETED)
    study = optuna.create_study(direction="maximize")
    search = OptunaSearch(direction="maximize")
    with pytest.raises(MonitorNotLoggedError, match=r"optimized_metric='val/f1' is not among the final metrics of "
                                                    r"trial 0 .*: test/acc, val/acc. Set optimized_metric"):
        search._tell(study, study.ask(), ret)
    assert study.trials[0].state == TrialState.FAIL


def test_an_interrupted_trial_does_not_count_and_is_tried_again() -> None:
    study = optuna.create_study()
    for x in (1.0, 2.0):
        study.tell(study.ask({"x": FloatDistribution(0, 10)}), x)
    killed = study.ask({"x": FloatDistribution(0, 10)})  # left running, as by a SIGKILL
    assert count_finished(study) == 2
    assert recover_interrupted(study, retry=2) == [killed.number]
    assert count_finished(study) == 2
    retry = study.ask({"x": FloatDistribution(0, 10)})
    assert retry.params == killed.params and retry.user_attrs["dlkit:retry_of"] == killed.number


def test_best_command_quotes_what_the_shell_would_split() -> None:
    assert best_command("dlkit-train", {"experiment": "seq2seq_bahdanau_dates"}, ["~callbacks.x"],
                        ["model.sizes=[64, 64]"]) == "dlkit-train experiment=seq2seq_bahdanau_dates '~callbacks.x' " \
                                                     "'model.sizes=[64, 64]'"


def test_a_pruned_run_is_marked_pruned_without_a_traceback(tmp_path: Path) -> None:
    record = record_failure(tmp_path, optuna.TrialPruned("trial 3 pruned at epoch 1: val/acc=0.1"))
    assert record["status"] == "pruned" and record["error"] == "TrialPruned: trial 3 pruned at epoch 1: val/acc=0.1"
    assert "Traceback" not in (tmp_path / "train.log").read_text()


def test_search_configs_compose_with_the_sweeper() -> None:
    cfg = compose_config("train", ["hparams_search=seq2seq_dates_optuna"])
    assert cfg.task_name == "seq2seq_bahdanau_dates" and cfg.optimized_metric == "val/exact_match_best"
    assert cfg.hydra.sweeper._target_.endswith("DlkitOptunaSweeper") and cfg.hydra.sweeper.pruner is not None
    for name in ("lenet_digits_optuna", "seq2seq_dates_optuna"):
        sweeper = compose_config("train", [f"hparams_search={name}"]).hydra.sweeper
        params = OmegaConf.to_container(sweeper.params)
        assert parse_search_space(params, "hydra.sweeper.params").params  # every spec parses


# ---------------------------------------------------------------- dlkit.tune (in-process)
def _build(params: dict[str, Any]) -> Classifier:
    torch.manual_seed(0)
    net = create_model("mlp", in_features=64, num_classes=10, hidden_sizes=[16], drop_rate=params["drop"])
    return Classifier(net).compile(lr=params["lr"], metrics=["accuracy"])


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    return DigitsDataModule(flatten=True, resize=None, batch_size=64)


def test_tune_prunes_the_bad_curve_and_returns_the_best_task(digits: DigitsDataModule) -> None:
    space = {"lr": "tag(log, interval(1e-3, 1e-2))", "drop": "choice(0.0, 0.2)", "seed": 7}
    result = dlkit.tune(_build, space, n_trials=5, data=digits, objective="val/scripted", epochs=2,
                        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
                        sampler=optuna.samplers.TPESampler(seed=0), callbacks=[ScriptedCurve(trial=-1)],
                        limit_train_batches=2, limit_val_batches=2)
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                      TrialState.COMPLETE]
    assert result.best_trial == 4 and result.best_value == pytest.approx(0.8)  # the best epoch, Keras Tuner's rule
    assert set(result.best_params) == {"lr", "drop", "seed"} and result.best_params["seed"] == 7
    assert isinstance(result.best_task, Classifier)
    assert result.study.direction.name == "MAXIMIZE"  # not a loss


def test_tune_resumes_a_stored_study_and_goes_on_after_a_failed_trial(tmp_path: Path, digits: DigitsDataModule) -> None:
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    calls: list[dict[str, Any]] = []

    def build(params: dict[str, Any]) -> Classifier:
        calls.append(params)
        if len(calls) == 2:
            raise RuntimeError("a broken trial")
        return _build(params)

    kwargs: dict[str, Any] = {"data": digits, "objective": "val/loss", "epochs": 1, "storage": storage,
                              "study_name": "s", "limit_train_batches": 1, "limit_val_batches": 1}
    space = {"lr": "tag(log, interval(1e-3, 1e-2))", "drop": [0.0, 0.1]}
    first = dlkit.tune(build, space, n_trials=2, **kwargs)
    assert [t.state for t in first.study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert first.study.trials[1].user_attrs["dlkit:error"] == "RuntimeError: a broken trial"
    assert first.study.direction.name == "MINIMIZE"
    second = dlkit.tune(build, space, n_trials=3, **kwargs)
    assert len(calls) == 3 and len(second.study.trials) == 3  # only the missing trial ran


def test_tune_bad_input(digits: DigitsDataModule) -> None:
    with pytest.raises(ValueError, match="n_trials must be a positive integer, got 0"):
        dlkit.tune(_build, {"lr": "interval(0.1, 1)"}, n_trials=0)
    with pytest.raises(ConfigError, match=r"space.lr: interval\(1, 0.1\) is inverted"):
        dlkit.tune(_build, {"lr": "interval(1, 0.1)"}, n_trials=1)
    with pytest.raises(ValueError, match=r"direction must be 'minimize' or 'maximize' .*got 'up'"):
        dlkit.tune(_build, {"lr": "interval(0.1, 1)"}, n_trials=1, direction="up")
    with pytest.raises(MonitorNotLoggedError, match="'val/f1' to the search, which is not logged at validation. "
                                                    "Logged metrics: val/acc"):
        dlkit.tune(_build, {"lr": "interval(1e-3, 1e-2)", "drop": 0.0}, n_trials=2, data=digits, objective="val/f1",
                   epochs=1, limit_train_batches=1, limit_val_batches=1)

    def broken(params: dict[str, Any]) -> Classifier:
        raise TypeError("build_fn is broken")

    with pytest.raises(RuntimeError, match="3 trials failed in a row, the last with TypeError: build_fn is broken"):
        dlkit.tune(broken, {"lr": "interval(0.1, 1)"}, n_trials=5, data=digits)


def test_docstring_examples(docstring_examples) -> None:
    import dlkit.tuning

    docstring_examples(dlkit.tuning.parse_search_space)
    docstring_examples(dlkit.tuning.SearchSpace)
    docstring_examples(dlkit.tuning.check_direction)
    docstring_examples(best_command)
