"""Report the validation curve of a run to its Optuna trial and stop the run when Optuna prunes it.

Optuna decides from the intermediate values of every trial whether a running one is worth
finishing (``trial.should_prune()``); the run has to report them. :class:`OptunaPruning`
reports the monitored metric after every validation epoch and raises
``optuna.TrialPruned`` when the pruner says so, which ends ``trainer.fit``.

The trial comes either as an object (``dlkit.tune``, in the process that asked for it)
or as where to find it: a storage URL, the study name and the trial number, which is
how a ``dlkit-train -m`` job of the ``dlkit_optuna`` sweeper reaches its trial in any
launcher, also in another process or on another machine. The pruner is then the one the
sweeper stored with the study (its ``dlkit:pruner`` user attribute).

``optuna`` is imported when the callback is built, so ``dlkit.callbacks`` loads without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L

__all__ = ["PRUNER_ATTR", "MonitorNotLoggedError", "OptunaPruning", "load_trial", "pruner_from_spec"]

# The study user attribute holding the pruner's config (``{"_target_": ..., **kwargs}``).
PRUNER_ATTR = "dlkit:pruner"
# Only Optuna's pruners may be built from a study's attribute: the storage is data.
_PRUNER_PACKAGE = "optuna.pruners."


class MonitorNotLoggedError(ValueError):
    """The metric a search optimises or prunes on is not logged; the message lists the logged ones."""


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as err:  # the optional extra
        raise ImportError("Optuna search needs optuna>=4: pip install 'dlkit[tune]' (or pip install optuna).") from err
    return optuna


def pruner_from_spec(spec: Mapping[str, Any] | None) -> Any:
    """Build an Optuna pruner from ``{"_target_": "optuna.pruners.<Name>", **kwargs}``; None -> ``NopPruner``.

    Args:
        spec: The pruner's config, as ``hydra.sweeper.pruner`` writes it.

    Raises:
        ValueError: The target is not a class of ``optuna.pruners``.

    Example:
        >>> type(pruner_from_spec({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2})).__name__
        'MedianPruner'
    """
    optuna = _optuna()
    if not spec:
        return optuna.pruners.NopPruner()
    kwargs = dict(spec)
    target = str(kwargs.pop("_target_", ""))
    name = target.removeprefix(_PRUNER_PACKAGE)
    cls = getattr(optuna.pruners, name, None) if target.startswith(_PRUNER_PACKAGE) else None
    if not isinstance(cls, type) or not issubclass(cls, optuna.pruners.BasePruner):
        known = sorted(n for n in dir(optuna.pruners) if n.endswith("Pruner") and n != "BasePruner")
        raise ValueError(f"pruner _target_ must be one of optuna.pruners.{{{', '.join(known)}}}, got {target!r}.")
    return cls(**kwargs)


def load_trial(storage: Any, study_name: str, trial_number: int) -> Any:
    """The ``optuna.Trial`` numbered ``trial_number`` of a stored study, to report to from another process.

    Args:
        storage: A storage URL (``"sqlite:///search/optuna.db"``) or an Optuna storage object.
        study_name: The study's name in that storage.
        trial_number: The trial's number in the study (a sweep's job number).

    Returns:
        A live ``optuna.Trial`` whose study uses the pruner stored with it (see :data:`PRUNER_ATTR`).

    Raises:
        KeyError: No such study or trial in the storage.

    Example:
        >>> trial = load_trial("sqlite:///logs/search/optuna.db", "lenet_digits_optuna", 3)  # doctest: +SKIP
    """
    optuna = _optuna()
    storage = optuna.storages.RDBStorage(storage) if isinstance(storage, str) else storage
    try:
        study_id = storage.get_study_id_from_name(study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(trial_number))
    except KeyError as err:
        raise KeyError(f"No trial {trial_number} of study {study_name!r} in the Optuna storage: {err}") from err
    pruner = pruner_from_spec(storage.get_study_user_attrs(study_id).get(PRUNER_ATTR))
    # The sampler is never asked here (the trial's parameters are already set); a random one
    # avoids building TPE's state for nothing.
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner,
                              sampler=optuna.samplers.RandomSampler())
    return optuna.trial.Trial(study, trial_id)


class OptunaPruning(L.Callback):
    """Report ``monitor`` to an Optuna trial after every validation epoch; prune the run when Optuna says so.

    The value of epoch ``e`` is the trial's intermediate value at step ``e``. When
    ``trial.should_prune()`` is true, ``optuna.TrialPruned`` is raised: the run ends, the
    search records the trial as pruned, and ``dlkit-train`` marks the run folder's
    ``metrics.json`` ``"status": "pruned"``. A monitored metric that is not logged at the
    first validation is an error listing the metrics that are, before the run spends its
    budget. Under DDP rank 0 reports and asks, and every rank stops together.

    Args:
        monitor: The metric reported, e.g. ``"val/acc"``.
        trial: An ``optuna.Trial`` (Python API). Defaults to None: the trial is loaded
            from ``storage``, ``study_name`` and ``trial_number`` when fitting starts.
        storage: Storage URL of the study (a sweep's ``sqlite:///.../optuna.db``).
        study_name: The study's name.
        trial_number: The trial's number (the sweeper makes it the job number).

    Raises:
        ValueError: Neither a trial nor its storage, study name and number.

    Example:
        >>> def objective(trial):
        ...     clf = Classifier(create_model("lenet5")).compile(lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True))
        ...     history = clf.fit(data, epochs=5, callbacks=[OptunaPruning("val/acc", trial=trial)])
        ...     return max(history.history["val/acc"])
    """

    def __init__(
        self,
        monitor: str,
        trial: Any = None,
        storage: str | None = None,
        study_name: str | None = None,
        trial_number: int | str | None = None,
    ) -> None:
        if not monitor or not isinstance(monitor, str):
            raise ValueError(f"OptunaPruning needs the metric to report, monitor='val/acc' say; got {monitor!r}.")
        if trial is None and (storage is None or study_name is None or trial_number is None):
            raise ValueError(
                "OptunaPruning needs trial=<optuna.Trial>, or storage, study_name and trial_number to load it; "
                f"got storage={storage!r}, study_name={study_name!r}, trial_number={trial_number!r}."
            )
        self.monitor = monitor
        self.trial = trial
        self.storage, self.study_name = storage, study_name
        self.trial_number = None if trial_number is None else int(trial_number)
        _optuna()  # missing optuna is an error now, not at the first validation

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial is None and trainer.is_global_zero:
            self.trial = load_trial(self.storage, str(self.study_name), int(self.trial_number or 0))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = sorted(trainer.callback_metrics)
            raise MonitorNotLoggedError(
                f"OptunaPruning reports {self.monitor!r} to the search, which is not logged at validation. "
                f"Logged metrics: {', '.join(logged) or 'none'}. Choose one of them: optimized_metric=... "
                "(or hydra.sweeper.monitor=...) for dlkit-train -m, objective=... for dlkit.tune."
            )
        current = float(value)
        prune = False
        if trainer.is_global_zero:
            # A NaN would make every comparison false; Optuna treats it as the worst value.
            self.trial.report(current if math.isfinite(current) else math.nan, step=epoch)
            prune = bool(self.trial.should_prune())
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            number = getattr(self.trial, "number", self.trial_number)
            raise _optuna().TrialPruned(f"trial {number} pruned at epoch {epoch}: {self.monitor}={current:.4g}")

    def __repr__(self) -> str:
        where = f"trial={self.trial.number}" if self.trial is not None else f"trial_number={self.trial_number}"
        return f"OptunaPruning(monitor={self.monitor!r}, {where})"
