"""Crash-safe checkpoint files: write beside the target, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_torch_save"]


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that saves through :func:`atomic_torch_save`.

    Lightning's default writes through a temporary file in the system temp folder
    and moves it; across file systems that move is a copy, which a crash can cut
    short. dlkit's trainer config installs this plugin for local paths.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
        if "://" in str(path):  # remote storage: keep Lightning's fsspec path
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, path)
