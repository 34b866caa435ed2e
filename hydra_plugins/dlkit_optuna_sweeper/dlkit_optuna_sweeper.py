"""The Hydra plugin class of ``hydra/sweeper=dlkit_optuna``; the work is done by :mod:`._core`.

Hydra imports this module at every start-up to find its plugins, so it only defines the
class; Optuna, torch and dlkit load when Hydra builds the sweeper for a ``-m`` run.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# Registers the config when Hydra scans this package.
from hydra_plugins.dlkit_optuna_sweeper.config import DlkitOptunaSweeperConf

__all__ = ["DlkitOptunaSweeper", "DlkitOptunaSweeperConf"]


class DlkitOptunaSweeper(Sweeper):
    """Optuna search as a Hydra sweeper: ask a trial, launch its job, tell Optuna the job's result.

    Jobs prune themselves (an ``OptunaPruning`` callback reloads their trial from the
    study's storage), so pruning works with any launcher; the study lives in SQLite in the
    sweep folder, so a search resumes. Settings: :class:`~.config.DlkitOptunaSweeperConf`.

    Example:
        >>> # dlkit-train -m hparams_search=lenet_digits_optuna hydra.sweeper.n_trials=30
    """

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.dlkit_optuna_sweeper._core import OptunaSearch

        super().__init__()
        self.search = OptunaSearch(**settings)  # checks the settings before any job runs

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.hydra_context, self.config, self.launcher = hydra_context, config, self.search.launcher

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
