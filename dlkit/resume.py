"""Resuming a run: which checkpoint and folder it continues, whether it may, and who holds the folder.

``dlkit-train ckpt_path=last`` (or a run folder) continues the same run in the same
folder, bit for bit on CPU with ``trainer.deterministic=true``:

- :func:`run_folder_of` and :func:`latest_run_folder` find the run folder a
  ``ckpt_path`` means; ``dlkit-train`` makes it Hydra's run directory.
- :func:`resume_checkpoint` picks the checkpoint to continue from (removing the
  temporary file of a write a crash cut short) and :func:`check_resume` refuses
  settings that differ from the stored run outside :data:`RESUMABLE_KEYS`.
- :class:`RunFolderLock` keeps a run folder to one process.

Lightning restores weights, optimiser, schedulers, loops, callbacks and the DataModule
from the checkpoint; dlkit's loaders and callbacks add the data order and the random
generators (see ``dlkit.data.TensorBatchLoader`` and ``dlkit.callbacks.ResumeState``).
torch is imported when first needed.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any

try:  # POSIX only; RunFolderLock falls back to an O_EXCL marker without it.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from dlkit.checkpoint import CONFIG_KEY, load_checkpoint_file, remove_stale_temp_files, resolve_ckpt_path
from dlkit.config import ConfigError

__all__ = [
    "LOCK_NAME",
    "RESUMABLE_KEYS",
    "RunFolderInUseError",
    "RunFolderLock",
    "check_resume",
    "config_changes",
    "latest_run_folder",
    "resume_checkpoint",
    "run_folder_of",
]

log = logging.getLogger(__name__)

# Keys of a run's config that may differ when it is resumed: how long it trains on,
# where it reads its data and writes its logs, and what it shows. Anything else
# (model, data, optimiser, schedule, seed, trainer numerics) is restored from the
# checkpoint or shapes what is, so a change there is refused, not silently ignored.
RESUMABLE_KEYS = (
    "ckpt_path",
    "checkpoint",
    "callbacks.last_checkpoint.every_n_steps",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.limit_test_batches",
    "callbacks.rich_progress_bar",
    "callbacks.model_summary",
    "callbacks.step_timer",
    "callbacks.epoch_log",
    "compile",
    "channels_last",
    "logger",
    "paths",
    "tags",
    "test",
    "optimized_metric",
)
# Name of the marker a run holds in its folder while it runs.
LOCK_NAME = ".dlkit-run.lock"


class RunFolderInUseError(RuntimeError):
    """A run folder is held by another running process."""


class RunFolderLock:
    """Claim a run folder for one process; a second claimant gets a clear error.

    The marker ``<folder>/.dlkit-run.lock`` names the owner (pid, host) and is held
    with ``flock``, which the operating system releases when the process ends, however
    it ends: a run killed with SIGKILL never blocks its own resume, and no stale marker
    needs guessing about. Where ``flock`` does not exist (Windows) the marker is
    created with ``O_EXCL`` and removed on release.

    Args:
        folder: The run folder (created if missing).

    Raises:
        RunFolderInUseError: From :meth:`acquire` when another process holds it.

    Example:
        >>> with RunFolderLock("logs/lenet_digits/runs/2026-11-22_10-00-00_000000"):
        ...     train(cfg)
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        """Take the folder, or raise :class:`RunFolderInUseError` naming its holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL)
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise self._in_use() from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._in_use() from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the folder up (the marker stays, unlocked, where ``flock`` exists)."""
        if self._fd is None:
            return
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        if fcntl is None:
            self.path.unlink(missing_ok=True)

    def check(self) -> None:
        """Raise :class:`RunFolderInUseError` if another process holds the folder now."""
        if self.path.is_file():
            self.acquire().release()

    def _in_use(self) -> RunFolderInUseError:
        try:
            owner = self.path.read_text().strip() or "unknown"
        except OSError:
            owner = "unknown"
        return RunFolderInUseError(
            f"Run folder {self.folder} is in use by another dlkit run ({owner}, marker {self.path}). "
            "Wait for it to finish, or start a new run (without ckpt_path / hydra.run.dir naming this folder)."
        )

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _is_run_folder(folder: Path) -> bool:
    return (folder / ".hydra").is_dir() or (folder / "checkpoints").is_dir()


def latest_run_folder(runs_dir: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None) -> Path:
    """The newest run folder in ``runs_dir`` (``logs/<task_name>/runs``): what ``ckpt_path=last`` means.

    Run folders are named by their start time, so the newest is the last by name;
    folders that hold neither ``.hydra`` nor ``checkpoints`` are not runs.

    Args:
        runs_dir: The folder of a task's runs.
        exclude: A folder not to count (the run that is asking). Defaults to None.

    Raises:
        ConfigError: When ``runs_dir`` holds no run.

    Example:
        >>> latest_run_folder("logs/lenet_digits/runs").name
        '2026-11-22_10-00-00_000000'
    """
    runs_dir = Path(runs_dir)
    skip = Path(exclude).resolve() if exclude is not None else None
    runs = sorted(
        d for d in (runs_dir.iterdir() if runs_dir.is_dir() else [])
        if d.is_dir() and _is_run_folder(d) and d.resolve() != skip
    )
    if not runs:
        raise ConfigError(
            f"ckpt_path=last: there is no run to resume in {runs_dir} (the runs of this task_name). "
            "Check task_name and paths.log_dir, or give the run folder itself."
        )
    return runs[-1]


def run_folder_of(ckpt_path: str | os.PathLike[str], runs_dir: str | os.PathLike[str]) -> Path | None:
    """The run folder a ``ckpt_path`` continues, so the resumed run writes into it.

    Args:
        ckpt_path: ``"last"`` (the newest run of this task, :func:`latest_run_folder`),
            a run folder, its ``checkpoints`` folder, or a checkpoint file inside one.
        runs_dir: Where this task's runs live (``logs/<task_name>/runs``).

    Returns:
        The run folder, or None for a checkpoint that is not part of a run folder (the
        run then starts in a new folder from that checkpoint's state).

    Example:
        >>> run_folder_of("logs/lenet_digits/runs/2026-11-22_10-00-00_000000/checkpoints/last.ckpt", "logs")
        PosixPath('logs/lenet_digits/runs/2026-11-22_10-00-00_000000')
    """
    if str(ckpt_path) == "last":
        return latest_run_folder(runs_dir)
    p = Path(ckpt_path).expanduser()
    folder = p if p.is_dir() else p.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder if (p.is_dir() or p.is_file()) and _is_run_folder(folder) else None


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_changes(
    stored: dict[str, Any], current: dict[str, Any], allowed: tuple[str, ...] = RESUMABLE_KEYS
) -> list[tuple[str, Any, Any]]:
    """Keys whose values differ between two run configs, outside ``allowed``.

    Args:
        stored: The config a checkpoint was written with (plain containers).
        current: The config of the run resuming it.
        allowed: Keys (and key prefixes: ``"logger"`` covers ``logger.csv.name``) that
            may differ. Defaults to :data:`RESUMABLE_KEYS`.

    Returns:
        ``(key, stored value, current value)`` for each difference, sorted by key; a key
        missing on one side shows as ``"<absent>"``. Values under one of the stored
        ``paths`` (a checkpoint folder under ``paths.output_dir``) are compared relative
        to it, so a run continued in another folder differs only in ``paths``.

    Example:
        >>> config_changes({"optimizer": {"lr": 0.1}, "ckpt_path": None}, {"optimizer": {"lr": 0.01}, "ckpt_path": "last"})
        [('optimizer.lr', 0.1, 0.01)]
    """
    old, new = _flatten(stored), _flatten(current)
    moves = sorted(
        ((str(v), str(new[k])) for k, v in old.items()
         if k.startswith("paths.") and isinstance(v, str) and v and isinstance(new.get(k), str)),
        key=lambda m: -len(m[0]),
    )

    def moved(value: Any) -> Any:
        for before, after in moves:
            if isinstance(value, str) and (value == before or value.startswith(before.rstrip("/") + "/")):
                return after + value[len(before):]
        return value

    changes = []
    for key in sorted(old.keys() | new.keys()):
        if any(key == a or key.startswith(a + ".") for a in allowed):
            continue
        a, b = moved(old.get(key, "<absent>")), new.get(key, "<absent>")
        if a != b:
            changes.append((key, old.get(key, "<absent>"), b))
    return changes


def resume_checkpoint(
    ckpt_path: str | os.PathLike[str] | None,
    output_dir: str | os.PathLike[str],
    runs_dir: str | os.PathLike[str],
) -> str | None:
    """The checkpoint a training run continues from (its settings are checked by :func:`check_resume`).

    Stale temporary files of a killed checkpoint write in ``<output_dir>/checkpoints``
    are removed first (:func:`remove_stale_temp_files`), so a write cut short leaves
    the previous, complete ``last.ckpt`` in use. Then:

    - ``ckpt_path`` None: a new run, None is returned; but a requeued SLURM job
      (``SLURM_RESTART_COUNT`` > 0) whose folder has a ``last.ckpt`` continues from it.
    - ``"last"``, a run folder or a file: :func:`resolve_ckpt_path` of it (a folder's
      ``last.ckpt``). A run folder without any checkpoint (killed before its first
      one) that is this run's own folder starts again from the first step: None.

    Args:
        ckpt_path: The ``ckpt_path`` config value.
        output_dir: This run's folder.
        runs_dir: Where runs of this task live, for ``"last"``.

    Returns:
        A checkpoint file, or None to start from scratch.

    Raises:
        ConfigError: No such checkpoint.

    Example:
        >>> resume_checkpoint("last", cfg.paths.output_dir, "logs/lenet_digits/runs")
        'logs/lenet_digits/runs/2026-11-22_10-00-00_000000/checkpoints/last.ckpt'
    """
    output_dir = Path(output_dir)
    remove_stale_temp_files(output_dir / "checkpoints")
    if not ckpt_path:
        # SLURM requeues a preempted job (Submitit: same overrides, same folder) with
        # SLURM_RESTART_COUNT > 0: it continues from its own last.ckpt.
        own = output_dir / "checkpoints" / "last.ckpt"
        if os.environ.get("SLURM_RESTART_COUNT", "0").isdigit() and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0 \
                and own.is_file():
            log.warning("Requeued SLURM job (SLURM_RESTART_COUNT=%s): resuming from %s.",
                        os.environ["SLURM_RESTART_COUNT"], own)
            return str(own)
        return None
    # `last` reaching here names a run other than this new one (dlkit-train replaces it
    # by the folder it resumes into).
    last = str(ckpt_path) == "last"
    target: str | os.PathLike[str] = latest_run_folder(runs_dir, exclude=output_dir) if last else ckpt_path
    folder = Path(target).expanduser()
    if folder.is_dir():
        remove_stale_temp_files(folder / "checkpoints")
        if folder.resolve() == output_dir.resolve() and not any((folder / "checkpoints").glob("*.ckpt")):
            log.warning("%s holds no checkpoint yet: the run starts again from its first step.", folder)
            return None
    return resolve_ckpt_path(target)


def check_resume(path: str | os.PathLike[str], run_config: dict[str, Any]) -> None:
    """Refuse to resume ``path`` with settings its restored state would override.

    The run's config is compared with the one stored in the checkpoint: a difference
    outside :data:`RESUMABLE_KEYS` is refused, since the restored state would override
    it or mix with it (the learning rate, schedule and batch order live in the
    checkpoint). A longer run (``trainer.max_epochs`` raised) whose schedule had
    already ended gets a warning: the extra epochs would train at its final rate.

    Args:
        path: A ``dlkit-train`` checkpoint.
        run_config: The resuming run's resolved config.

    Raises:
        ConfigError: Listing each key that differs (stored -> given) outside
            :data:`RESUMABLE_KEYS`.

    Example:
        >>> check_resume("run/checkpoints/last.ckpt", {**stored, "optimizer": {"lr": 1.0}})
        Traceback (most recent call last):
        ConfigError: ... optimizer.lr: 0.003 -> 1.0 ...
    """
    checkpoint = load_checkpoint_file(path)
    stored = checkpoint.get(CONFIG_KEY)
    if stored is None:
        log.warning("%s holds no dlkit run config: its settings cannot be compared with this run's.", path)
        return
    changes = config_changes(stored, run_config)
    if changes:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)
        raise ConfigError(
            f"Resuming {path} with settings that differ from the run that wrote it: {listed}. "
            "The checkpoint's state (weights, optimiser, schedule, data order) would override them or mix "
            "with them. Resume with the stored values, or start a new run. "
            f"Settings that may change on resume: {', '.join(RESUMABLE_KEYS)}."
        )
    old_epochs = (stored.get("trainer") or {}).get("max_epochs")
    new_epochs = (run_config.get("trainer") or {}).get("max_epochs")
    if old_epochs is not None and new_epochs is not None and new_epochs > old_epochs:
        _warn_if_schedule_ended(path, checkpoint, old_epochs, new_epochs)


def _warn_if_schedule_ended(path: Any, checkpoint: dict[str, Any], old_epochs: int, new_epochs: int) -> None:
    for state in checkpoint.get("lr_schedulers") or []:
        t_max, last = state.get("T_max"), state.get("last_epoch")
        lrs = state.get("_last_lr") or []
        base = state.get("base_lrs") or []
        if t_max is not None and last is not None and last >= t_max:
            warnings.warn(
                f"{path}: trainer.max_epochs goes from {old_epochs} to {new_epochs}, but the restored schedule "
                f"had reached its end (step {last} of T_max={t_max}, lr {lrs}): the extra epochs follow the "
                "cosine past its end, starting at lr ~0. For a longer schedule, start a new run with the "
                "longer trainer.max_epochs.",
                stacklevel=3,
            )
            return
        if lrs and base and max(lr / b for lr, b in zip(lrs, base) if b) < 1e-3:
            warnings.warn(
                f"{path}: trainer.max_epochs goes from {old_epochs} to {new_epochs}, but the restored "
                f"learning rate is {lrs} (from {base}): the extra epochs train at ~0.",
                stacklevel=3,
            )
            return
