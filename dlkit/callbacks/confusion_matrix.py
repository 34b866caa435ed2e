"""Which classes are confused with which: a labelled confusion matrix of the validation set."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from dlkit.callbacks.figures import class_names_for, write_figure
from dlkit.callbacks.validation_outputs import ValidationOutputs, class_probabilities

__all__ = ["ConfusionMatrix", "confusion_matrix_figure"]

log = logging.getLogger(__name__)

NORMALIZE = (None, "true", "pred", "all")
# Cells are annotated with their value up to this many classes (beyond, the text is unreadable).
MAX_ANNOTATED_CLASSES = 30


def normalized(matrix: Tensor, normalize: str | None) -> Tensor:
    """``matrix`` of counts divided by its rows (``"true"``), columns (``"pred"``) or total
    (``"all"``), as torchmetrics' ``normalize``; empty rows or columns give 0."""
    m = matrix.double()
    if normalize == "true":
        m = m / m.sum(dim=1, keepdim=True)
    elif normalize == "pred":
        m = m / m.sum(dim=0, keepdim=True)
    elif normalize == "all":
        m = m / m.sum()
    return m.nan_to_num(0.0)


def confusion_matrix_figure(matrix: Tensor, class_names: Sequence[str], title: str, normalize: str | None = None) -> Figure:
    """Draw a confusion matrix: true classes down the rows, predicted classes across.

    Args:
        matrix: ``(C, C)`` counts, ``matrix[i, j]`` = samples of class ``i`` predicted ``j``.
        class_names: ``C`` tick labels.
        title: The figure's title.
        normalize: None (counts), ``"true"``, ``"pred"`` or ``"all"`` (see
            :class:`ConfusionMatrix`). Defaults to None.

    Returns:
        The figure; its axes' tick labels are ``class_names``.

    Example:
        >>> fig = confusion_matrix_figure(torch.tensor([[5, 1], [0, 4]]), ["cat", "dog"], "val")
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['cat', 'dog']
    """
    C = matrix.shape[0]
    values = normalized(matrix, normalize).cpu().numpy()
    side = min(max(4.0, 0.45 * C + 2.0), 24.0)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction" if normalize else "samples")
    ticks = np.arange(C)
    ax.set_xticks(ticks, labels=list(class_names), rotation=45 if max(map(len, class_names)) > 2 else 0,
                  ha="right" if max(map(len, class_names)) > 2 else "center")
    ax.set_yticks(ticks, labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if C <= MAX_ANNOTATED_CLASSES:
        fontsize = 9 if C <= 12 else 6
        for i in range(C):
            for j in range(C):
                v = values[i, j]
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                colour = "white" if v > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)
    return fig


class ConfusionMatrix(ValidationOutputs):
    """Log a labelled confusion matrix of the validation set to TensorBoard and as a PNG.

    At the end of validation (epochs ``N-1, 2N-1, ...`` 0-based, and the last one), the
    validation predictions (arg-max class, or logit > 0 for a one-logit binary
    classifier) are tallied against the targets with torchmetrics'
    ``MulticlassConfusionMatrix`` (summed across processes under DDP) and drawn with
    true classes down the rows and predicted classes across: TensorBoard's IMAGES tab
    gets ``confusion_matrix`` (needs a TensorBoard logger), and
    ``<run>/figures/confusion_matrix_epoch<EEE>.png`` is written (``dirpath`` changes
    the folder). The predictions are the outputs the task already computed (see
    :class:`~dlkit.callbacks.validation_outputs.ValidationOutputs`: no extra forward
    pass for dlkit's tasks). The last counts are kept in :attr:`matrix`.

    Class names come from ``class_names``, else the DataModule's ``class_names`` (or
    ``classes``), else ``0..C-1``.

    Args:
        every_n_epochs: Draw every this many epochs. Defaults to 1.
        normalize: Cell values shown: None (counts), ``"true"`` (each row sums to 1:
            recall per class on the diagonal), ``"pred"`` (columns sum to 1:
            precision) or ``"all"``. Defaults to None.
        class_names: Names of the classes, overriding the DataModule's. Defaults to None.
        dirpath: Folder for the PNGs. Defaults to None (``<default_root_dir>/figures``).

    Attributes:
        matrix: ``(C, C)`` int64 counts of the last drawn validation run (rows: true
            class, columns: predicted), summing to the validation set size; None before.
        figure: The last figure drawn (a ``matplotlib.figure.Figure``), or None.
        png_path: The last PNG written, or None.

    Example:
        >>> cm = ConfusionMatrix(normalize="true")
        >>> clf.fit(DigitsDataModule(), epochs=5, logger=TensorBoardLogger("logs"), callbacks=[cm])
        >>> cm.matrix.sum()  # validation samples
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        normalize: str | None = None,
        class_names: Sequence[str] | None = None,
        dirpath: str | Path | None = None,
    ) -> None:
        super().__init__(every_n_epochs)
        if normalize not in NORMALIZE:
            raise ValueError(f"ConfusionMatrix.normalize must be one of {list(NORMALIZE)}, got {normalize!r}.")
        self.normalize = normalize
        self.class_names = list(class_names) if class_names is not None else None
        self.dirpath = dirpath
        self.matrix: Tensor | None = None
        self.figure: Figure | None = None
        self.png_path: Path | None = None
        self._metric: MulticlassConfusionMatrix | None = None

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._metric = None

    def update(self, trainer: L.Trainer, pl_module: L.LightningModule, x: Tensor, logits: Tensor, y: Tensor) -> None:
        probs = class_probabilities(logits)  # (B, C)
        if self._metric is None:
            C = probs.shape[1]
            self._metric = MulticlassConfusionMatrix(num_classes=C, normalize="none").to(probs.device)
        self._metric.update(probs.argmax(dim=1), y.to(probs.device))

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._metric is None:
            log.debug("ConfusionMatrix: no classifier outputs in this validation run; nothing drawn.")
            return
        self.matrix = self._metric.compute().long().cpu()  # (C, C)
        self._metric = None
        C = self.matrix.shape[0]
        names = class_names_for(trainer, C, self.class_names)
        epoch = trainer.current_epoch
        shown = {None: "counts", "true": "normalised over true class", "pred": "normalised over predicted class",
                 "all": "normalised over all"}[self.normalize]
        title = f"Validation confusion matrix, epoch {epoch} ({int(self.matrix.sum())} samples, {shown})"
        self.figure = fig = confusion_matrix_figure(self.matrix, names, title, self.normalize)
        self.png_path = write_figure(trainer, fig, "confusion_matrix", f"confusion_matrix_epoch{epoch:03d}.png",
                                     self.dirpath)
