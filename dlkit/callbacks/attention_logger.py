"""Where the decoder looks: attention heatmaps and translations of fixed examples in TensorBoard."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from matplotlib.figure import Figure
from torch import Tensor

from dlkit.callbacks.figures import figure_rgb, tensorboard_writer
from dlkit.models.decoding import greedy_decode

__all__ = ["AttentionHeatmapLogger", "attention_figure", "token_label"]

log = logging.getLogger(__name__)


def token_label(token: str) -> str:
    """A token as a tick label: a space shows as ``␣``, an empty token as ``∅``.

    Args:
        token: One source or output token.

    Example:
        >>> token_label(" "), token_label(""), token_label("7")
        ('␣', '∅', '7')
    """
    return token.replace(" ", "␣") if token else "∅"


def attention_figure(weights: Tensor, src_tokens: Sequence[str], out_tokens: Sequence[str], cell: int = 12) -> Figure:
    """Draw an attention matrix labelled with its tokens.

    Rows are the predicted (decoded) tokens top to bottom, columns the source tokens
    left to right; the colour bar gives the attention weight, and the title says which
    axis is which.

    Args:
        weights: ``(T, S)`` attention of each predicted token over the source.
        src_tokens: ``S`` source tokens (x-axis tick labels, see :func:`token_label`).
        out_tokens: ``T`` predicted tokens (y-axis tick labels).
        cell: Pixels per matrix entry (at 100 dpi); the tick font follows it.
            Defaults to 12.

    Returns:
        The figure; ``fig.axes[0]`` is the heatmap, ``fig.axes[1]`` the colour bar.

    Example:
        >>> fig = attention_figure(torch.softmax(torch.randn(2, 3), -1), list("abc"), ["x", "<eos>"])
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['x', '<eos>']
    """
    if weights.ndim != 2:
        raise ValueError(f"attention_figure expects a (T, S) matrix, got shape {tuple(weights.shape)}.")
    T, S = weights.shape
    if (T, S) != (len(out_tokens), len(src_tokens)):
        raise ValueError(
            f"attention_figure got a {T}x{S} matrix but {len(out_tokens)} predicted and "
            f"{len(src_tokens)} source tokens."
        )
    w = weights.detach().float().cpu().numpy()
    dpi, font = 100, max(5.0, min(10.0, 0.7 * cell))
    # Room around the matrix for the labels, the colour bar and a two-line title.
    label = max((len(t) for t in out_tokens), default=1) * font / 110
    fig = Figure(figsize=(max(4.5, S * cell / dpi + label + 1.8), max(2.5, T * cell / dpi + 1.9)), dpi=dpi,
                 layout="constrained")
    ax = fig.add_subplot()
    # aspect="auto": the figure's size already makes the cells about square.
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-12), aspect="auto",
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label="attention weight")
    ax.set_xticks(range(S), labels=[token_label(t) for t in src_tokens], fontsize=font,
                  rotation=90 if max(map(len, src_tokens), default=0) > 1 else 0)
    ax.set_yticks(range(T), labels=[token_label(t) for t in out_tokens], fontsize=font)
    ax.set_xlabel("source tokens")
    ax.set_ylabel("predicted tokens")
    ax.set_title("Attention weights\nrows = predicted tokens, columns = source tokens", fontsize=9)
    return fig


class AttentionHeatmapLogger(L.Callback):
    """Log attention heatmaps and a translation table for fixed validation examples to TensorBoard.

    Every ``every_n_epochs`` validation epochs (first at epoch 0), the first
    ``num_examples`` sources of the validation split are decoded greedily; for each,
    ``attention/<i>`` shows its attention as a labelled heatmap (rows: predicted tokens,
    columns: source tokens, a colour bar; see :func:`attention_figure`), and one text
    panel ``attention/examples``
    lists source, prediction and reference with the heatmaps' axis labels. Networks
    without attention (``attention_weights`` None) get the text panel only. Without
    a TensorBoard logger the callback does nothing.

    Needs a :class:`~dlkit.tasks.Seq2Seq` task (``net``, ``encode_sources``,
    ``max_decode_len``, vocabularies) and a DataModule with ``examples("val")``.

    Args:
        every_n_epochs: Log every this many epochs. Defaults to 1.
        num_examples: Validation examples shown. Defaults to 4.
        cell: Pixels per attention weight in the images (the tick labels' size
            follows it). Defaults to 12.

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
        writer = tensorboard_writer(trainer)
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
            writer.add_image(f"attention/{i}", image, global_step=step, dataformats="HWC")
        writer.add_text("attention/examples", panel["text"], global_step=step)

    @torch.no_grad()
    def render(self, task: Any, examples: list[tuple[str, str]]) -> dict[str, Any]:
        """Decode ``examples`` and build the images and the markdown text panel.

        Args:
            task: A :class:`~dlkit.tasks.Seq2Seq` (its ``net`` in eval mode here).
            examples: ``(source, reference)`` strings.

        Returns:
            ``{"figures": [Figure, ...] (one per example, empty without attention),
            "images": [(H, W, 3) uint8, ...] (the figures' pixels), "text": markdown,
            "predictions": [str, ...]}``.
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
        figures, rows, axes = [], [], []
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
                figures.append(attention_figure(weights[i, :n_out, :n_src], src_tokens, out_tokens, self.cell))
        text = _markdown(rows, axes, with_images=bool(figures))
        images = [figure_rgb(fig) for fig in figures]
        return {"figures": figures, "images": images, "text": text, "predictions": [r[1] for r in rows]}


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
