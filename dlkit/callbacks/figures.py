"""Figures of diagnostic callbacks: matplotlib drawn off-screen, sent to TensorBoard and saved as PNG.

Figures are ``matplotlib.figure.Figure`` objects rendered by their own Agg canvas, so
nothing here touches pyplot or the global backend: a run on a machine without a display
(or inside a notebook using another backend) draws the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "class_names_for",
    "figure_dir",
    "figure_rgb",
    "image_grid_figure",
    "tensorboard_writer",
    "write_figure",
]


def tensorboard_writer(trainer: L.Trainer) -> Any:
    """The ``SummaryWriter`` of the trainer's first TensorBoard logger, or None without one."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def figure_dir(trainer: L.Trainer, dirpath: str | Path | None = None) -> Path:
    """Where PNG figures go: ``dirpath``, else ``<trainer.default_root_dir>/figures``.

    A ``dlkit-train`` run's ``default_root_dir`` is its run folder, so its figures land
    in ``<run>/figures``; from Python the trainer's default is the working directory.
    """
    return Path(dirpath) if dirpath is not None else Path(trainer.default_root_dir) / "figures"


def figure_rgb(fig: Figure) -> np.ndarray:
    """Render ``fig`` with an Agg canvas; returns its pixels as ``(H, W, 3)`` uint8."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 4) -> (H, W, 3)


def write_figure(
    trainer: L.Trainer, fig: Figure, tag: str, filename: str | None = None, dirpath: str | Path | None = None
) -> Path | None:
    """Send ``fig`` to TensorBoard's IMAGES tab as ``tag`` and save it as a PNG.

    Only the global-zero process writes (under DDP every rank computes the same figure).

    Args:
        trainer: The running trainer (its TensorBoard logger and run folder are used).
        fig: The figure.
        tag: TensorBoard image tag, logged at ``trainer.global_step``.
        filename: PNG file name in :func:`figure_dir`; None writes no PNG.
            Defaults to None.
        dirpath: Folder for the PNG (see :func:`figure_dir`). Defaults to None.

    Returns:
        The PNG's path, or None when none was written.
    """
    if not trainer.is_global_zero:
        return None
    writer = tensorboard_writer(trainer)
    if writer is not None:
        writer.add_image(tag, figure_rgb(fig), global_step=trainer.global_step, dataformats="HWC")
    if filename is None:
        return None
    path = figure_dir(trainer, dirpath) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def class_names_for(trainer: L.Trainer, num_classes: int, given: Sequence[str] | None = None) -> list[str]:
    """Names of classes ``0..num_classes-1`` for figure labels.

    Taken from ``given``, else the DataModule's ``class_names`` (or ``classes``), else
    the class indices as strings.

    Raises:
        ValueError: When the names found are not one per class.
    """
    source, names = "class_names", given
    if names is None:
        datamodule = getattr(trainer, "datamodule", None)
        for attr in ("class_names", "classes"):
            names = getattr(datamodule, attr, None)
            if names is not None:
                source = f"{type(datamodule).__name__}.{attr}"
                break
    if names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ValueError(f"{source} has {len(names)} names but the network predicts {num_classes} classes.")
    return names


def image_grid_figure(images: np.ndarray, titles: Sequence[str], title: str, cell_inches: float = 1.6) -> Figure:
    """A grid of images with one title each (for inputs such as misclassified examples).

    Each image is scaled to its own min..max for display, so standardised inputs show
    their contrast.

    Args:
        images: ``(N, C, H, W)`` with ``C`` 1 (grey) or 3 (RGB).
        titles: One caption per image.
        title: The figure's title.
        cell_inches: Side of one grid cell in inches. Defaults to 1.6.

    Returns:
        The figure (about ``sqrt(N)`` columns).

    Example:
        >>> fig = image_grid_figure(np.random.rand(5, 1, 8, 8), list("abcde"), "five")
        >>> len(fig.axes)
        6
    """
    N = len(images)
    cols = max(1, math.ceil(math.sqrt(N)))
    rows = max(1, math.ceil(N / cols))
    fig = Figure(figsize=(cols * cell_inches, rows * cell_inches + 0.6), layout="constrained")
    fig.suptitle(title, fontsize=10)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, caption in zip(axes, images, titles):
        img = np.asarray(image, dtype=np.float32)
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")  # (C, H, W) -> (H, W, C)
        ax.set_title(caption, fontsize=8)
    return fig
