"""The validation images the classifier gets most wrong, with their true and predicted labels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch import Tensor

from dlkit.callbacks.figures import class_names_for, image_grid_figure, write_figure
from dlkit.callbacks.validation_outputs import ValidationOutputs, class_probabilities

__all__ = ["Misclassified"]

log = logging.getLogger(__name__)


class Misclassified(ValidationOutputs):
    """Log a grid of the ``k`` worst misclassified validation images to TensorBoard and as a PNG.

    "Worst" means the lowest probability given to the true class (the highest
    cross-entropy loss), over the whole validation run (epochs ``N-1, 2N-1, ...``
    0-based, and the last one). Each image is captioned ``true <name>`` /
    ``pred <name> <probability>``; TensorBoard's IMAGES tab gets ``misclassified``
    (needs a TensorBoard logger) and ``<run>/figures/misclassified_epoch<EEE>.png`` is
    written (``dirpath`` changes the folder). Only ``k`` images are kept in memory; the
    network's outputs are those the task already computed (see
    :class:`~dlkit.callbacks.validation_outputs.ValidationOutputs`). Under DDP the grid
    shows the worst of the global-zero process's share of the validation set.

    Inputs must be images ``(B, C, H, W)`` with 1 or 3 channels; for other inputs
    (flattened vectors, sequences) the callback warns once and draws nothing. Each image
    is scaled to its own range for display. Class names as in
    :class:`~dlkit.callbacks.ConfusionMatrix`.

    Args:
        k: Images shown. Defaults to 16.
        every_n_epochs: Draw every this many epochs. Defaults to 1.
        class_names: Names of the classes, overriding the DataModule's. Defaults to None.
        dirpath: Folder for the PNGs. Defaults to None (``<default_root_dir>/figures``).

    Attributes:
        worst: The last drawn examples, worst first: dicts with ``index`` (position in
            the validation order), ``true``, ``pred`` (class indices), ``p_true`` and
            ``p_pred`` (their probabilities). Empty before, or when nothing was wrong.
        figure: The last figure drawn (a ``matplotlib.figure.Figure``), or None.
        png_path: The last PNG written, or None.

    Example:
        >>> clf.fit(DigitsDataModule(), epochs=5, logger=TensorBoardLogger("logs"),
        ...         callbacks=[Misclassified(k=9)])
    """

    def __init__(
        self,
        k: int = 16,
        every_n_epochs: int = 1,
        class_names: Sequence[str] | None = None,
        dirpath: str | Path | None = None,
    ) -> None:
        super().__init__(every_n_epochs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Misclassified.k must be an integer >= 1, got {k!r}.")
        self.k = k
        self.class_names = list(class_names) if class_names is not None else None
        self.dirpath = dirpath
        self.worst: list[dict[str, float | int]] = []
        self.figure: Figure | None = None
        self.png_path: Path | None = None
        self._warned = False
        self._reset()

    def _reset(self) -> None:
        self._seen = 0
        self._num_classes = 0
        self._images: Tensor | None = None  # (n <= k, C, H, W), worst first
        self._rows = torch.empty(0, 5, dtype=torch.float64)  # index, true, pred, p_true, p_pred

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def update(self, trainer: L.Trainer, pl_module: L.LightningModule, x: Tensor, logits: Tensor, y: Tensor) -> None:
        offset, B = self._seen, len(y)
        self._seen += B
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            if not self._warned:
                self._warned = True
                rank_zero_warn(
                    f"Misclassified draws image inputs (B, C, H, W) with 1 or 3 channels; the validation "
                    f"inputs have shape {tuple(x.shape)}, so no misclassified grid is drawn."
                )
            return
        probs = class_probabilities(logits)  # (B, C)
        self._num_classes = probs.shape[1]
        y = y.to(probs.device)
        p_pred, pred = probs.max(dim=1)  # (B,), (B,)
        p_true = probs.gather(1, y[:, None]).squeeze(1)  # (B,)
        wrong = (pred != y).nonzero().squeeze(1)  # (n,)
        if not len(wrong):
            return
        index = torch.arange(offset, offset + B, device=probs.device)
        rows = torch.stack([index, y, pred, p_true, p_pred], dim=1)[wrong].double().cpu()  # (n, 5)
        images = x[wrong.to(x.device)].detach().float().cpu()  # (n, C, H, W)
        if self._images is not None:
            rows, images = torch.cat([self._rows, rows]), torch.cat([self._images, images])
        keep = rows[:, 3].argsort(stable=True)[: self.k]  # lowest true-class probability first
        self._rows, self._images = rows[keep], images[keep]

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        images, rows, num_classes = self._images, self._rows, self._num_classes
        self._reset()
        self.worst = [
            {"index": int(r[0]), "true": int(r[1]), "pred": int(r[2]), "p_true": float(r[3]), "p_pred": float(r[4])}
            for r in rows.tolist()
        ]
        if images is None:
            log.debug("Misclassified: no misclassified image in this validation run; nothing drawn.")
            return
        names = class_names_for(trainer, num_classes, self.class_names)
        captions = [f"true {names[w['true']]}\npred {names[w['pred']]} {w['p_pred']:.2f}" for w in self.worst]
        epoch = trainer.current_epoch
        title = f"Worst misclassified validation inputs, epoch {epoch} (lowest true-class probability first)"
        self.figure = fig = image_grid_figure(images.numpy(), captions, title)
        self.png_path = write_figure(trainer, fig, "misclassified", f"misclassified_epoch{epoch:03d}.png", self.dirpath)
