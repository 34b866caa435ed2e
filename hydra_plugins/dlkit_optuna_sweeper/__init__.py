"""dlkit's Optuna sweeper for Hydra: ``hydra/sweeper=dlkit_optuna``, a thin layer over Optuna's ask/tell API.

Hydra builds sweepers only from the ``hydra_plugins`` namespace package, and scans every
module here (except ``_``-prefixed ones) at start-up; so this package imports nothing
heavy: :mod:`.config` registers the structured config, :mod:`.dlkit_optuna_sweeper`
holds the plugin class, and the implementation in :mod:`._core` (with Optuna, torch and
dlkit) is imported when a search starts.
"""
