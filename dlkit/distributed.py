"""Multi-process strategies inside a Hydra multirun: each DDP child joins its own job, once.

Lightning's ``ddp`` strategy (``trainer=ddp``/``ddp_cpu``) starts ranks 1..N-1 by running
the parent's command line again (``_SubprocessScriptLauncher``; for a Hydra app the
command comes from ``_hydra_subprocess_cmd``: ``sys.argv`` plus ``hydra.run.dir``).
Inside a ``-m`` sweep that command line is the sweep itself, so every child started the
whole sweep over, in a second multirun folder (Lightning #11300, open since 2021).

:func:`ddp_multirun_job` wraps one job of a multirun and fixes two things:

* a child gets the command of *its job* (:func:`job_command`): the job's overrides, its
  folder as ``hydra.run.dir``, ``hydra.mode=RUN``, its job number, no ``.hydra/`` of its own;
* the job leaves nothing behind for the next job of the same sweep process. Lightning
  never destroys the process group and leaves ``LOCAL_RANK``, ``MASTER_PORT``... in
  ``os.environ``. With ``LOCAL_RANK`` set, the next job's Trainer believes an outside
  launcher started its ranks and starts no child, then talks to the first job's process
  group, whose rank 1 has exited: the second job hung or failed with "Connection closed
  by peer". So the job's children are waited for (killed if the job failed), the process
  group is destroyed and the variables are put back as they were.

Outside a multirun nothing is changed: Lightning's own command is right for a single run.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["LIGHTNING_ENV", "ddp_multirun_job", "job_command"]

log = logging.getLogger(__name__)

# What Lightning writes to os.environ while it launches and joins ranks (launcher,
# _init_dist_connection, seed_everything, _set_num_threads_if_needed; RANK by DeepSpeed).
LIGHTNING_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT",
                 "PL_GLOBAL_SEED", "PL_SEED_WORKERS", "OMP_NUM_THREADS")
# A child that outlives its finished job this long is stuck (in a collective rank 0 left).
CHILD_EXIT_TIMEOUT_S = 60.0
# Hydra flags that change which config is composed; the child needs them as well.
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# Hydra overrides that only concern the sweep, or that job_command sets itself.
_SWEEP_ONLY = ("hydra.mode", "hydra.run", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher",
               "hydra/launcher", "hydra.output_subdir", "hydra.job.name", "hydra.job.num", "hydra.job.id")


def job_command(local_rank: int, entry_module: str = "dlkit.train") -> tuple[list[str], str]:
    """The command and working directory that start rank ``local_rank`` of the current Hydra job.

    Replaces Lightning's ``_hydra_subprocess_cmd`` inside a multirun. The command is
    ``python -m <entry_module>`` (not ``sys.argv[0]``, which under a launcher such as
    submitit is the launcher's own program) with the job's overrides
    (``hydra.overrides.task``) and its non-sweep Hydra overrides, then the job's folder
    as ``hydra.run.dir`` and ``hydra.mode=RUN`` (a config such as ``hparams_search=lr_grid``
    sets ``hydra.mode: MULTIRUN`` itself), the job's number and id (``${hydra:job.num}``
    names an Optuna trial) and ``hydra.output_subdir=null``: rank 0 has written ``.hydra/``.

    Args:
        local_rank: The child's rank on this machine (1 .. devices - 1).
        entry_module: The module whose ``python -m`` runs the Hydra app. Defaults to
            ``"dlkit.train"``.

    Returns:
        ``(command, cwd)``, as Lightning's launcher expects: the argument list for
        :class:`subprocess.Popen` and the directory the sweep was started from.

    Example:
        >>> job_command(1)  # in job 0 of ``dlkit-train -m trainer=ddp_cpu optimizer.lr=1e-3,2e-3``
        (['/usr/bin/python3', '-m', 'dlkit.train', 'trainer=ddp_cpu', 'optimizer.lr=0.001',
          "hydra.run.dir='/home/me/logs/lenet_digits/multiruns/2026-12-02_10-00-00_000000/0'",
          'hydra.mode=RUN', 'hydra.job.name=train_ddp_process_1', 'hydra.output_subdir=null',
          'hydra.job.num=0', "hydra.job.id='0'"], '/home/me')
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", entry_module, *_config_flags(sys.argv[1:]), *hydra_cfg.overrides.task]
    command += [o for o in hydra_cfg.overrides.hydra if _key(o) not in _SWEEP_ONLY and
                not _key(o).startswith(tuple(f"{k}." for k in _SWEEP_ONLY))]
    command += [f"hydra.run.dir={_quoted(hydra_cfg.runtime.output_dir)}", "hydra.mode=RUN",
                # Lightning's name for a child's job: its log file is <job folder>/train_ddp_process_<rank>.log.
                f"hydra.job.name=train_ddp_process_{local_rank}", "hydra.output_subdir=null"]
    num, job_id = OmegaConf.select(hydra_cfg, "job.num"), OmegaConf.select(hydra_cfg, "job.id")
    command += [f"hydra.job.num={num}"] if num is not None else []
    command += [f"hydra.job.id={_quoted(str(job_id))}"] if job_id is not None else []
    return command, get_original_cwd()


@contextmanager
def ddp_multirun_job(cfg: DictConfig, entry_module: str = "dlkit.train") -> Iterator[None]:
    """Run one job of a Hydra multirun so that a ``ddp`` strategy's ranks join this job only.

    Inside a multirun, while the block runs, Lightning's subprocess-script launcher
    (``lightning.pytorch.strategies.launchers.subprocess_script``, used by ``ddp``,
    ``fsdp`` and ``model_parallel``) builds each child's command with :func:`job_command`,
    and the launchers that start children are remembered. When the block ends, however it ends, those
    children are waited for (up to :data:`CHILD_EXIT_TIMEOUT_S`, then killed; at once if
    the job raised, since they would wait in a collective for rank 0), a process group
    the job created is destroyed, the :data:`LIGHTNING_ENV` variables and torch's thread
    count are put back, and Lightning's functions are restored. Single-process and
    ``ddp_spawn`` jobs start no child: for them only the clean-up of the environment runs.

    Outside a multirun (or when Hydra is not running) it does nothing. With a Lightning
    whose launcher is not the one checked here, a ``ddp`` strategy becomes the matching
    ``ddp_spawn`` (logged), which needs no command line.

    Args:
        cfg: The job's composed config; only ``trainer.strategy`` may change (the fallback).
        entry_module: Passed to :func:`job_command`. Defaults to ``"dlkit.train"``.

    Returns:
        A context manager; the block is the job (``train(cfg)``).

    Example:
        >>> with ddp_multirun_job(cfg):  # in dlkit-train's Hydra task function
        ...     metrics, _ = train(cfg)
    """
    if not _in_multirun():
        yield
        return
    import torch
    from lightning.pytorch.strategies.launchers import subprocess_script

    launcher_cls = getattr(subprocess_script, "_SubprocessScriptLauncher", None)
    patch = _patchable(subprocess_script, launcher_cls)
    if not patch:
        _fall_back_to_spawn(cfg)
    saved_env = {k: os.environ.get(k) for k in LIGHTNING_ENV}
    saved_threads = torch.get_num_threads()
    had_group = _group_initialized()
    launched: list[Any] = []
    original_cmd = getattr(subprocess_script, "_hydra_subprocess_cmd", None)
    original_call = getattr(launcher_cls, "_call_children_scripts", None)

    def call_children_scripts(launcher: Any) -> None:
        launched.append(launcher)  # before the Popen calls: a failing second one still leaves the first one known
        original_call(launcher)

    if patch:
        subprocess_script._hydra_subprocess_cmd = lambda local_rank: job_command(local_rank, entry_module)
        launcher_cls._call_children_scripts = call_children_scripts
    failed = True
    try:
        yield
        failed = False
    finally:
        if patch:
            subprocess_script._hydra_subprocess_cmd = original_cmd
            launcher_cls._call_children_scripts = original_call
        for launcher in launched:
            _reap_children(launcher, kill=failed)
        if _group_initialized() and not had_group:
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _patchable(module: Any, launcher_cls: Any) -> bool:
    """Whether the installed Lightning has the two names patched, with the shapes patched for (2.x)."""
    import lightning

    builder = getattr(module, "_hydra_subprocess_cmd", None)
    return (lightning.__version__.split(".")[0] == "2" and callable(builder)
            and list(inspect.signature(builder).parameters) == ["local_rank"]
            and callable(getattr(launcher_cls, "_call_children_scripts", None)))


def _fall_back_to_spawn(cfg: DictConfig) -> None:
    strategy = OmegaConf.select(cfg, "trainer.strategy", default=None)
    if isinstance(strategy, str) and (strategy == "ddp" or strategy.startswith("ddp_find_unused_parameters")):
        spawn = strategy.replace("ddp", "ddp_spawn", 1)
        log.warning("This Lightning's DDP launcher is not the one dlkit patches for -m sweeps (Lightning #11300): "
                    "trainer.strategy=%s runs as %s in this sweep.", strategy, spawn)
        with open_dict(cfg):
            cfg.trainer.strategy = spawn


def _reap_children(launcher: Any, kill: bool) -> None:
    # Lightning's child-process observer thread watches this very list and kills this
    # process when a child in it has failed (as the ones killed here have): emptied
    # first, it stops, and the sweep goes on to its next job.
    procs = list(launcher.procs)
    launcher.procs.clear()
    for rank, proc in enumerate(procs, start=1):
        try:
            proc.wait(timeout=0 if kill else CHILD_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            if not kill:
                log.warning("DDP rank %d (pid %d) was still running %.0f s after its job ended: killed.",
                            rank, proc.pid, CHILD_EXIT_TIMEOUT_S)
            proc.kill()
            proc.wait()
        if proc.returncode and not kill:
            log.warning("DDP rank %d (pid %d) of this job exited with code %d.", rank, proc.pid, proc.returncode)


def _group_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _config_flags(argv: Sequence[str]) -> list[str]:
    flags: list[str] = []
    for i, arg in enumerate(argv):
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            flags += [arg, argv[i + 1]]
        elif arg.startswith(tuple(f"{f}=" for f in _CONFIG_FLAGS)):
            flags.append(arg)
    return flags


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _quoted(value: str) -> str:
    # In Hydra's quoted strings only backslashes before a quote (or the closing one) escape.
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"
