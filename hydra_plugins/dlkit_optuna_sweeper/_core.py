"""The Optuna search behind ``hydra/sweeper=dlkit_optuna``: ask, launch, tell, resume, report the best.

Why a sweeper of our own over Optuna's ask/tell API rather than Hydra's Optuna sweeper:
its newest release (1.3.0) pins ``optuna<3`` and cannot prune, because a job never sees
its trial (hydra #1710, #2293). Here every job gets, through one override, an
``OptunaPruning`` callback holding the study's storage URL, its name and the trial
number, which is the job number (``${hydra:job.num}``); the job reloads its trial from the
storage and reports its validation curve there. That works with any launcher (in this
process, in subprocesses, on SLURM), where an in-memory trial object would not cross.

A run of the search:

1. parse ``hydra.sweeper.params`` and the command line into Optuna distributions and
   fixed overrides (:func:`dlkit.tuning.parse_search_space`; errors name the key);
2. open the study (SQLite in the sweep folder by default), or load it to resume: trials a
   killed search left running are marked interrupted and queued again, finished ones count;
3. per batch of ``n_jobs``: ``study.ask`` each trial, launch the jobs, tell Optuna each
   result: the returned ``optimized_metric`` (COMPLETE), ``TrialPruned`` (PRUNED), any other
   error (FAIL, and the search goes on);
4. print the best trial as a ready ``dlkit-train ...`` command, and write it with the
   best parameters to ``best.yaml`` and ``best_command.txt`` in the sweep folder.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from dlkit.callbacks.optuna_pruning import PRUNER_ATTR, MonitorNotLoggedError, pruner_from_spec
from dlkit.config import ConfigError
from dlkit.tuning import (
    ERROR_ATTR,
    SearchSpace,
    check_direction,
    count_finished,
    failure_line,
    open_study,
    parse_search_space,
    recover_interrupted,
)

__all__ = ["OptunaSearch", "SearchError", "best_command"]

log = logging.getLogger(__name__)
KEY = "hydra.sweeper."
# Where the pruning callback goes in every job's config.
CALLBACK_KEY = "callbacks.optuna_pruning"


class SearchError(CompactHydraException):
    """The search cannot go on (a bad setting, a metric that is not logged, failing trials); Hydra prints
    the message, which names the key and the fix, without a traceback."""


def _quoted(text: str) -> str:
    """``text`` as a single-quoted Hydra override string."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _positive(value: Any, key: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        extra = " or null" if allow_none else ""
        raise ConfigError(f"{KEY}{key} must be a positive integer{extra}, got {value!r}.")
    return value


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def best_command(app: str, choices: dict[str, str], fixed: Sequence[str], best: Sequence[str]) -> str:
    """The shell command that trains the best trial's configuration as a single run.

    Args:
        app: The program (``dlkit-train``).
        choices: Config-group choices the search config made (``{"experiment": "seq2seq_bahdanau_dates"}``).
        fixed: The overrides every trial got, except the one selecting the search.
        best: The best trial's parameter overrides.

    Example:
        >>> best_command("dlkit-train", {}, ["trainer.max_epochs=10"], ["optimizer.lr=0.002", "model.sizes=[64,64]"])
        "dlkit-train trainer.max_epochs=10 optimizer.lr=0.002 'model.sizes=[64,64]'"
    """
    parts = [*(f"{g}={c}" for g, c in choices.items()), *fixed, *best]
    return " ".join([app, *(shlex.quote(p) for p in parts)])


class OptunaSearch(Sweeper):
    """The search itself; ``DlkitOptunaSweeper`` builds it with the ``hydra.sweeper`` settings.

    Args: see :class:`hydra_plugins.dlkit_optuna_sweeper.config.DlkitOptunaSweeperConf`.

    Raises:
        ConfigError: A bad direction, ``n_trials``, ``n_jobs``, ``max_consecutive_failures``,
            sampler or pruner, named with its ``hydra.sweeper`` key, before any job runs.

    Example:
        >>> OptunaSearch(direction="maximize", n_trials=4, params={"optimizer.lr": "interval(1e-4, 1e-2)"})
    """

    def __init__(
        self,
        direction: Any = "minimize",
        n_trials: Any = 20,
        n_jobs: Any = 1,
        study_name: str | None = None,
        storage: str | None = None,
        load_if_exists: bool = True,
        monitor: str | None = None,
        max_consecutive_failures: Any = 3,
        sampler: Any = None,
        pruner: Any = None,
        params: Any = None,
    ) -> None:
        super().__init__()
        try:
            self.direction = check_direction(_plain(direction), f"{KEY}direction")
        except ValueError as err:
            raise ConfigError(str(err)) from err
        self.n_trials = _positive(n_trials, "n_trials")
        self.n_jobs = _positive(n_jobs, "n_jobs")
        self.max_consecutive_failures = _positive(max_consecutive_failures, "max_consecutive_failures", True)
        self.study_name, self.storage, self.load_if_exists, self.monitor = study_name, storage, load_if_exists, monitor
        self.sampler_spec = dict(_plain(sampler) or {"_target_": "optuna.samplers.TPESampler"})
        if not str(self.sampler_spec.get("_target_", "")).startswith("optuna.samplers."):
            raise ConfigError(f"{KEY}sampler._target_ must be a class of optuna.samplers (TPESampler, RandomSampler, "
                              f"CmaEsSampler, ...), got {self.sampler_spec.get('_target_')!r}.")
        self.pruner_spec = _plain(pruner) or None
        try:
            pruner_from_spec(self.pruner_spec)  # a bad pruner fails now, not in every job
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{KEY}pruner: {err}") from err
        self.params = _plain(params) or {}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ------------------------------------------------------------------ the search
    def sweep(self, arguments: list[str]) -> optuna.trial.FrozenTrial:
        try:
            return self._search(arguments)
        except (ConfigError, MonitorNotLoggedError, RuntimeError) as err:
            raise SearchError(str(err)) from err

    def _search(self, arguments: list[str]) -> optuna.trial.FrozenTrial:
        space = parse_search_space(self.params, KEY + "params").merged(parse_search_space(arguments))
        if not space.params:
            raise ConfigError(f"{KEY}params has nothing to search (no interval(), choice() or range()): add "
                              "hydra.sweeper.params, e.g. optimizer.lr: tag(log, interval(1e-4, 1e-2)).")
        assert self.config is not None and self.launcher is not None, "setup() comes first"
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = self.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        name = self.study_name or str(self.config.get("task_name") or "dlkit")
        study = self._open(storage, name)
        missing = max(0, self.n_trials - count_finished(study))
        interrupted = recover_interrupted(study, retry=missing)
        log.info("Optuna study %r in %s: %d of %d trials finished%s; running %d.", name, storage,
                 self.n_trials - missing, self.n_trials,
                 f", trials {interrupted} interrupted (tried again)" if interrupted else "", missing)
        pruning = self._pruning_override(storage, name)
        failures = 0
        while missing > 0:
            trials = [study.ask(space.distributions) for _ in range(min(self.n_jobs, missing))]
            batch = [[*space.overrides(t.params), pruning] for t in trials]
            try:
                self.validate_batch_is_legal(batch)
            except Exception:
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            for trial, ret in zip(trials, self._launch(trials, batch)):
                failures = 0 if self._tell(study, trial, ret) else failures + 1
                if self.max_consecutive_failures is not None and failures >= self.max_consecutive_failures:
                    raise RuntimeError(f"{failures} trials failed in a row (the last: "
                                       f"{trial.user_attrs.get(ERROR_ATTR)}); stopping the search "
                                       f"({KEY}max_consecutive_failures). See {sweep_dir / 'summary.csv'}.")
            missing -= len(trials)
        return self._report(study, space, sweep_dir, storage, arguments)

    def _open(self, storage: str, name: str) -> optuna.Study:
        """Create the study or load it; a resumed study's seeded sampler continues with a new seed."""
        engine = optuna.storages.RDBStorage(storage) if "://" in storage else storage
        try:
            before = len(optuna.load_study(study_name=name, storage=engine).trials)
        except KeyError:
            before = 0
        spec = dict(self.sampler_spec)
        if spec.get("seed") is not None:
            spec["seed"] = int(spec["seed"]) + before
        try:
            sampler = instantiate(spec)
        except Exception as err:
            raise ConfigError(f"Could not build {KEY}sampler ({spec.get('_target_')}): {err}") from err
        try:
            study = open_study(engine, name, self.direction, sampler, pruner_from_spec(self.pruner_spec),
                               self.load_if_exists, KEY)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        study.set_user_attr(PRUNER_ATTR, self.pruner_spec)
        return study

    def _pruning_override(self, storage: str, name: str) -> str:
        """The override giving every job its ``OptunaPruning`` callback (the same text for every job)."""
        monitor = _quoted(self.monitor) if self.monitor else "'${optimized_metric}'"
        fields = ["_target_:dlkit.callbacks.OptunaPruning", f"monitor:{monitor}", f"storage:{_quoted(storage)}",
                  f"study_name:{_quoted(name)}", "trial_number:${hydra:job.num}"]
        return f"++{CALLBACK_KEY}={{{','.join(fields)}}}"

    def _launch(self, trials: Sequence[Any], batch: Sequence[Sequence[str]]) -> Sequence[JobReturn]:
        """Launch a batch so that each job's number is its trial's number."""
        numbers = [t.number for t in trials]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return self.launcher.launch(batch, initial_job_idx=numbers[0])
        # Another process asked trials in between: one launch per trial keeps the numbers equal.
        return [r for n, overrides in zip(numbers, batch) for r in self.launcher.launch([overrides], initial_job_idx=n)]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> bool:
        """Tell Optuna how the trial's job ended; False when it failed. Config mistakes stop the search."""
        if ret.status != JobStatus.COMPLETED:
            # JobReturn.return_value would print "Error executing job" first: wrong for a pruned trial.
            error = ret._return_value
            if isinstance(error, optuna.TrialPruned):
                study.tell(trial, state=TrialState.PRUNED)
                log.info("Trial %d pruned: %s", trial.number, error)
                return True
            self._fail(study, trial, error)
            if isinstance(error, MonitorNotLoggedError):
                raise error  # every trial would fail the same way
            return False
        value = ret.return_value
        if value is None:
            error = MonitorNotLoggedError(self._missing_metric_message(ret, trial.number))
            self._fail(study, trial, error)
            raise error
        value = float(value)
        if not math.isfinite(value):
            self._fail(study, trial, FloatingPointError(f"optimized_metric is {value} in trial {trial.number}"))
            return False
        study.tell(trial, value)
        metric = OmegaConf.select(ret.cfg, "optimized_metric", default="value") if ret.cfg is not None else "value"
        log.info("Trial %d: %s=%.6g (best so far: trial %d, %.6g)", trial.number, metric, value,
                 study.best_trial.number, study.best_value)
        return True

    @staticmethod
    def _fail(study: optuna.Study, trial: optuna.Trial, error: BaseException) -> None:
        trial.set_user_attr(ERROR_ATTR, failure_line(error))
        study.tell(trial, state=TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, failure_line(error))

    @staticmethod
    def _missing_metric_message(ret: JobReturn, number: int) -> str:
        metric = OmegaConf.select(ret.cfg, "optimized_metric", default=None) if ret.cfg is not None else None
        folder = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None) if ret.hydra_cfg else None
        metrics_file = Path(str(folder)) / "metrics.json" if folder else None
        logged: list[str] = []
        if metrics_file is not None and metrics_file.is_file():
            logged = sorted(k for k, v in json.loads(metrics_file.read_text()).items()
                            if "/" in k and isinstance(v, (int, float)))
        if metric is None:
            return (f"Trial {number} returned no objective: optimized_metric is null. Set optimized_metric to one "
                    f"of the logged metrics: {', '.join(logged) or 'none'}.")
        return (f"optimized_metric={metric!r} is not among the final metrics of trial {number} "
                f"({metrics_file}): {', '.join(logged) or 'none'}. Set optimized_metric to one of them.")

    # ------------------------------------------------------------------ the result
    def _report(self, study: optuna.Study, space: SearchSpace, sweep_dir: Path, storage: str,
                arguments: Sequence[str]) -> optuna.trial.FrozenTrial:
        counts = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
        if not counts.get("complete"):
            raise RuntimeError(f"No trial of study {study.study_name!r} completed ({dict(counts)}); see "
                               f"{sweep_dir / 'summary.csv'}. Widen the search space or relax the pruner.")
        best = study.best_trial
        params = [space.params[n].override(best.params[n]) for n in space.params if n in best.params]
        fixed = [f for f in space.fixed if f.partition("=")[0].lstrip("+~") != "hparams_search"]
        command = best_command(self._app_name(), self._search_choices(arguments), fixed, params)
        metric = OmegaConf.select(self.config, "optimized_metric", default=None)
        result = {
            "study_name": study.study_name,
            "storage": storage,
            "direction": self.direction,
            "optimized_metric": metric,
            "best_trial": best.number,
            "best_value": float(best.value),
            "best_params": {n: space.params[n].python_value(v) for n, v in best.params.items() if n in space.params},
            "best_job_dir": str(sweep_dir / str(best.number)),
            "trials": dict(counts),
            "command": command,
        }
        OmegaConf.save(OmegaConf.create(result), sweep_dir / "best.yaml")
        (sweep_dir / "best_command.txt").write_text(command + "\n")
        trials = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"\nOptuna search {study.study_name!r}: {trials}. Best: trial {best.number}, {metric}={best.value:.6g}\n"
              f"  {' '.join(params)}\nTrain it: {command}\n(also in {sweep_dir / 'best_command.txt'})")
        return best

    def _app_name(self) -> str:
        assert self.config is not None
        return str(OmegaConf.select(self.config, "hydra.help.app_name", default=None)
                   or f"python {OmegaConf.select(self.config, 'hydra.job.name', default='app')}.py")

    def _search_choices(self, arguments: Sequence[str]) -> dict[str, str]:
        """Config groups the search config chose (``experiment`` say), compared with the run without it."""
        assert self.config is not None and self.hydra_context is not None
        chosen = OmegaConf.to_container(self.config.hydra.runtime.choices)
        assert isinstance(chosen, dict)
        given = {a.partition("=")[0].lstrip("+~") for a in arguments}
        plain_args = [a for a in arguments if a.partition("=")[0].lstrip("+~") != "hparams_search"
                      and not self._is_sweep(a)]
        try:
            plain = self.hydra_context.config_loader.load_configuration(
                config_name=str(self.config.hydra.job.config_name), overrides=plain_args, run_mode=RunMode.RUN)
        except Exception as err:  # noqa: BLE001 - the command line is still right without these
            log.warning("Could not compare the search's config groups with a plain run: %s", err)
            return {}
        before = OmegaConf.to_container(plain.hydra.runtime.choices)
        assert isinstance(before, dict)
        return {g: str(c) for g, c in chosen.items()
                if not g.startswith("hydra/") and g != "hparams_search" and g not in given and before.get(g) != c}

    @staticmethod
    def _is_sweep(argument: str) -> bool:
        try:
            return OverridesParser.create().parse_override(argument).is_sweep_override()
        except Exception:  # noqa: BLE001 - parse errors were reported before the search started
            return False
