"""Checkpoint files: crash-safe writes, finding the file a path means, rebuilding a run.

- :func:`atomic_torch_save` and :class:`AtomicCheckpointIO` (the Lightning plugin the
  trainer config installs) write beside the target, fsync, rename and fsync the folder,
  so a crash never leaves a truncated ``last.ckpt``; :func:`remove_stale_temp_files`
  clears what a killed write left.
- :func:`resolve_ckpt_path` turns ``ckpt_path=`` (a file or a run folder) into a file,
  or raises before any work starts.
- :func:`load_run` rebuilds the task a ``dlkit-train`` checkpoint describes, with its
  weights: ``dlkit-eval`` and ``Seq2Seq.from_checkpoint`` both go through it.

torch and Lightning are imported when first needed, so ``dlkit-train --help`` and
``--cfg job``, which import this module, answer without loading them.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from omegaconf import DictConfig, OmegaConf

from dlkit.config import ConfigError, check_targets, instantiate_stored

# AtomicCheckpointIO is defined on first access (see __getattr__ below).
__all__ = [  # noqa: F822
    "CONFIG_KEY",
    "TEMP_SUFFIX",
    "AtomicCheckpointIO",
    "atomic_torch_save",
    "load_checkpoint_file",
    "load_run",
    "remove_stale_temp_files",
    "resolve_ckpt_path",
]

# Checkpoint key of the run's composed config (written by dlkit-train).
CONFIG_KEY = "dlkit_config"
# Suffix of atomic_torch_save's temporary files.
TEMP_SUFFIX = ".tmp"

log = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that never leaves a truncated file at ``path``.

    The bytes go to a temporary file ``.<name>.<random>.tmp`` in the same directory (so
    the final ``os.replace`` is an atomic rename on POSIX and Windows), are flushed to
    disk, and only then replace ``path``; the directory is synced after the rename so
    the new name survives a power cut. A crash at any point leaves either the old file
    or the new one, never a mix; a temporary file left by a killed process is removed
    by :func:`remove_stale_temp_files` when the run starts again.

    Args:
        obj: Anything ``torch.save`` accepts.
        path: Destination file.

    Example:
        >>> atomic_torch_save({"w": torch.zeros(3)}, "ckpt/last.ckpt")
    """
    import torch

    with _replacing(Path(path)) as f:
        torch.save(obj, f)


@contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    # A temporary file beside `path`, synced, renamed over it, and the folder synced.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # A rename is durable only once its directory entry is on disk; Windows cannot
    # open a directory for syncing, and there the rename is durable by itself.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) a killed :func:`atomic_torch_save` left.

    Call it when a run starts, while it holds its run folder (:class:`RunFolderLock`):
    no other process is writing there, so every such file is a leftover. The
    checkpoints themselves are never touched.

    Args:
        folder: A checkpoint folder (``<run>/checkpoints``); a missing one is fine.

    Returns:
        The files removed.

    Example:
        >>> remove_stale_temp_files("logs/lenet_digits/runs/2026-11-22_10-00-00_000000/checkpoints")
        []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(f for f in folder.glob(f".*{TEMP_SUFFIX}") if f.is_file())
    for f in stale:
        f.unlink(missing_ok=True)
        log.warning("Removed %s, a checkpoint write cut short by a crash.", f)
    return stale


def _snapshot(obj: Any, tensor: type) -> Any:
    # The state as it is now: tensors copied (training changes them in place), dicts,
    # lists and tuples rebuilt; anything else is immutable in a checkpoint.
    if isinstance(obj, tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _snapshot(v, tensor) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not isinstance(obj, str):
        items = [_snapshot(v, tensor) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def _atomic_checkpoint_io_class() -> type:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning checkpoint I/O that writes like :func:`atomic_torch_save`, beside training.

        Lightning's default writes through a temporary file in the system temp folder
        and moves it; across file systems that move is a copy, which a crash can cut
        short. Here the checkpoint's tensors are copied at once (the state as it is
        when saved), and a background thread serialises it to a temporary file beside
        the target, fsyncs, renames and fsyncs the folder, while training goes on:
        writing and syncing cost a visible share of a small model's epoch. Writes and
        removals run one at a
        time in the order they were asked for, a failed write is raised by the next
        save, and :meth:`teardown` (the end of ``fit``/``test``) waits for them. A
        crash leaves the previous file of each name. dlkit's trainer config installs
        this plugin; remote paths (``s3://``...) keep Lightning's fsspec writer.

        Example:
            >>> trainer = L.Trainer(plugins=[AtomicCheckpointIO()])
        """

        def __init__(self) -> None:
            super().__init__()
            self._writer: ThreadPoolExecutor | None = None
            self._pending: list[Future[None]] = []

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            import torch

            if storage_options is not None:
                raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
            if "://" in str(path):
                super().save_checkpoint(checkpoint, path)
                return
            self._submit(atomic_torch_save, _snapshot(checkpoint, torch.Tensor), path)

        def remove_checkpoint(self, path: Any) -> None:
            # Queued: a file is removed only after the writes asked for before (its successor's).
            self._submit(super().remove_checkpoint, path)

        def flush(self) -> None:
            """Wait for the queued writes and removals; raise the first that failed."""
            pending, self._pending = self._pending, []
            for future in pending:
                future.result()

        def teardown(self) -> None:
            self.flush()
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

        def __getstate__(self) -> dict[str, Any]:
            # ddp_spawn pickles the trainer's plugins into each new process: a writer
            # thread and its futures belong to this process and are started again there.
            self.flush()
            return {k: v for k, v in self.__dict__.items() if k not in ("_writer", "_pending")}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state, _writer=None, _pending=[])

        def _submit(self, fn: Any, *args: Any) -> None:
            failed = [f for f in self._pending if f.done() and f.exception() is not None]
            if failed:
                self.flush()  # raises the write that failed
            self._pending = [f for f in self._pending if not f.done()]
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlkit-checkpoint")
            self._pending.append(self._writer.submit(fn, *args))

        def __getstate__(self) -> dict[str, Any]:
            # The writer thread stays with its process (spawned DDP workers pickle plugins).
            return {**self.__dict__, "_writer": None, "_pending": []}

        def load_checkpoint(
            self, path: Any, map_location: Any = None, weights_only: bool | None = None
        ) -> dict[str, Any]:
            """Read a checkpoint with ``weights_only=True``, whatever Lightning asks for.

            Lightning passes ``weights_only=None`` unless told, which torch turns into
            False under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``; resuming (``trainer.fit``
            or ``test`` with ``ckpt_path``) must not unpickle code from a file.

            Raises:
                ValueError: ``weights_only=False`` was asked for.
                dlkit.config.ConfigError: A refused or broken file (see
                    :func:`load_checkpoint_file`).
            """
            self.flush()  # a file still being written by this plugin is read once written
            if weights_only is False:
                raise ValueError(
                    f"{type(self).__name__} loads checkpoints with weights_only=True only; {path} was "
                    "asked for with weights_only=False, which could run code stored in the file."
                )
            if "://" in str(path):
                return super().load_checkpoint(path, map_location=map_location, weights_only=True)
            if not Path(path).is_file():
                raise FileNotFoundError(f"Checkpoint file not found: {path}")
            # Lightning's default keeps each tensor on the device it was saved from.
            return load_checkpoint_file(path, map_location=map_location or (lambda storage, loc: storage))

    # Found by pickle (ddp_spawn) as dlkit.checkpoint.AtomicCheckpointIO, through __getattr__ below.
    AtomicCheckpointIO.__module__ = __name__
    AtomicCheckpointIO.__qualname__ = "AtomicCheckpointIO"
    return AtomicCheckpointIO


def __getattr__(name: str) -> Any:
    # The plugin subclasses a Lightning class, so it is defined on first access (PEP 562)
    # to keep `import dlkit.checkpoint` free of torch and Lightning.
    if name == "AtomicCheckpointIO":
        cls = _atomic_checkpoint_io_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_ckpt_path(path: str | os.PathLike[str], prefer: str = "last") -> str:
    """Turn ``ckpt_path`` into a checkpoint file, or raise before training starts.

    Args:
        path: A ``.ckpt`` file, or a run folder (then ``checkpoints/last.ckpt`` when
            ``prefer="last"``, the best checkpoint when ``prefer="best"``).
        prefer: Which checkpoint of a run folder to use: ``"last"`` (to resume) or
            ``"best"`` (to evaluate). Defaults to ``"last"``.

    Returns:
        The checkpoint file's path.

    Raises:
        ConfigError: When nothing usable exists at ``path``, or ``prefer`` is unknown.

    Example:
        >>> resolve_ckpt_path("logs/lenet_digits/runs/2026-11-22_10-00-00")
        'logs/lenet_digits/runs/2026-11-22_10-00-00/checkpoints/last.ckpt'
    """
    if prefer not in ("last", "best"):
        raise ConfigError(f"prefer must be 'last' or 'best', got {prefer!r}.")
    p = Path(path).expanduser()
    if p.is_dir():
        ckpt_dir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        last = ckpt_dir / "last.ckpt"
        others = sorted(f for f in ckpt_dir.glob("*.ckpt") if f.name != "last.ckpt" and not f.name.startswith("."))
        order = [last, *others] if prefer == "last" else [*others, last]
        for candidate in order:
            if candidate.is_file():
                return str(candidate)
        raise ConfigError(f"ckpt_path={str(path)!r} is a directory without checkpoints (looked in {ckpt_dir}).")
    if not p.is_file():
        raise ConfigError(
            f"ckpt_path={str(path)!r} does not exist. Give a .ckpt file or a run directory "
            "such as logs/<task_name>/runs/<timestamp>."
        )
    return str(p)


def load_run(
    path: str | os.PathLike[str],
    prefer: str = "best",
    map_location: Any = "cpu",
    expect: type | None = None,
) -> tuple[Any, DictConfig]:
    """Rebuild the task a ``dlkit-train`` checkpoint describes, with its trained weights.

    The checkpoint holds the run's composed config: the network, loss and task are
    instantiated from it, the state dict is loaded strictly (a mismatch is an error,
    not a warning) and the task's ``on_load_checkpoint`` hook reads whatever else it
    stored (a seq2seq task's vocabularies). The file is read by
    :func:`load_checkpoint_file` (``torch.load(weights_only=True)``), and every
    ``_target_`` of the stored config passes :func:`dlkit.config.check_targets` before
    anything is built, so a crafted file can neither unpickle nor instantiate code.

    Args:
        path: A ``.ckpt`` file or a run folder.
        prefer: Which checkpoint of a run folder: ``"best"`` or ``"last"``.
            Defaults to ``"best"``.
        map_location: Where tensors are loaded. Defaults to ``"cpu"``.
        expect: A task class the run must hold (``Seq2Seq``); None accepts any.

    Returns:
        ``(task, run_config)``: the task (its ``run_config`` set, in training mode as
        built) and the stored run config.

    Raises:
        ConfigError: No checkpoint at ``path``, an unreadable or refused file, one
            without a dlkit run config, or a stored target that may not be built.
        ValueError: The run's task is not an ``expect``.

    Example:
        >>> task, run = load_run("logs/lenet_digits/runs/2026-11-22_10-00-00")
        >>> run.model.name
        'lenet5'
    """
    ckpt_path = resolve_ckpt_path(path, prefer=prefer)
    checkpoint = load_checkpoint_file(ckpt_path, map_location=map_location)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CONFIG_KEY), dict):
        raise ConfigError(
            f"{ckpt_path} holds no dlkit run config (it was not written by dlkit-train); "
            "rebuild the network and task in Python and load its state_dict instead."
        )
    # The stored config is data from whoever wrote the file: every target in it is
    # checked before anything is imported or built (the data node too, which callers build).
    where = f"the config stored in {ckpt_path}"
    check_targets(checkpoint[CONFIG_KEY], where)
    run = OmegaConf.create(checkpoint[CONFIG_KEY])
    net = instantiate_stored(run.model, "model", where)
    loss = instantiate_stored(run.loss, "loss", where) if run.get("loss") else None
    task = instantiate_stored(run.task, "task", where, net=net, loss=loss)
    if expect is not None and not isinstance(task, expect):
        raise ValueError(
            f"{ckpt_path} holds a {type(task).__name__} run: it was not written by dlkit-train with a "
            f"{expect.__name__} task. Load it with its own task class, or with dlkit-eval."
        )
    task.load_state_dict(checkpoint["state_dict"])
    task.on_load_checkpoint(checkpoint)
    task.run_config = checkpoint[CONFIG_KEY]
    return task, run


def load_checkpoint_file(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with errors that name the file and the problem.

    Weights-only unpickling builds tensors and plain containers only, so opening a
    file cannot run code (a pickle ``__reduce__`` payload is refused, not executed).
    Every checkpoint dlkit opens goes through here: :func:`load_run`, the pretrained
    weights loader, and Lightning's own loads through :class:`AtomicCheckpointIO`.

    Args:
        path: The file.
        map_location: Where tensors are loaded. Defaults to ``"cpu"``.

    Returns:
        What the file holds (a dict for a checkpoint).

    Raises:
        ConfigError: The file is empty, truncated or not a torch file, or holds
            Python objects that weights-only loading refuses.

    Example:
        >>> load_checkpoint_file("logs/lenet_digits/runs/2026-11-22_10-00-00/checkpoints/last.ckpt")["epoch"]
        4
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, RuntimeError) as err:
        text = str(err)
        found = re.search(r"Unsupported (global: GLOBAL \S+|operand \S+)|\S+ is not an allowed global", text)
        if found or "Weights only load failed" in text:
            reason = found.group(0) if found else text.strip().splitlines()[-1][:200]
            raise ConfigError(
                f"{path} was refused: it holds Python objects that torch.load(weights_only=True) does not "
                f"unpickle ({reason}), and unpickling them could run code. dlkit opens checkpoints "
                "as tensors and plain values only. If you wrote this file yourself and trust it, re-save "
                "its tensors: torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pt')."
            ) from None
        if isinstance(err, RuntimeError) and "CUDA" in text:
            raise  # a device problem (map_location), not a broken file
        size = os.path.getsize(path) if isinstance(path, (str, os.PathLike)) else None
        what = "is empty (0 bytes)" if size == 0 else "is truncated, corrupted or not a torch checkpoint"
        detail = text.strip().splitlines()[-1][:200] if text.strip() else type(err).__name__
        raise ConfigError(
            f"{path} {what} ({type(err).__name__}: {detail}). A run killed while writing leaves its previous "
            "checkpoint intact: use that one (ckpt_path=<run folder> picks checkpoints/last.ckpt)."
        ) from None

