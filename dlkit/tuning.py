"""Hyper-parameter search on Optuna: search spaces in Hydra's sweep syntax, studies that resume, :func:`tune`.

One search-space language serves both faces. ``dlkit-train -m hparams_search=...`` (the
``dlkit_optuna`` sweeper in ``hydra_plugins/dlkit_optuna_sweeper``) reads
``hydra.sweeper.params`` written as Hydra's Optuna sweeper writes them, and
:func:`tune`, for Python users without Hydra, takes the same strings (or Optuna
distributions, or lists of choices):

============================== ==============================================================
``interval(a, b)``             uniform float in [a, b]
``tag(log, interval(a, b))``   log-uniform float (a > 0)
``tag(int, interval(a, b))``   uniform integer in [a, b] (``tag(int, log, ...)`` on a log scale)
``choice(x, y, ...)``, ``x,y`` categorical (numbers, strings, lists, dicts)
``range(a, b[, step])``        integers (or floats) a, a+step, ... below b, ordered
``shuffle(range(...))``        the same values as a categorical
anything else                  a fixed value every trial gets (``trainer.max_epochs: 10``)
============================== ==============================================================

A study counts its finished trials (complete, pruned or failed); a trial left running by a
killed search is marked interrupted, does not count, and its parameters are tried again
first, so a resumed search runs exactly the missing trials.

The module is named ``tuning``, not ``tune``: importing a submodule binds it to the
package attribute of the same name, which would hide the function ``dlkit.tune``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException

from dlkit.callbacks.optuna_pruning import MonitorNotLoggedError, OptunaPruning
from dlkit.config import ConfigError

try:
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState
except ImportError as err:  # the optional extra
    raise ImportError("dlkit.tune and the Optuna sweeper need optuna>=4: pip install 'dlkit[tune]'.") from err

__all__ = [
    "INTERRUPTED_ATTR",
    "SearchParam",
    "SearchSpace",
    "TuneResult",
    "check_direction",
    "count_finished",
    "parse_search_space",
    "recover_interrupted",
    "tune",
]

log = logging.getLogger(__name__)

# Study user attribute: numbers of the trials a killed search left running.
INTERRUPTED_ATTR = "dlkit:interrupted"
# Trial user attributes: the first line of a failed trial's error; the trial a retry repeats.
ERROR_ATTR = "dlkit:error"
RETRY_ATTR = "dlkit:retry_of"
INTERVAL_TAGS = ("int", "log")
_DIRECTIONS = {"minimize": "minimize", "min": "minimize", "maximize": "maximize", "max": "maximize"}
_PRIMITIVES = (str, int, float, bool)


@dataclass(frozen=True)
class SearchParam:
    """One searched key: its Optuna distribution and, for a categorical one, each option's override text.

    Args:
        name: The override key (``"optimizer.lr"``, ``"+model.width"``); also the Optuna parameter name.
        distribution: What Optuna samples from.
        texts: For categorical parameters, each choice written as an override value.
        values: For categorical parameters, each choice as a Python value.

    Example:
        >>> p = SearchParam("optimizer.lr", FloatDistribution(1e-4, 1e-2, log=True))
        >>> p.override(0.001)
        'optimizer.lr=0.001'
    """

    name: str
    distribution: BaseDistribution
    texts: tuple[str, ...] = ()
    values: tuple[Any, ...] = ()

    def override(self, value: Any) -> str:
        """The override ``name=value`` a job gets for the sampled ``value``."""
        if isinstance(self.distribution, CategoricalDistribution) and self.texts:
            return f"{self.name}={self.texts[self.distribution.to_internal_repr(value)]}"
        if isinstance(self.distribution, IntDistribution):
            return f"{self.name}={int(value)}"
        if isinstance(self.distribution, FloatDistribution):
            return f"{self.name}={float(value)!r}"
        return f"{self.name}={Transformer.str(value)}"

    def python_value(self, value: Any) -> Any:
        """The sampled ``value`` as the Python object :func:`tune` hands to ``build_fn``."""
        if isinstance(self.distribution, CategoricalDistribution) and self.values:
            return self.values[self.distribution.to_internal_repr(value)]
        return value


@dataclass(frozen=True)
class SearchSpace:
    """The searched parameters and the fixed overrides of a search.

    Attributes:
        params: Searched key -> :class:`SearchParam`, in the order given.
        fixed: Overrides every trial gets unchanged (``"trainer.max_epochs=10"``).
        constants: The fixed entries as Python values (what :func:`tune` passes on).

    Example:
        >>> space = parse_search_space({"optimizer.lr": "tag(log, interval(1e-4, 1e-2))", "trainer.max_epochs": 5})
        >>> space.overrides({"optimizer.lr": 0.001})
        ['trainer.max_epochs=5', 'optimizer.lr=0.001']
    """

    params: dict[str, SearchParam] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()
    constants: dict[str, Any] = field(default_factory=dict)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """Parameter name -> distribution, for ``study.ask(fixed_distributions=...)``."""
        return {name: p.distribution for name, p in self.params.items()}

    def overrides(self, trial_params: Mapping[str, Any]) -> list[str]:
        """The overrides of one trial: the fixed ones, then one per searched key."""
        return [*self.fixed, *(p.override(trial_params[name]) for name, p in self.params.items())]

    def values(self, trial_params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's parameters as Python values (constants included), keyed by name."""
        return {**self.constants, **{n: p.python_value(trial_params[n]) for n, p in self.params.items()}}

    def merged(self, other: SearchSpace) -> SearchSpace:
        """This space with ``other``'s entries added; a key in both takes ``other``'s (the command line's)."""
        keys = {_bare(n) for n in other.params} | {_bare(_key_of(f)) for f in other.fixed}
        params = {n: p for n, p in self.params.items() if _bare(n) not in keys} | other.params
        fixed = tuple(f for f in self.fixed if _bare(_key_of(f)) not in keys) + other.fixed
        constants = {k: v for k, v in self.constants.items() if _bare(k) not in keys} | other.constants
        return SearchSpace(params, fixed, constants)


def _bare(key: str) -> str:
    return key.lstrip("+~")


def _key_of(line: str) -> str:
    return line.partition("=")[0]


def _bad(where: str, name: str, message: str) -> ConfigError:
    return ConfigError(f"{where}.{name}: {message}" if where else f"{name}: {message}")


def _categorical(values: Sequence[Any]) -> tuple[CategoricalDistribution, tuple[str, ...], tuple[Any, ...]]:
    texts = tuple(Transformer.str(v) for v in values)
    # Optuna stores numbers and strings; a list or dict choice is stored as its override text.
    choices = [v if isinstance(v, _PRIMITIVES) else t for v, t in zip(values, texts)]
    return CategoricalDistribution(choices), texts, tuple(values)


def _from_override(override: Override, where: str) -> SearchParam | None:
    """The parameter an override searches, or None for a fixed value."""
    name = override.get_key_element()
    if not override.is_sweep_override():
        return None
    sweep = override.value()
    text = override.input_line.partition("=")[2].strip() if override.input_line else str(sweep)
    tags = set(getattr(sweep, "tags", ()) or ())
    if isinstance(sweep, IntervalSweep):
        unknown = tags - set(INTERVAL_TAGS)
        if unknown:
            raise _bad(where, name, f"unknown tag {', '.join(sorted(unknown))} in {text}; interval() takes "
                                    f"{' and '.join(INTERVAL_TAGS)}: tag(log, interval(1e-4, 1e-2)).")
        low, high, is_log = float(sweep.start), float(sweep.end), "log" in tags
        if not (math.isfinite(low) and math.isfinite(high)):
            raise _bad(where, name, f"{text} needs finite ends.")
        if low >= high:
            fix = f"write interval({high:g}, {low:g})" if low > high else f"use a fixed value {name}={low:g}"
            raise _bad(where, name, f"{text} is {'inverted' if low > high else 'empty'}: its low end {low:g} is not "
                                    f"below its high end {high:g}; {fix}.")
        if is_log and low <= 0:
            raise _bad(where, name, f"{text} is log-scaled, so its low end must be > 0 (got {low:g}).")
        if "int" in tags:
            if not (low.is_integer() and high.is_integer()):
                raise _bad(where, name, f"{text} is tagged int, so its ends must be whole numbers.")
            return SearchParam(name, IntDistribution(int(low), int(high), log=is_log))
        return SearchParam(name, FloatDistribution(low, high, log=is_log))
    if tags:
        raise _bad(where, name, f"tags ({', '.join(sorted(tags))}) apply to interval() only, got {text}.")
    if isinstance(sweep, ChoiceSweep):
        values = list(override.sweep_iterator())
        return SearchParam(name, *_categorical(values))
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise _bad(where, name, f"{text} has no values (start {sweep.start}, stop {sweep.stop}, step "
                                    f"{sweep.step}): the stop is exclusive and the step must go towards it.")
        if sweep.shuffle:
            return SearchParam(name, *_categorical(values))
        step = abs(sweep.step if sweep.step is not None else 1)
        if all(isinstance(v, int) for v in values):
            return SearchParam(name, IntDistribution(min(values), max(values), step=int(step)))
        return SearchParam(name, FloatDistribution(float(min(values)), float(max(values)), step=float(step)))
    raise _bad(where, name, f"{text} is not a search the Optuna search understands; use interval(), choice() "
                            "or range().")


def parse_search_space(params: Mapping[str, Any] | Sequence[str], where: str = "") -> SearchSpace:
    """Read a search space: Hydra sweep strings, Optuna distributions or lists of choices.

    Args:
        params: ``{key: spec}`` (``hydra.sweeper.params``, or :func:`tune`'s ``space``) or
            override lines ``["optimizer.lr=interval(1e-4, 1e-2)", "trainer.max_epochs=5"]``
            (a command line). A spec is a Hydra sweep string (see the module docstring), an
            ``optuna.distributions`` object, a list of choices, or a fixed value.
        where: The key prefix errors name (``"hydra.sweeper.params"``); "" for a command line.

    Returns:
        The :class:`SearchSpace`.

    Raises:
        ConfigError: A spec that does not parse, an empty ``choice()`` or ``range()``, an
            inverted or empty ``interval``, a log scale reaching 0, an unknown tag, or
            ``glob()``; the message names the key and the fix.

    Example:
        >>> space = parse_search_space({"optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
        ...                             "data.batch_size": "choice(32, 64)", "model.depth": "range(2, 5)"})
        >>> space.distributions["model.depth"]
        IntDistribution(high=4, log=False, low=2, step=1)
        >>> parse_search_space({"model.drop_rate": "interval(0.5, 0.1)"}, "hydra.sweeper.params")
        Traceback (most recent call last):
        ...
        dlkit.config.ConfigError: hydra.sweeper.params.model.drop_rate: interval(0.5, 0.1) is inverted: its low end 0.5 is not \
below its high end 0.1; write interval(0.1, 0.5).
    """
    lines: list[tuple[str, str]] = []
    direct: dict[str, SearchParam] = {}
    constants: dict[str, Any] = {}
    if isinstance(params, Mapping):
        for key, spec in params.items():
            key = str(key)
            if isinstance(spec, BaseDistribution):
                direct[key] = SearchParam(key, spec)
            elif isinstance(spec, (list, tuple)):
                if not spec:
                    raise _bad(where, key, "an empty list of choices; give at least one value.")
                direct[key] = SearchParam(key, *_categorical(list(spec)))
            else:
                lines.append((key, f"{key}={_spec_text(spec)}"))
    else:
        lines = [(_key_of(line), line) for line in params]
    parser = OverridesParser.create()
    searched: dict[str, SearchParam] = {}
    fixed: list[str] = []
    for key, line in lines:
        if line.partition("=")[2].lstrip().startswith("glob("):
            raise _bad(where, key, "glob() is not supported by the Optuna search; list the options with choice().")
        try:
            override = parser.parse_override(line)
        except HydraException as err:
            if "empty choice" in str(err):
                raise _bad(where, key, "choice() is empty: give at least one option, e.g. choice(32, 64).") from err
            raise _bad(where, key, f"{line.partition('=')[2]!r} does not parse: {err}") from err
        param = _from_override(override, where)
        if param is None:
            fixed.append(line)
            constants[_bare(override.get_key_element())] = override.value()
        else:
            searched[param.name] = param
    ordered = {**searched, **direct}
    return SearchSpace(ordered, tuple(fixed), constants)


def _spec_text(spec: Any) -> str:
    if isinstance(spec, bool):
        return "true" if spec else "false"
    if spec is None:
        return "null"
    return str(spec)


def check_direction(direction: Any, key: str = "direction") -> str:
    """Optuna's name for a direction: ``"minimize"`` or ``"maximize"`` (``"min"``/``"max"`` accepted).

    Args:
        direction: The configured direction.
        key: Its config key, named in the error.

    Raises:
        ValueError: Anything else, a list (one objective only) included.

    Example:
        >>> check_direction("max")
        'maximize'
    """
    if isinstance(direction, str) and direction.lower() in _DIRECTIONS:
        return _DIRECTIONS[direction.lower()]
    extra = " The search optimises one metric (optimized_metric)." if isinstance(direction, (list, tuple)) else ""
    raise ValueError(f"{key} must be 'minimize' or 'maximize' (or 'min'/'max'), got {direction!r}.{extra}")


def count_finished(study: optuna.Study) -> int:
    """The study's finished trials: complete, pruned, and failed ones other than interrupted ones.

    Example:
        >>> count_finished(optuna.create_study())
        0
    """
    interrupted = set(study.user_attrs.get(INTERRUPTED_ATTR, []))
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(t.state in done and t.number not in interrupted for t in study.get_trials(deepcopy=False))


def recover_interrupted(study: optuna.Study, retry: int | None = None) -> list[int]:
    """Close the trials a killed search left running: failed, marked interrupted, parameters queued again.

    Run this only when no other process works on the study: its running trials would be
    taken for interrupted ones.

    Args:
        study: The study, loaded from its storage.
        retry: Queue at most this many of them again (the trials the search still has to
            run). Defaults to None: all.

    Returns:
        The numbers of the interrupted trials.

    Example:
        >>> recover_interrupted(optuna.create_study())
        []
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    numbers = [t.number for t in running]
    study.set_user_attr(INTERRUPTED_ATTR, sorted({*study.user_attrs.get(INTERRUPTED_ATTR, []), *numbers}))
    for i, frozen in enumerate(running):
        study.tell(frozen.number, state=TrialState.FAIL)
        if retry is None or i < retry:
            study.enqueue_trial(frozen.params, user_attrs={RETRY_ATTR: frozen.number}, skip_if_exists=False)
    return numbers


def open_study(storage: Any, study_name: str | None, direction: str, sampler: Any = None, pruner: Any = None,
               load_if_exists: bool = True, key: str = "") -> optuna.Study:
    """Create a study, or load it to resume, checking that the stored direction is the asked one.

    Args:
        storage: Storage URL or object (None: in memory).
        study_name: The study's name.
        direction: ``"minimize"`` or ``"maximize"``.
        sampler: An Optuna sampler. Defaults to Optuna's (TPE).
        pruner: An Optuna pruner. Defaults to Optuna's (median).
        load_if_exists: Resume a study of that name. Defaults to True.
        key: The config prefix named in errors (``"hydra.sweeper."``).

    Raises:
        ValueError: The study exists and ``load_if_exists`` is false, or it was created
            with the other direction.

    Example:
        >>> open_study(None, "probe", "maximize").direction.name
        'MAXIMIZE'
    """
    try:
        study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=study_name,
                                    direction=direction, load_if_exists=load_if_exists)
    except optuna.exceptions.DuplicatedStudyError as err:
        raise ValueError(f"Study {study_name!r} already exists in {storage}: set {key}load_if_exists=true to "
                         f"resume it, or choose another {key}study_name.") from err
    if study.direction.name.lower() != direction:
        raise ValueError(f"Study {study_name!r} in {storage} was created to {study.direction.name.lower()}, but "
                         f"{key}direction={direction}: resume it with its direction, or start another study.")
    return study


def failure_line(error: BaseException) -> str:
    """``"TypeName: first line"`` of an error, as run folders record it."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes:
        study: The Optuna study (``study.trials_dataframe()``, plots, ...).
        best_params: The best trial's parameters, as ``build_fn`` received them.
        best_value: Its objective value.
        best_trial: Its number.
        best_task: The trained task of the best trial, when this call trained it (None when
            the best trial is from an earlier session of a resumed study).
    """

    study: optuna.Study
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    best_task: Any = None

    def __repr__(self) -> str:
        return (f"TuneResult(best_value={self.best_value:.4g}, best_trial={self.best_trial}, "
                f"best_params={self.best_params})")


def tune(
    build_fn: Callable[[dict[str, Any]], Any],
    space: Mapping[str, Any],
    n_trials: int,
    data: Any = None,
    objective: str = "val/loss",
    direction: str | None = None,
    epochs: int = 10,
    pruner: Any = None,
    sampler: Any = None,
    storage: Any = None,
    study_name: str | None = None,
    load_if_exists: bool = True,
    callbacks: Sequence[Any] = (),
    max_consecutive_failures: int | None = 3,
    verbose: bool = False,
    **fit_kwargs: Any,
) -> TuneResult:
    """Search hyper-parameters with Optuna, Keras Tuner's way: ``build_fn(params)`` builds, dlkit fits.

    Each trial samples ``space``, calls ``build_fn`` with the values, fits the task it
    returns for ``epochs`` with an :class:`~dlkit.callbacks.OptunaPruning` callback (so the
    pruner can stop it after any validation epoch) and scores it by the best value of
    ``objective`` over its epochs (Keras Tuner's rule). A trial that raises is recorded as
    failed and the search goes on; ``max_consecutive_failures`` failures in a row stop it.
    With a ``storage``, a study of that name is resumed: its finished trials count towards
    ``n_trials`` and an interrupted one is tried again.

    Args:
        build_fn: ``params -> task`` (a compiled ``Classifier``...; ``data`` is then
            required) or ``params -> (task, data)``.
        space: ``{name: spec}``; a spec is a Hydra sweep string (``"tag(log, interval(1e-4, 1e-2))"``,
            ``"choice(32, 64)"``, ``"range(1, 4)"``), an ``optuna.distributions`` object, a list
            of choices, or a fixed value (see :func:`parse_search_space`).
        n_trials: Trials the study should have finished when the call returns.
        data: What ``fit`` trains on when ``build_fn`` returns a task only. Defaults to None.
        objective: The metric to optimise and prune on. Defaults to ``"val/loss"``.
        direction: ``"minimize"``/``"maximize"`` (``"min"``/``"max"``). Defaults to None:
            minimise when ``objective`` names a loss, else maximise.
        epochs: Epochs per trial. Defaults to 10.
        pruner: An ``optuna.pruners`` object. Defaults to None: Optuna's ``MedianPruner``;
            ``optuna.pruners.NopPruner()`` turns pruning off.
        sampler: An ``optuna.samplers`` object. Defaults to None: Optuna's ``TPESampler``.
        storage: Where the study lives (``"sqlite:///search.db"``). Defaults to None: memory.
        study_name: The study's name in ``storage``. Defaults to None (Optuna names it).
        load_if_exists: Resume the study of that name. Defaults to True.
        callbacks: More Lightning callbacks for every trial (shared by the trials).
        max_consecutive_failures: Stop after this many failed trials in a row (None: never).
            Defaults to 3.
        verbose: Progress bars. Defaults to False.
        **fit_kwargs: Passed to ``task.fit`` (``batch_size``, ``validation_split``, trainer options).

    Returns:
        A :class:`TuneResult`: the study, the best parameters and value, the best trained task.

    Raises:
        ValueError: A bad ``space``, ``n_trials`` or ``direction`` (the key named).
        MonitorNotLoggedError: ``objective`` is not logged (the logged metrics listed).
        RuntimeError: No trial completed, or too many failed in a row.

    Example:
        >>> def build(params):
        ...     clf = Classifier(create_model("mlp", in_features=64, num_classes=10, drop_rate=params["drop"]))
        ...     return clf.compile(lr=params["lr"], metrics=["accuracy"])
        >>> data = DigitsDataModule(flatten=True, resize=None)
        >>> result = dlkit.tune(build, {"lr": "tag(log, interval(1e-4, 1e-1))", "drop": "interval(0, 0.5)"},
        ...                     n_trials=20, data=data, objective="val/acc", epochs=10)  # doctest: +SKIP
        >>> result.best_params, result.best_task.evaluate(data)  # doctest: +SKIP
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials <= 0:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}.")
    parsed = parse_search_space(space, "space")
    if not parsed.params:
        raise ValueError(f"space has nothing to search: give interval(), choice() or range() specs, got {dict(space)}.")
    direction = check_direction(direction if direction is not None else
                                ("minimize" if "loss" in objective.rsplit("/", 1)[-1] else "maximize"))
    study = open_study(storage, study_name, direction, sampler, pruner, load_if_exists)
    missing = max(0, n_trials - count_finished(study))
    interrupted = recover_interrupted(study, retry=missing)
    if interrupted:
        log.info("Trials %s of study %r were interrupted: their parameters are tried again.", interrupted,
                 study.study_name)
    maximize = direction == "maximize"
    best_task, best_number, failures = None, None, 0
    for _ in range(missing):
        trial = study.ask(parsed.distributions)
        params = parsed.values(trial.params)
        try:
            built = build_fn(params)
            task, trial_data = built if isinstance(built, tuple) else (built, data)
            if trial_data is None:
                raise ValueError("build_fn returned a task without data: pass data= to tune, or return (task, data).")
            history = task.fit(trial_data, epochs=epochs, callbacks=[*callbacks, OptunaPruning(objective, trial=trial)],
                               verbose=verbose, **fit_kwargs)
            curve = [v for v in history.history.get(objective, []) if math.isfinite(v)]
            if not curve:
                raise FloatingPointError(f"{objective} was never finite in trial {trial.number}.")
            value = max(curve) if maximize else min(curve)
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("Trial %d pruned: %s", trial.number, pruned)
            failures = 0
            continue
        except MonitorNotLoggedError:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as err:
            trial.set_user_attr(ERROR_ATTR, failure_line(err))
            study.tell(trial, state=TrialState.FAIL)
            failures += 1
            log.warning("Trial %d failed (%s) with %s", trial.number, failure_line(err), params)
            if max_consecutive_failures is not None and failures >= max_consecutive_failures:
                raise RuntimeError(f"{failures} trials failed in a row, the last with {failure_line(err)}: stopping "
                                   "the search (max_consecutive_failures).") from err
            continue
        study.tell(trial, value)
        failures = 0
        log.info("Trial %d: %s=%.4g with %s", trial.number, objective, value, params)
        if study.best_trial.number == trial.number:
            best_task, best_number = task, trial.number
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"No trial of study {study.study_name!r} completed ({len(study.trials)} trials: all pruned "
                           "or failed); widen the space or relax the pruner.")
    best = study.best_trial
    return TuneResult(study=study, best_params=parsed.values(best.params), best_value=float(best.value),
                      best_trial=best.number, best_task=best_task if best_number == best.number else None)
