"""Where the decoder looks: attention heatmaps and translations of fixed examples in TensorBoard."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import Tensor

from dlkit.models.decoding import greedy_decode

__all__ = ["AttentionHeatmapLogger", "attention_image"]

log = logging.getLogger(__name__)


def attention_image(weights: Tensor, cell: int = 12) -> Tensor:
    """Render an attention matrix as an RGB heatmap (no plotting library needed).

    Rows are target (decoded) tokens top to bottom, columns source tokens left to
    right; each weight becomes a ``cell x cell`` square coloured black -> red ->
    yellow -> white ("hot" colour map) by its size relative to the largest weight.

    Args:
        weights: ``(T, S)`` attention of each target step over the source.
        cell: Pixels per matrix entry. Defaults to 12.

    Returns:
        ``(3, T * cell, S * cell)`` float image in ``[0, 1]`` (CHW, for ``add_image``).

    Example:
        >>> attention_image(torch.softmax(torch.randn(10, 17), -1)).shape
        torch.Size([3, 120, 204])
    """
    if weights.ndim != 2:
        raise ValueError(f"attention_image expects a (T, S) matrix, got shape {tuple(weights.shape)}.")
    w = weights.detach().float().cpu().clamp_min(0)
    w = w / w.max().clamp_min(1e-12)
    # "hot": red rises first, then green, then blue.
    rgb = torch.stack([(3 * w).clamp(0, 1), (3 * w - 1).clamp(0, 1), (3 * w - 2).clamp(0, 1)])  # (3, T, S)
    return rgb.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)  # (3, T*cell, S*cell)


class AttentionHeatmapLogger(L.Callback):
    """Log attention heatmaps and a translation table for fixed validation examples to TensorBoard.

    Every ``every_n_epochs`` validation epochs (first at epoch 0), the first
    ``num_examples`` sources of the validation split are decoded greedily; for each,
    ``attention/<i>`` shows its attention (rows: predicted tokens, columns: source
    tokens; see :func:`attention_image`), and one text panel ``attention/examples``
    lists source, prediction and reference with the heatmaps' axis labels. Networks
    without attention (``attention_weights`` None) get the text panel only. Without
    a TensorBoard logger the callback does nothing.

    Needs a :class:`~dlkit.tasks.Seq2Seq` task (``net``, ``encode_sources``,
    ``max_decode_len``, vocabularies) and a DataModule with ``examples("val")``.

    Args:
        every_n_epochs: Log every this many epochs. Defaults to 1.
        num_examples: Validation examples shown. Defaults to 4.
        cell: Pixels per attention weight in the images. Defaults to 12.

    Example:
        >>> task.fit(dm, epochs=10, logger=TensorBoardLogger("logs"),
        ...          callbacks=[AttentionHeatmapLogger(every_n_epochs=2)])
    """

    def __init__(self, every_n_epochs: int = 1, num_examples: int = 4, cell: int = 12) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("num_examples", num_examples), ("cell", cell)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AttentionHeatmapLogger.{name} must be an integer >= 1, got {value!r}.")
        self.every_n_epochs, self.num_examples, self.cell = every_n_epochs, num_examples, cell

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        writer = _tensorboard_writer(trainer)
        if writer is None:
            log.debug("AttentionHeatmapLogger: no TensorBoard logger, nothing logged.")
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "examples") or getattr(pl_module, "tgt_vocab", None) is None:
            log.debug("AttentionHeatmapLogger: needs a seq2seq DataModule and a Seq2Seq task; nothing logged.")
            return
        examples = datamodule.examples("val")[: self.num_examples]
        step = trainer.global_step
        panel = self.render(pl_module, examples)
        for i, image in enumerate(panel["images"]):
            writer.add_image(f"attention/{i}", image, global_step=step, dataformats="CHW")
        writer.add_text("attention/examples", panel["text"], global_step=step)

    @torch.no_grad()
    def render(self, task: Any, examples: list[tuple[str, str]]) -> dict[str, Any]:
        """Decode ``examples`` and build the images and the markdown text panel.

        Args:
            task: A :class:`~dlkit.tasks.Seq2Seq` (its ``net`` in eval mode here).
            examples: ``(source, reference)`` strings.

        Returns:
            ``{"images": [(3, H, W), ...] (one per example, empty without attention),
            "text": markdown, "predictions": [str, ...]}``.
        """
        net = task.net
        was_training = net.training
        net.eval()
        try:
            batch = task.encode_sources([s for s, _ in examples])
            src, src_lengths = batch["src"], batch["src_lengths"]
            max_len = task.max_decode_len or 100
            tokens, _ = greedy_decode(net, src, src_lengths, max_len=max_len)  # (N, L)
            weights = getattr(net, "attention_weights", None)  # (N, L, S) or None
        finally:
            net.train(was_training)
        src_vocab, tgt_vocab = task.src_vocab, task.tgt_vocab
        images, rows, axes = [], [], []
        for i, (source, reference) in enumerate(examples):
            ids = tokens[i].tolist()
            # Rows of the heatmap: decoded tokens up to and including <eos>.
            n_out = ids.index(net.eos_id) + 1 if net.eos_id in ids else len(ids)
            n_src = int(src_lengths[i])
            prediction = tgt_vocab.decode(ids)
            rows.append((source, prediction, reference, "yes" if prediction == reference else "no"))
            src_tokens = [src_vocab.decode([t], strip_special=False) for t in src[i, :n_src].tolist()]
            out_tokens = [tgt_vocab.decode([t], strip_special=False) for t in ids[:n_out]]
            axes.append((src_tokens, out_tokens))
            if weights is not None and weights.shape[0] == len(examples):
                images.append(attention_image(weights[i, :n_out, :n_src], self.cell))
        text = _markdown(rows, axes, with_images=bool(images))
        return {"images": images, "text": text, "predictions": [r[1] for r in rows]}


def _tensorboard_writer(trainer: L.Trainer) -> Any:
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _cell(text: str) -> str:
    """Markdown-table-safe text: pipes escaped, visible spaces kept."""
    return text.replace("|", "\\|") if text else "∅"


def _markdown(rows: list[tuple[str, str, str, str]], axes: list[tuple[list[str], list[str]]], with_images: bool) -> str:
    lines = ["| # | source | prediction | reference | exact |", "|---|---|---|---|---|"]
    for i, (source, prediction, reference, ok) in enumerate(rows):
        lines.append(f"| {i} | {_cell(source)} | {_cell(prediction)} | {_cell(reference)} | {ok} |")
    if with_images:
        lines += ["", "Heatmap axes (`attention/<i>`): columns = source tokens, rows = predicted tokens.", ""]
        for i, (src_tokens, out_tokens) in enumerate(axes):
            lines.append(f"- {i}: columns `{' · '.join(src_tokens)}`; rows `{' · '.join(out_tokens)}`")
    return "\n".join(lines)
