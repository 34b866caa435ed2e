"""Checkpoint files: crash-safe writes, finding the file a path means, rebuilding a run.

- :func:`atomic_torch_save` and :class:`AtomicCheckpointIO` (the Lightning plugin the
  trainer config installs) write beside the target, fsync, then rename, so a crash never
  leaves a truncated ``last.ckpt``.
- :func:`resolve_ckpt_path` turns ``ckpt_path=`` (a file or a run folder) into a file,
  or raises before any work starts.
- :func:`load_run` rebuilds the task a ``dlkit-train`` checkpoint describes, with its
  weights: ``dlkit-eval`` and ``Seq2Seq.from_checkpoint`` both go through it.

torch and Lightning are imported when first needed, so ``dlkit-train --help`` and
``--cfg job``, which import this module, answer without loading them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlkit.config import ConfigError, instantiate_node

# AtomicCheckpointIO is defined on first access (see __getattr__ below).
__all__ = ["CONFIG_KEY", "AtomicCheckpointIO", "atomic_torch_save", "load_run", "resolve_ckpt_path"]  # noqa: F822

# Checkpoint key of the run's composed config (written by dlkit-train).
CONFIG_KEY = "dlkit_config"


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that never leaves a truncated file at ``path``.

    The bytes go to a temporary file in the same directory (so the final
    ``os.replace`` is an atomic rename on POSIX and Windows), are flushed to disk,
    and only then replace ``path``. A crash at any point leaves either the old
    file or the new one, never a mix.

    Args:
        obj: Anything ``torch.save`` accepts.
        path: Destination file.

    Example:
        >>> atomic_torch_save({"w": torch.zeros(3)}, "ckpt/last.ckpt")
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_checkpoint_io_class() -> type:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning checkpoint I/O that saves through :func:`atomic_torch_save`.

        Lightning's default writes through a temporary file in the system temp folder
        and moves it; across file systems that move is a copy, which a crash can cut
        short. dlkit's trainer config installs this plugin; remote paths (``s3://``...)
        keep Lightning's fsspec writer.

        Example:
            >>> trainer = L.Trainer(plugins=[AtomicCheckpointIO()])
        """

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            if storage_options is not None:
                raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
            if "://" in str(path):
                super().save_checkpoint(checkpoint, path)
                return
            atomic_torch_save(checkpoint, path)

    AtomicCheckpointIO.__module__ = __name__
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
    stored (a seq2seq task's vocabularies). The file is read with
    ``torch.load(weights_only=True)``.

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
        ConfigError: No checkpoint at ``path``, or one without a dlkit run config.
        ValueError: The run's task is not an ``expect``.

    Example:
        >>> task, run = load_run("logs/lenet_digits/runs/2026-11-22_10-00-00")
        >>> run.model.name
        'lenet5'
    """
    import torch

    ckpt_path = resolve_ckpt_path(path, prefer=prefer)
    checkpoint = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    if CONFIG_KEY not in checkpoint:
        raise ConfigError(
            f"{ckpt_path} holds no dlkit run config (it was not written by dlkit-train); "
            "rebuild the network and task in Python and load its state_dict instead."
        )
    run = OmegaConf.create(checkpoint[CONFIG_KEY])
    net = instantiate_node(run.model, "model")
    loss = instantiate_node(run.loss, "loss") if run.get("loss") else None
    task = instantiate_node(run.task, "task", net=net, loss=loss)
    if expect is not None and not isinstance(task, expect):
        raise ValueError(
            f"{ckpt_path} holds a {type(task).__name__} run: it was not written by dlkit-train with a "
            f"{expect.__name__} task. Load it with its own task class, or with dlkit-eval."
        )
    task.load_state_dict(checkpoint["state_dict"])
    task.on_load_checkpoint(checkpoint)
    task.run_config = checkpoint[CONFIG_KEY]
    return task, run
