"""Sequence to sequence: teacher-forced training, decoded validation, strings in and out.

:class:`Seq2Seq` trains any encoder–decoder with the contract of
:mod:`dlkit.models.encoder_decoder` (``forward/start/step/select_state``) on dict batches
``{"src", "src_lengths", "tgt"}`` (see :mod:`dlkit.data.seq2seq`). Training feeds the
reference prefix to the decoder (teacher forcing, with a ratio a callback may lower);
validation and test score the teacher-forced loss and next-token accuracy and also
*decode* every source (greedy or beam search, :mod:`dlkit.models.decoding`) for the
exact-match rate and BLEU (:mod:`dlkit.tasks.metrics`). The vocabularies travel in the
checkpoint, so a reloaded task translates raw strings::

    task = Seq2Seq.from_checkpoint("logs/seq2seq_bahdanau_dates/runs/<timestamp>")
    task.predict(["3rd of March 1998", "Tue 03/03/98"])   # ['1998-03-03', '1998-03-03']
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn as nn
from torch import Tensor

from dlkit.checkpoint import load_run
from dlkit.config import check_targets, instantiate_stored
from dlkit.data import seq2seq as seq2seq_data
from dlkit.data.tensor import is_loader
from dlkit.data.text import Vocab
from dlkit.losses import CrossEntropyLoss
from dlkit.models.decoding import generate
from dlkit.tasks.base import SINGLE_OUTPUT, STAGES, Task
from dlkit.tasks.metrics import (
    DECODED_METRICS,
    SEQ2SEQ_METRICS,
    build_metric,
    canonical_name,
    exact_match,
    metric_mode,
    sequence_bleu_strings,
    token_hits,
)
from dlkit.tasks.summary import ModelSummary, summarize

__all__ = ["CKPT_KEY", "Seq2Seq", "sequence_cross_entropy"]

log = logging.getLogger(__name__)

# Checkpoint key of what predict() needs besides the weights.
CKPT_KEY = "dlkit_seq2seq"
# Decoding length when neither the config nor the data gives one.
FALLBACK_DECODE_LEN = 100


# A loss, not a metric: it stays beside the task that masks padding the same way.
def sequence_cross_entropy(
    logits: Tensor, target: Tensor, pad_id: int = 0, label_smoothing: float = 0.0
) -> Tensor:
    """Cross-entropy averaged over the non-padding target tokens of a batch.

    Args:
        logits: ``(B, T, V)`` scores of every position.
        target: ``(B, T)`` ids; positions holding ``pad_id`` do not count.
        pad_id: The padding id. Defaults to 0.
        label_smoothing: Share of the target mass spread over all tokens. Defaults to 0.

    Returns:
        The mean loss per real token (a scalar).

    Example:
        >>> sequence_cross_entropy(torch.randn(2, 5, 12), torch.tensor([[4, 5, 2, 0, 0], [6, 2, 0, 0, 0]]))
    """
    B, T, V = logits.shape
    return nn.functional.cross_entropy(
        logits.reshape(B * T, V),  # (B, T, V) -> (B*T, V)
        target.reshape(B * T),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )


# ------------------------------------------------------------------ the task
class Seq2Seq(Task):
    """Train an encoder–decoder on ``{"src", "src_lengths", "tgt"}`` batches; translate strings.

    Logs ``train/loss``, ``train/token_acc``; ``val/loss``, ``val/token_acc``
    (teacher-forced next-token accuracy on non-padding tokens), ``val/exact_match``
    (decoded sequence equals the reference), ``val/bleu`` and their ``*_best``; the same
    for ``test/``. The loss is cross-entropy averaged over the non-padding target
    tokens of a batch.

    BLEU is torchmetrics' ``BLEUScore`` with ``n_gram=4`` and add-one smoothing of the
    n-gram precisions (Lin & Och, 2004), computed on the target vocabulary's tokens
    (characters for the date data), so a short sequence with no matching 4-gram
    does not score 0.

    Args:
        net: An encoder–decoder (``dlkit.models.EncoderDecoder``): ``net(src,
            src_lengths, tgt_in, teacher_forcing_ratio)`` gives ``(B, T, V)`` logits, and
            ``start/step/select_state`` decode; ``pad_id/bos_id/eos_id`` attributes.
        teacher_forcing: Probability of feeding the reference token (rather than the
            model's own previous prediction) to the decoder while training; a callback
            (:class:`~dlkit.callbacks.TeacherForcingSchedule`) may change it every
            epoch. Recurrent models only; the transformer is always teacher-forced.
            Defaults to 1.
        label_smoothing: Label smoothing of the default loss. Defaults to 0.
        beam_size: Beam width when decoding in validation, test and ``predict``; 1
            decodes greedily. Defaults to 1.
        length_penalty: GNMT ``alpha`` of beam search: hypotheses are ranked by
            ``sum log p / ((5 + length) / 6) ** alpha``. Defaults to 0.6.
        max_decode_len: Most tokens to generate (``<eos>`` included). Defaults to
            1.5 x the longest training target (in tokens) + 1, from the data.
        monitor: Defaults to ``"val/exact_match"``. monitor_mode: Defaults to ``"max"``.
        **kwargs: See :class:`~dlkit.tasks.base.Task`: ``optimizer``, ``scheduler``,
            ``loss`` (any classification loss, applied to the non-padding tokens'
            ``(N, V)`` logits and ``(N,)`` targets; default cross-entropy with
            ``label_smoothing``), ``metrics`` (a subset of ``token_acc``,
            ``exact_match``, ``bleu``; the last two need decoding, so leaving them out
            makes validation faster), ``l1``, ``l2``...

    Call arguments:
        src: ``(B, S)`` source ids. src_lengths: ``(B,)``. tgt_in: ``(B, T)`` decoder
        input ids (``tgt[:, :-1]``). Returns ``(B, T, V)`` logits.

    Example:
        >>> dm = DateTranslationDataModule(num_train=20000)
        >>> net = create_model("seq2seq_bahdanau", **dm.model_hints())
        >>> task = Seq2Seq(net).compile(optimizer="adam", lr=3e-3)
        >>> history = task.fit(dm, epochs=5)
        >>> task.predict(["3rd of March 1998"])
        ['1998-03-03']
    """

    default_metrics = SEQ2SEQ_METRICS

    def __init__(
        self,
        net: nn.Module,
        teacher_forcing: float = 1.0,
        label_smoothing: float = 0.0,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        max_decode_len: int | None = None,
        monitor: str = "val/exact_match",
        monitor_mode: Literal["min", "max"] = "max",
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must lie in [0, 1), got {label_smoothing}.")
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"task.beam_size must be an integer >= 1, got {beam_size!r}.")
        if length_penalty < 0:
            raise ValueError(f"task.length_penalty must be >= 0, got {length_penalty}.")
        if max_decode_len is not None and (isinstance(max_decode_len, bool) or max_decode_len < 1):
            raise ValueError(f"task.max_decode_len must be an integer >= 1 or null, got {max_decode_len!r}.")
        self.label_smoothing = float(label_smoothing)
        super().__init__(net, monitor=monitor, monitor_mode=monitor_mode, **kwargs)
        self.teacher_forcing = teacher_forcing
        self.beam_size, self.length_penalty, self.max_decode_len = beam_size, length_penalty, max_decode_len
        # Set from the data in setup(), or from a checkpoint; predict() needs them.
        self.src_vocab: Any = None
        self.tgt_vocab: Any = None
        # Encodes raw strings as the training data was (a seq2seq DataModule), if known.
        self.source_encoder: Any = None
        self.max_src_len: int | None = None
        self.on_overlong: str = "truncate"

    @property
    def teacher_forcing(self) -> float:
        """Probability of feeding the reference token while training; in [0, 1]."""
        return self._teacher_forcing

    @teacher_forcing.setter
    def teacher_forcing(self, ratio: float) -> None:
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"task.teacher_forcing must lie in [0, 1], got {ratio}.")
        self._teacher_forcing = float(ratio)

    # ------------------------------------------------------------------ Keras face
    def compile(  # type: ignore[override]
        self,
        optimizer: Any = "adam",
        lr: float | None = None,
        loss: Any = None,
        metrics: Sequence[str] | None = None,
        scheduler: Any = None,
        loss_weights: Mapping[str, float] | None = None,
        **optimizer_kwargs: Any,
    ) -> Seq2Seq:
        """Choose optimiser, loss, metrics and schedule (see :meth:`Task.compile`).

        Args:
            optimizer: Name from ``conf/optimizer`` or a factory. Defaults to ``"adam"``.
            lr: Learning rate. Defaults to the optimiser config's.
            loss: A classification loss applied to the non-padding tokens, or None for
                cross-entropy with the task's ``label_smoothing``.
            metrics: A subset of ``["token_acc", "exact_match", "bleu"]``. Defaults to all.
            scheduler: Name from ``conf/scheduler`` or a factory.
            loss_weights: Not used (one output); must be None.
            **optimizer_kwargs: Further optimiser arguments.

        Example:
            >>> task.compile(optimizer="adamw", lr=1e-3, metrics=["token_acc"])
        """
        if isinstance(loss, Mapping) or loss_weights:
            raise ValueError("Seq2Seq has one output (the next-token logits); give one loss, without loss_weights.")
        if loss is None:
            loss = CrossEntropyLoss(label_smoothing=self.label_smoothing)
        elif self.label_smoothing:
            raise ValueError(
                f"task.label_smoothing={self.label_smoothing} only shapes the default loss, but a loss "
                f"({type(loss).__name__}) was given; set label smoothing on that loss, or pass loss=None."
            )
        if isinstance(metrics, Mapping):
            raise ValueError("Seq2Seq metrics are a list (token_acc, exact_match, bleu), not a dict per output.")
        super().compile(optimizer=optimizer, lr=lr, loss=loss, metrics=metrics, scheduler=scheduler, **optimizer_kwargs)
        return self

    def fit(self, data: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Train on a seq2seq DataModule, a loader or a list of dict batches (see :meth:`Task.fit`).

        Example:
            >>> history = task.fit(DateTranslationDataModule(), epochs=10)
        """
        return super().fit(seq2seq_data.as_batches(data), *args, **kwargs)

    def evaluate(self, data: Any, *args: Any, **kwargs: Any) -> dict[str, float]:  # type: ignore[override]
        """``{"loss", "token_acc", "exact_match", "bleu"}`` on a DataModule's test split or batches.

        Example:
            >>> task.evaluate(dm)["exact_match"]
        """
        return super().evaluate(seq2seq_data.as_batches(data), *args, **kwargs)

    @torch.no_grad()
    def predict(  # type: ignore[override]
        self, data: Any, batch_size: int = 256, beam_size: int | None = None
    ) -> list[str] | str:
        """Translate: raw strings, a DataModule's test split, or a loader of batches -> strings.

        Args:
            data: A list of source strings (a single string gives a single string), a
                seq2seq DataModule (its test split, in order), or a loader of
                ``{"src", "src_lengths"}`` batches.
            batch_size: Strings per batch. Defaults to 256.
            beam_size: Beam width; defaults to the task's ``beam_size``.

        Returns:
            The decoded target strings (``tgt_vocab.decode``), one per source.

        Raises:
            ValueError: An empty source string, or an over-long one when the data's
                ``on_overlong`` is ``"error"``. Unknown source tokens become ``<unk>``
                and are reported in a warning.

        Example:
            >>> task.predict(["3rd of March 1998", "Tue 03/03/98"])
            ['1998-03-03', '1998-03-03']
        """
        single = isinstance(data, str)
        if single or (isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data)):
            texts = [data] if single else list(data)
            if not texts:
                return []
            batches: Iterable[Any] = (
                self.encode_sources(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)
            )
        elif isinstance(data, L.LightningDataModule):
            data.setup("predict")
            if self.tgt_vocab is None and hasattr(data, "tgt_vocab"):
                self.bind_data(data)
            batches = data.predict_dataloader()
        elif is_loader(data):
            batches = data
        else:
            raise TypeError(
                "Seq2Seq.predict takes source strings, a seq2seq DataModule or a loader of "
                f"{{'src', 'src_lengths'}} batches; got {type(data).__name__}."
            )
        was_training = self.training
        self.eval()
        out: list[str] = []
        try:
            for batch in batches:
                out.extend(self.decode_batch(batch, beam_size=beam_size))
        finally:
            self.train(was_training)
        return out[0] if single else out

    def summary(  # type: ignore[override]
        self, input_size: Sequence[int] | None = None, print_fn: Any = print
    ) -> ModelSummary:
        """Print Keras' layer table, running one dummy batch for the output shapes.

        Args:
            input_size: ``(B, S, T)``: batch size, source and target length of the
                dummy batch. Defaults to ``(1, 8, 8)``.
            print_fn: Where the table goes. Defaults to ``print``.

        Example:
            >>> task.summary((2, 20, 11))
        """
        B, S, T = input_size if input_size is not None else (1, 8, 8)
        net = self.net
        example = None
        if hasattr(net, "src_vocab_size") and hasattr(net, "tgt_vocab_size"):
            src_tok = min(4, int(net.src_vocab_size) - 1)
            tgt_tok = min(4, int(net.tgt_vocab_size) - 1)
            example = {
                "src": torch.full((B, S), src_tok, dtype=torch.long, device=self.device),
                "src_lengths": torch.full((B,), S, dtype=torch.long, device=self.device),
                "tgt_in": torch.full((B, T), tgt_tok, dtype=torch.long, device=self.device),
            }
        wrapped = summarize(_CallWithBatch(net), example, title=type(net).__name__)
        rows = [(name.removeprefix("net."), kind, shape, n) for name, kind, shape, n in wrapped.rows]
        result = dataclasses.replace(wrapped, rows=rows)  # the Trainable column kept
        print_fn(str(result))
        return result

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Seq2Seq:
        """Rebuild a trained task from a ``dlkit-train`` checkpoint, ready to ``predict``.

        The checkpoint holds the run's composed config (network and task), the
        weights and the vocabularies. The run's DataModule is rebuilt from the config
        too (without loading any data) so raw strings are encoded exactly as in
        training; if that fails (a moved data file...), the stored source vocabulary
        and length policy are used directly.

        Args:
            path: A ``.ckpt`` file, or a run directory (its best checkpoint).
            map_location: Device to load the weights to. Defaults to ``"cpu"``.

        Returns:
            The task in eval mode.

        Raises:
            ValueError: The checkpoint was not written by ``dlkit-train`` with a
                Seq2Seq task.

        Example:
            >>> task = Seq2Seq.from_checkpoint("logs/seq2seq_bahdanau_dates/runs/2026-01-01_10-00-00")
            >>> task.predict("MARCH 3, 1998")
            '1998-03-03'
        """
        task, run = load_run(path, prefer="best", map_location=map_location, expect=cls)
        task.source_encoder = _rebuild_source_encoder(run.get("data"), task)
        task.to(map_location).eval()
        return task

    # ------------------------------------------------------------------ encode / decode
    def bind_data(self, datamodule: Any) -> None:
        """Take vocabularies, length policy and default decoding length from a seq2seq DataModule.

        ``setup()`` calls this with the trainer's DataModule; call it yourself to
        ``predict`` before training.

        Example:
            >>> task.bind_data(dm); task.predict(["3 March 1998"])
        """
        self.src_vocab, self.tgt_vocab = datamodule.src_vocab, datamodule.tgt_vocab
        self.source_encoder = datamodule if hasattr(datamodule, "encode_sources") else None
        self.max_src_len = getattr(datamodule, "max_src_len", None)
        self.on_overlong = getattr(datamodule, "on_overlong", "truncate")
        if self.max_decode_len is None and hasattr(datamodule, "examples"):
            longest = max(len(self.tgt_vocab.tokenize(t)) for _, t in datamodule.examples("train"))
            if (limit := getattr(datamodule, "max_tgt_len", None)) is not None:
                longest = min(longest, limit)
            # Room beyond the longest training target, for unseen longer outputs.
            self.max_decode_len = math.ceil(1.5 * longest) + 1

    def encode_sources(self, texts: str | Sequence[str]) -> dict[str, Tensor]:
        """Encode raw source strings into a ``{"src", "src_lengths"}`` batch on the task's device.

        Uses the DataModule's ``encode_sources`` when one is bound (training, or
        :meth:`from_checkpoint`), else :func:`dlkit.data.seq2seq.encode_sources` with the
        stored source vocabulary and length policy: whitespace is normalised, unknown
        tokens become ``<unk>`` with a warning, over-long inputs follow ``on_overlong``.

        Raises:
            ValueError: An empty input, or an over-long one with ``on_overlong="error"``.

        Example:
            >>> batch = task.encode_sources(["3rd of March 1998"])
            >>> batch["src"].shape
            torch.Size([1, 17])
        """
        if isinstance(texts, str):
            texts = [texts]
        if self.source_encoder is not None:
            batch = self.source_encoder.encode_sources(list(texts))
        else:
            vocab = self._vocab("source", self.src_vocab)
            batch = seq2seq_data.encode_sources(texts, vocab, self.max_src_len, self.on_overlong)
        return {k: v.to(self.device) for k, v in batch.items()}

    def decode_batch(self, batch: Mapping[str, Tensor], beam_size: int | None = None) -> list[str]:
        """Decode a batch's sources into target strings (greedy or beam search).

        Args:
            batch: ``{"src": (B, S), "src_lengths": (B,)}`` (a ``"tgt"`` is ignored).
            beam_size: Beam width. Defaults to the task's ``beam_size``.

        Returns:
            ``B`` strings.

        Example:
            >>> task.decode_batch(task.encode_sources(["Tue 03/03/98"]))
            ['1998-03-03']
        """
        tgt_vocab = self._vocab("target", self.tgt_vocab)
        src, src_lengths, _ = seq2seq_data.check_batch(batch, need_target=False)
        tokens = self.generate(src.to(self.device), src_lengths.to(self.device), beam_size=beam_size)
        return [tgt_vocab.decode(row) for row in tokens.tolist()]

    def generate(
        self, src: Tensor, src_lengths: Tensor, beam_size: int | None = None, max_len: int | None = None
    ) -> Tensor:
        """Best decoded ids per source, ``(B, L)`` (see :func:`dlkit.models.decoding.generate`).

        Example:
            >>> task.generate(batch["src"], batch["src_lengths"]).shape
            torch.Size([64, 11])
        """
        return generate(
            self.net,
            src,
            src_lengths,
            max_len=max_len or self.max_decode_len or FALLBACK_DECODE_LEN,
            beam_size=beam_size or self.beam_size,
            length_penalty=self.length_penalty,
        )

    # ------------------------------------------------------------------ Lightning hooks
    def forward(  # type: ignore[override]
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing_ratio: float = 1.0
    ) -> Tensor:
        return self.net(src, src_lengths, tgt_in, teacher_forcing_ratio=teacher_forcing_ratio)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "src_vocab") and hasattr(datamodule, "tgt_vocab"):
            self.bind_data(datamodule)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        src, src_lengths, tgt = seq2seq_data.check_batch(batch)
        tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
        logits = self(src, src_lengths, tgt_in, teacher_forcing_ratio=self.teacher_forcing)
        loss = self._token_loss(logits, tgt_out)
        loss = self.add_regularization(loss)
        metrics = {}
        if "token_acc" in self.train_metrics:
            self.train_metrics["token_acc"].update(token_hits(logits.detach(), tgt_out, self.pad_id))
            metrics["train/token_acc"] = self.train_metrics["token_acc"]
        self.log_epoch_means("train", {"train/loss": loss}, metrics, batch_size=src.shape[0], prog_bar=["train/loss"])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[str]:
        return self.decode_batch(batch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # Plain JSON-able values: torch.load(weights_only=True) reads them back. The key is
        # written even without vocabularies (a task fit on batches), so loading can rely on it.
        checkpoint[CKPT_KEY] = {
            "src_vocab": self.src_vocab.state_dict() if self.src_vocab is not None else None,
            "tgt_vocab": self.tgt_vocab.state_dict() if self.tgt_vocab is not None else None,
            "max_decode_len": self.max_decode_len,
            "max_src_len": self.max_src_len,
            "on_overlong": self.on_overlong,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore vocabularies, length policy and decoding length; a ValueError if none are stored."""
        super().on_load_checkpoint(checkpoint)
        if CKPT_KEY not in checkpoint:
            raise ValueError(
                f"The checkpoint lacks {CKPT_KEY!r} (vocabularies, length policy): it was not written by "
                "dlkit-train with a Seq2Seq task. Rebuild the network and task in Python and load its state dict."
            )
        stored = checkpoint[CKPT_KEY]
        if stored.get("src_vocab") is not None and stored.get("tgt_vocab") is not None:
            self.src_vocab = Vocab.from_state_dict(stored["src_vocab"])
            self.tgt_vocab = Vocab.from_state_dict(stored["tgt_vocab"])
        if stored.get("max_decode_len"):
            self.max_decode_len = int(stored["max_decode_len"])
        self.max_src_len = stored.get("max_src_len")
        self.on_overlong = stored.get("on_overlong") or "truncate"

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _vocab(side: str, vocab: Vocab | None) -> Vocab:
        if vocab is None:
            raise RuntimeError(
                f"Seq2Seq has no {side} vocabulary: fit it on a seq2seq DataModule, call bind_data(dm), "
                "or load it with Seq2Seq.from_checkpoint(path)."
            )
        return vocab

    @property
    def pad_id(self) -> int:
        """The padding id (the network's, else the shared vocabulary convention 0)."""
        return int(getattr(self.net, "pad_id", 0))

    @property
    def eos_id(self) -> int:
        """The end-of-sequence id (the network's, else 2)."""
        return int(getattr(self.net, "eos_id", 2))

    def _token_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        # Padding is cut out before the loss, so any classification loss works on
        # (N, V) logits and (N,) targets and averages over real tokens only.
        mask = target != self.pad_id
        return self.loss_fns[SINGLE_OUTPUT](logits[mask], target[mask])

    def _evaluation_step(self, batch: Any, stage: str) -> None:
        src, src_lengths, tgt = seq2seq_data.check_batch(batch)
        tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
        logits = self(src, src_lengths, tgt_in)
        loss = self._token_loss(logits, tgt_out)
        B = src.shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=B, sync_dist=True)
        metrics = getattr(self, f"{stage}_metrics")
        if "token_acc" in metrics:
            metrics["token_acc"].update(token_hits(logits, tgt_out, self.pad_id))
        if any(name in metrics for name in DECODED_METRICS):
            # Room for every reference of the batch even when the data gave no length.
            max_len = self.max_decode_len or tgt_out.shape[1] + 5
            pred = self.generate(src, src_lengths, max_len=max_len)
            if "exact_match" in metrics:
                metrics["exact_match"].update(exact_match(pred, tgt_out, self.eos_id, self.pad_id).float())
            if "bleu" in metrics:
                metrics["bleu"].update(*sequence_bleu_strings(pred, tgt_out, self.eos_id, self.pad_id))
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == self._headline,
                     batch_size=B)

    def _build_metrics(self, per_output: Mapping[str, Sequence[str]]) -> None:
        if set(per_output) - {SINGLE_OUTPUT}:
            raise ValueError(f"Seq2Seq has one output; metrics per output {sorted(per_output)} do not apply.")
        names = list(dict.fromkeys(canonical_name(n, "seq2seq") for n in per_output.get(SINGLE_OUTPUT, ())))
        self._headline = "exact_match" if "exact_match" in names else (names[0] if names else "")
        self.track_best({n: metric_mode(n) for n in names}, prog_bar=self._headline)
        for stage in STAGES:
            # Training is teacher-forced only: decoding every training batch would cost
            # more than the step itself.
            kept = [n for n in names if stage != "train" or n not in DECODED_METRICS]
            setattr(self, f"{stage}_metrics", nn.ModuleDict(dict(build_metric(n, "seq2seq") for n in kept)))


class _CallWithBatch(nn.Module):
    """Lets ``summarize`` (one positional input) run an encoder–decoder on a dict batch."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.net(batch["src"], batch["src_lengths"], batch["tgt_in"])


def _rebuild_source_encoder(data_cfg: Any, task: Seq2Seq) -> Any:
    """The run's DataModule with the checkpoint's vocabularies, to encode raw strings; or None.

    Building a DataModule loads no data (that happens in ``setup``); it is only used
    for ``encode_sources`` with the vocabularies of the checkpoint.
    """
    if data_cfg is None or task.src_vocab is None:
        return None
    # Checked outside the try: a refused target is an error, not a reason to fall back.
    check_targets({"data": data_cfg}, "the data config stored in the checkpoint")
    try:
        datamodule = instantiate_stored(data_cfg, "data", "the data config stored in the checkpoint")
        vocabs = {"src_vocab": task.src_vocab.state_dict(), "tgt_vocab": task.tgt_vocab.state_dict()}
        datamodule.load_state_dict(vocabs)
        # Only a DataModule that took the vocabularies (and so will not load data to build
        # its own) is used; its state_dict() says so without running setup().
        if not hasattr(datamodule, "encode_sources") or datamodule.state_dict() != vocabs:
            return None
        return datamodule
    except Exception as err:  # any failure: fall back to the stored vocabulary
        log.debug("Encoding raw strings with the stored vocabulary; rebuilding the data failed: %s", err)
        return None
