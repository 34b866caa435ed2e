"""The seq2seq interface every dlkit encoder–decoder implements (d2l's, batch-first).

- :class:`Encoder` ``forward(src (B, S), src_lengths (B,)) -> (outputs (B, S, H), state)``;
- :class:`Decoder` ``init_state(enc_outputs, enc_state, src_lengths) -> state`` and
  ``forward(tgt_in (B, T), state) -> (logits (B, T, V), state)``;
- :class:`AttentionDecoder` adds ``attention_weights`` ``(B, T, S)`` of the last forward;
- :class:`EncoderDecoder` joins them and adds what training and decoding need:
  ``forward`` (teacher forcing with a ratio), ``start`` / ``step`` (one token at a time,
  for greedy and beam search, :mod:`dlkit.models.decoding`) and ``select_state`` (rows
  of a state, for beams);
- :class:`VocabConfig` holds the fields every model config starts with (vocabulary sizes
  and special ids), checked the same way for every family.

A decoder :data:`State` is a ``dict`` of tensors whose first dimension is the batch, so
one ``index_select`` per tensor reorders it (:func:`select_rows`).

Example:
    >>> net = create_model("seq2seq_rnn", src_vocab_size=30, tgt_vocab_size=14)
    >>> isinstance(net, EncoderDecoder), isinstance(net.encoder, Encoder)
    (True, True)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from dlkit.models.freezing import Freezable

__all__ = [
    "AttentionDecoder",
    "Decoder",
    "Encoder",
    "EncoderDecoder",
    "State",
    "VocabConfig",
    "select_rows",
]

#: A decoder state: batch-first tensors by name (``"hidden"``, ``"memory"``, ...).
State = dict[str, Any]

class Encoder(nn.Module):
    """Base class of seq2seq encoders: source tokens in, one vector per source step out.

    Call arguments:
        src: ``(B, S)`` token ids, padded after each sequence's end.
        src_lengths: ``(B,)`` valid lengths, in ``[1, S]``.

    Returns:
        ``(outputs, state)``: ``outputs`` ``(B, S, H)``, and whatever summary of the
        source the matching decoder's ``init_state`` expects.
    """

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Any]:
        raise NotImplementedError


class Decoder(nn.Module):
    """Base class of seq2seq decoders: target prefix and state in, next-token logits out.

    A decoder never changes the state it is given; ``forward`` returns a new one, so a
    caller may keep old states (beam search does).
    """

    def init_state(self, enc_outputs: Tensor, enc_state: Any, src_lengths: Tensor) -> State:
        """Build the first decoder state from the encoder's result.

        Args:
            enc_outputs: ``(B, S, H)`` encoder outputs.
            enc_state: The encoder's final state.
            src_lengths: ``(B,)`` valid source lengths.

        Returns:
            A dict of batch-first tensors.
        """
        raise NotImplementedError

    def forward(self, tgt_in: Tensor, state: State) -> tuple[Tensor, State]:
        """Decode ``tgt_in`` ``(B, T)`` from ``state``; return ``(logits (B, T, V), state)``."""
        raise NotImplementedError


class AttentionDecoder(Decoder):
    """A decoder that attends over the encoder outputs.

    Attributes:
        attention_weights: ``(B, T, S)`` weights of the last ``forward`` (detached; heads
            averaged for multi-head attention), or None before the first call.
    """

    _attention_weights: Tensor | None = None

    @property
    def attention_weights(self) -> Tensor | None:
        """``(B, T, S)`` attention of the last forward, or None."""
        return self._attention_weights


def select_rows(state: Any, index: Tensor) -> Any:
    """Pick batch rows of a decoder state: ``index_select(0, index)`` on every tensor.

    Args:
        state: A tensor, or a dict / list / tuple of them (nested), batch first; other
            values (None, numbers) are kept.
        index: ``(B',)`` row indices, repeats allowed (one row per beam).

    Returns:
        The same structure with ``B'`` rows.

    Example:
        >>> s = {"hidden": torch.arange(6.).view(3, 1, 2), "src_lengths": torch.tensor([3, 2, 1])}
        >>> select_rows(s, torch.tensor([2, 2]))["src_lengths"]
        tensor([1, 1])
    """
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if isinstance(state, dict):
        return {k: select_rows(v, index) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(select_rows(v, index) for v in state)
    return state


class EncoderDecoder(Freezable):
    """An encoder and a decoder, with the entry points training and decoding need.

    Layer groups (:class:`~dlkit.models.freezing.Freezable`): the family's
    ``group_layout``, by default ``encoder`` and ``decoder``.

    Args:
        encoder: An :class:`Encoder`.
        decoder: A :class:`Decoder` whose ``init_state`` reads the encoder's result.
        src_vocab_size: Source vocabulary size (token ids in ``[0, src_vocab_size)``).
        tgt_vocab_size: Target vocabulary size ``V``.
        pad_id: Padding id of both vocabularies. Defaults to 0.
        bos_id: Beginning-of-sequence id (the first decoder input). Defaults to 1.
        eos_id: End-of-sequence id. Defaults to 2.

    Call arguments:
        src: ``(B, S)`` source ids, padded with ``pad_id``.
        src_lengths: ``(B,)`` valid source lengths in ``[1, S]``, on ``src``'s device.
        tgt_in: ``(B, T)`` decoder inputs ``[bos, y_1, ..., y_n, (eos, pad...)]``.
        teacher_forcing_ratio: Probability of feeding the true previous token; below 1
            the recurrent decoders run step by step and feed their own argmax otherwise
            (drawn per row and step). Models that are always teacher-forced (the
            transformer) ignore it. Defaults to 1.0.

    Returns:
        ``(B, T, V)`` logits for ``tgt_out = tgt[:, 1:]``.

    Example:
        >>> net = create_model("seq2seq_rnn", src_vocab_size=30, tgt_vocab_size=14)
        >>> state = net.start(torch.randint(4, 30, (2, 9)), torch.tensor([9, 5]))
        >>> logits, state = net.step(torch.full((2,), net.bos_id), state)
        >>> logits.shape
        torch.Size([2, 14])
    """

    #: Whether ``teacher_forcing_ratio < 1`` is honoured (False: always teacher-forced).
    supports_free_running: bool = True

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self._attention: Tensor | None = None

    # -- checks --------------------------------------------------------------------------

    def _check_tokens(self, name: str, ids: Tensor, vocab_size: int) -> None:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32) or ids.shape[1] == 0:
            raise ValueError(
                f"{type(self).__name__}: {name} expected integer token ids of shape (B, length) "
                f"with length >= 1, got dtype {ids.dtype} and shape {tuple(ids.shape)}."
            )
        # Value checks read tensors back (.item()): under torch.compile (compile=true) each
        # would split the graph, so only the shape and dtype checks are traced.
        if torch.compiler.is_compiling():
            return
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(
                f"{type(self).__name__}: {name} holds ids from {int(ids.min())} to {int(ids.max())}, "
                f"but the vocabulary has {vocab_size} tokens (ids 0..{vocab_size - 1}). Build the "
                "model with the data's vocabulary sizes (model_hints) or encode with the right vocabulary."
            )

    def _check_source(self, src: Tensor, src_lengths: Tensor) -> None:
        self._check_tokens("src", src, self.src_vocab_size)
        B, S = src.shape
        if src_lengths.shape != (B,) or src_lengths.dtype.is_floating_point:
            raise ValueError(
                f"{type(self).__name__}: src_lengths expected integer lengths of shape ({B},), "
                f"got dtype {src_lengths.dtype} and shape {tuple(src_lengths.shape)}."
            )
        if not torch.compiler.is_compiling() and (int(src_lengths.min()) < 1 or int(src_lengths.max()) > S):
            raise ValueError(
                f"{type(self).__name__}: src_lengths must be in [1, {S}] (src has {S} steps), got "
                f"values from {int(src_lengths.min())} to {int(src_lengths.max())}. An empty source "
                "has nothing to attend to: refuse or replace it in the data."
            )

    # -- entry points --------------------------------------------------------------------

    def start(self, src: Tensor, src_lengths: Tensor) -> State:
        """Encode a batch and return the decoder's first state.

        Args:
            src: ``(B, S)`` source ids.
            src_lengths: ``(B,)`` valid lengths.

        Returns:
            The state :meth:`step` continues from; it also starts the accumulation of
            :attr:`attention_weights` (key ``"attention"``, ``(B, 0, S)``).
        """
        self._check_source(src, src_lengths)
        enc_outputs, enc_state = self.encoder(src, src_lengths)
        state = self.decoder.init_state(enc_outputs, enc_state, src_lengths)
        if isinstance(self.decoder, AttentionDecoder):
            # Kept in the state (not on the module) so that beam reordering follows it.
            B, S = src.shape
            state["attention"] = enc_outputs.new_zeros(B, 0, S)
        self._attention = state.get("attention")
        return state

    def step(self, y_prev: Tensor, state: State) -> tuple[Tensor, State]:
        """Decode one token for every row.

        Args:
            y_prev: ``(B,)`` previous token ids (``bos_id`` at the first step).
            state: From :meth:`start`, :meth:`step` or :meth:`select_state`.

        Returns:
            ``(logits (B, V), state)``.
        """
        if y_prev.dim() != 1:
            raise ValueError(
                f"{type(self).__name__}.step: y_prev expected shape (B,), got {tuple(y_prev.shape)}."
            )
        logits, new_state = self.decoder(y_prev.unsqueeze(1), state)  # (B, 1) -> (B, 1, V)
        weights = getattr(self.decoder, "attention_weights", None)
        if weights is not None and "attention" in state:
            # A decoder that recomputes its prefix returns (B, t, S): the new step is the last row.
            new_state["attention"] = torch.cat([state["attention"], weights[:, -1:]], dim=1)
            self._attention = new_state["attention"]
        return logits[:, -1], new_state

    def select_state(self, state: State, index: Tensor) -> State:
        """Rows ``index`` ``(B',)`` of a state (every tensor along its batch dimension).

        Example:
            >>> beams = net.select_state(state, torch.tensor([0, 0, 1, 1]))  # 2 beams per row
        """
        new_state = select_rows(state, index)
        if isinstance(new_state, dict) and "attention" in new_state:
            self._attention = new_state["attention"]
        return new_state

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing_ratio: float = 1.0
    ) -> Tensor:
        self._check_tokens("tgt_in", tgt_in, self.tgt_vocab_size)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: src and tgt_in must have the same batch size, got "
                f"{tuple(src.shape)} and {tuple(tgt_in.shape)}."
            )
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(f"teacher_forcing_ratio must be in [0, 1], got {teacher_forcing_ratio}.")
        state = self.start(src, src_lengths)
        if teacher_forcing_ratio >= 1.0 or not self.supports_free_running:
            if teacher_forcing_ratio < 1.0:
                warnings.warn(
                    f"{type(self).__name__} is always teacher-forced; teacher_forcing_ratio="
                    f"{teacher_forcing_ratio} has no effect.",
                    stacklevel=2,
                )
            logits, _ = self.decoder(tgt_in, state)
            self._attention = getattr(self.decoder, "attention_weights", None)
            return logits
        return self._free_running(tgt_in, state, teacher_forcing_ratio)

    def _free_running(self, tgt_in: Tensor, state: State, ratio: float) -> Tensor:
        """Step through ``tgt_in``, feeding the true token with probability ``ratio``."""
        B, T = tgt_in.shape
        y = tgt_in[:, 0]
        steps = []
        for t in range(T):
            logits, state = self.step(y, state)  # (B, V)
            steps.append(logits)
            if t + 1 < T:
                forced = torch.rand(B, device=tgt_in.device) < ratio
                y = torch.where(forced, tgt_in[:, t + 1], logits.argmax(dim=-1))
        return torch.stack(steps, dim=1)  # T x (B, V) -> (B, T, V)

    @property
    def attention_weights(self) -> Tensor | None:
        """``(B, T, S)`` attention of the last ``forward``, or accumulated over the
        ``step`` calls since ``start`` (rows follow ``select_state``); None without attention."""
        return self._attention


@dataclass
class VocabConfig:
    """The fields every seq2seq model config starts with: what :class:`EncoderDecoder` takes.

    :class:`~dlkit.models.seq2seq.Seq2SeqConfig` and
    :class:`~dlkit.models.transformer.TransformerSeq2SeqConfig` extend it, so the vocabulary checks and their messages are the same for every model.

    Attributes:
        src_vocab_size: Source vocabulary size (``null`` in the configs: filled from the data).
        tgt_vocab_size: Target vocabulary size (idem).
        pad_id: Padding id.
        bos_id: First decoder input.
        eos_id: End of a target sequence.
    """

    src_vocab_size: int | None = None
    tgt_vocab_size: int | None = None
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def check(self) -> None:
        """Raise a clear error for a special id that is not a token id or a missing vocabulary size."""
        for key in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"model.{key} must be a token id (int >= 0), got {value!r}. Leave it null in the "
                    "config with a seq2seq DataModule (train.py fills it from model_hints()) or pass it."
                )
        for key in ("src_vocab_size", "tgt_vocab_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= max(self.pad_id, self.bos_id, self.eos_id):
                raise ValueError(
                    f"model.{key} must be an int larger than the special ids (pad/bos/eos), got "
                    f"{value!r}. Leave it null in the config with a seq2seq DataModule "
                    "(train.py fills it from model_hints()) or pass the vocabulary size."
                )

    def encoder_decoder_kwargs(self) -> dict[str, Any]:
        """The sizes and ids as :class:`EncoderDecoder`'s keyword arguments."""
        # This class's fields are named as EncoderDecoder's arguments, and only they are.
        return {f.name: getattr(self, f.name) for f in fields(VocabConfig)}

