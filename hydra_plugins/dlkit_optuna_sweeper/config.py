"""The structured config of ``hydra/sweeper=dlkit_optuna``, registered in Hydra's ConfigStore.

Search configs select it with ``defaults: [override /hydra/sweeper: dlkit_optuna]`` (see
``conf/hparams_search/lenet_digits_optuna.yaml``) and set the fields below under
``hydra.sweeper``.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses would look string annotations up. OmegaConf reads the
# typing forms below at runtime.
# ruff: noqa: UP006, UP035, UP045
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

__all__ = ["DlkitOptunaSweeperConf"]


@dataclass
class DlkitOptunaSweeperConf:
    """``hydra.sweeper`` of an Optuna search.

    Args:
        direction: ``minimize`` or ``maximize`` (``min``/``max``) the job's return value,
            ``optimized_metric``.
        n_trials: Trials the study should have finished when the search ends; finished
            trials of a resumed study count.
        n_jobs: Trials asked and launched together (one launcher batch). 1 with Hydra's
            basic launcher, which runs jobs one after another in this process.
        study_name: The study's name in the storage. null: ``task_name``.
        storage: Optuna storage URL. null: ``sqlite:///<hydra.sweep.dir>/optuna.db``, so a
            search is resumed by running it again with the same ``hydra.sweep.dir``.
        load_if_exists: Resume a study of that name found in the storage.
        monitor: The metric reported to Optuna after every validation epoch, for pruning.
            null: ``optimized_metric``. Set it when ``optimized_metric`` is a ``test/`` metric.
        max_consecutive_failures: Stop the search after this many failed trials in a row
            (a broken config fails every trial). null: never.
        sampler: ``{_target_: optuna.samplers.<Name>, **kwargs}``. A seeded sampler of a
            resumed study is seeded with ``seed + trials so far``, so it does not repeat the
            first session's proposals.
        pruner: ``{_target_: optuna.pruners.<Name>, **kwargs}``, stored with the study so that
            every job builds the same one; null: no pruning.
        params: ``key: spec`` in Hydra's sweep syntax: ``interval(a, b)``,
            ``tag(log, interval(a, b))``, ``tag(int, interval(a, b))``, ``choice(...)``,
            ``range(a, b[, step])``; any other value is fixed for every trial.
    """

    _target_: str = "hydra_plugins.dlkit_optuna_sweeper.dlkit_optuna_sweeper.DlkitOptunaSweeper"
    # The sampler and pruner arrive as configs: the sweeper builds them itself (and stores the pruner's).
    _recursive_: bool = False
    direction: str = "minimize"
    n_trials: int = 20
    n_jobs: int = 1
    study_name: Optional[str] = None
    storage: Optional[str] = None
    load_if_exists: bool = True
    monitor: Optional[str] = None
    max_consecutive_failures: Optional[int] = 3
    sampler: Dict[str, Any] = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Optional[Dict[str, Any]] = None
    params: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="dlkit_optuna", node=DlkitOptunaSweeperConf, provider="dlkit")
