"""Recurrent encoder–decoders: the fixed-context RNN, Bahdanau and Luong attention.

The interface is d2l's, batch-first, and every seq2seq model of dlkit shares it
(:mod:`dlkit.models.transformer` builds the transformer on the same classes):

- :class:`Encoder` ``forward(src (B, S), src_lengths (B,)) -> (outputs (B, S, H), state)``;
- :class:`Decoder` ``init_state(enc_outputs, enc_state, src_lengths) -> state`` and
  ``forward(tgt_in (B, T), state) -> (logits (B, T, V), state)``;
- :class:`AttentionDecoder` adds ``attention_weights`` ``(B, T, S)`` of the last forward;
- :class:`EncoderDecoder` joins them and adds what training and decoding need:
  ``forward`` (teacher forcing with a ratio), ``start`` / ``step`` (one token at a time,
  for greedy and beam search) and ``select_state`` (rows of a state, for beams).

A decoder state is a ``dict`` of tensors whose first dimension is the batch, so one
``index_select`` per tensor reorders it (:func:`select_rows`); recurrent hidden states are
kept as ``(B, L, H)`` there and transposed to the ``(L, B, H)`` the RNN layers take.

Padding: encoders run the recurrent layers with ``lengths=``, so padded source steps
neither change the final state nor produce outputs (they are zero), and every attention
masks them with ``masked_softmax``: their weights are exactly 0.

Example:
    >>> net = create_model("seq2seq_bahdanau", src_vocab_size=30, tgt_vocab_size=14)
    >>> src, lengths = torch.randint(4, 30, (2, 9)), torch.tensor([9, 5])
    >>> tgt_in = torch.randint(4, 14, (2, 11))
    >>> net(src, lengths, tgt_in).shape, net.attention_weights.shape
    (torch.Size([2, 11, 14]), torch.Size([2, 11, 9]))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from dlkit.layers import GRU, LSTM, AdditiveAttention, Dropout, LuongAttention, masked_softmax
from dlkit.models.registry import register_model

__all__ = [
    "Encoder",
    "Decoder",
    "AttentionDecoder",
    "EncoderDecoder",
    "Seq2SeqConfig",
    "RNNEncoder",
    "RNNDecoder",
    "BahdanauDecoder",
    "LuongDecoder",
    "RNNSeq2Seq",
    "select_rows",
]

State = dict[str, Any]
_CELLS = {"gru": GRU, "lstm": LSTM}


# ----------------------------------------------------------------------------- interface


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


class EncoderDecoder(nn.Module):
    """An encoder and a decoder, with the entry points training and decoding need.

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
        if int(src_lengths.min()) < 1 or int(src_lengths.max()) > S:
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


# ----------------------------------------------------------------------------- config


@dataclass
class _VocabConfig:
    """The fields every seq2seq model config starts with: what :class:`EncoderDecoder` takes.

    :class:`Seq2SeqConfig` and :class:`dlkit.models.transformer.TransformerSeq2SeqConfig`
    extend it, so the vocabulary checks and their messages are the same for every model.

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

    def _encoder_decoder_kwargs(self) -> dict[str, Any]:
        """The sizes and ids as :class:`EncoderDecoder`'s keyword arguments."""
        # This class's fields are named as EncoderDecoder's arguments, and only they are.
        return {f.name: getattr(self, f.name) for f in fields(_VocabConfig)}


@dataclass
class Seq2SeqConfig(_VocabConfig):
    """Hyper-parameters of :class:`RNNSeq2Seq`; Hydra's ``model/seq2seq_*.yaml`` fill them.

    Attributes:
        src_vocab_size: Source vocabulary size (``null`` in the configs: filled from the data).
        tgt_vocab_size: Target vocabulary size (idem).
        pad_id: Padding id; its embedding is zero and gets no gradient.
        bos_id: First decoder input.
        eos_id: End of a target sequence.
        embed_dim: Token embedding size (source and target).
        hidden_size: Recurrent units per layer, in the encoder and the decoder.
        num_layers: Stacked recurrent layers, in the encoder and the decoder (the decoder
            starts from the encoder's final state, layer by layer).
        cell: ``"gru"`` or ``"lstm"``.
        dropout: Dropout on the embeddings and between stacked recurrent layers.
        drop_rate: Dropout before the output layer (the classifier over the target
            vocabulary; the key every dlkit model config has).
        bidirectional: Read the source in both directions. The two directions are summed
            (outputs and final states), so the decoder and the attention see
            ``hidden_size`` features either way and no parameter is added.
        attention_size: Hidden size of the additive (Bahdanau) and ``concat`` (Luong)
            scores. None = ``hidden_size``.
        score: Luong only: ``"dot"``, ``"general"`` or ``"concat"``.
        input_feeding: Luong only: feed the previous attentional state ``h̃_{t-1}`` into
            the next step's input, as in Luong et al. (section 3.3), so the decoder knows
            where it attended before. False runs the decoder RNN over the whole target in
            one call when teacher-forced (faster), with the attention computed after it.
    """

    embed_dim: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    cell: Literal["gru", "lstm"] = "gru"
    dropout: float = 0.0
    drop_rate: float = 0.0
    bidirectional: bool = False
    attention_size: int | None = None
    score: Literal["dot", "general", "concat"] = "dot"
    input_feeding: bool = True

    def check(self) -> None:
        """Raise a clear error for a missing vocabulary size or an unknown option."""
        super().check()
        if self.cell not in _CELLS:
            raise ValueError(f"model.cell must be one of {sorted(_CELLS)}, got {self.cell!r}.")
        if self.score not in ("dot", "general", "concat"):
            raise ValueError(f"model.score must be 'dot', 'general' or 'concat', got {self.score!r}.")
        for key in ("embed_dim", "hidden_size", "num_layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}.")


# ----------------------------------------------------------------------------- blocks


def _to_layers(state: Tensor) -> Tensor:
    """Batch-first ``(B, L, H)`` state -> the ``(L, B, H)`` the recurrent layers take."""
    return state.transpose(0, 1).contiguous()


def _hidden_state(state: State) -> Tensor | tuple[Tensor, Tensor]:
    """The recurrent layer's ``hx`` from a decoder state (``(h, c)`` for an LSTM)."""
    h = _to_layers(state["hidden"])
    return (h, _to_layers(state["cell"])) if "cell" in state else h


def _store_hidden(state: State, h_n: Tensor | tuple[Tensor, Tensor]) -> State:
    """A copy of ``state`` with the layer's final ``(L, B, H)`` state(s), batch-first."""
    new = dict(state)
    if isinstance(h_n, tuple):
        new["hidden"], new["cell"] = h_n[0].transpose(0, 1), h_n[1].transpose(0, 1)
    else:
        new["hidden"] = h_n.transpose(0, 1)  # (L, B, H) -> (B, L, H)
    return new


class RNNEncoder(Encoder):
    """Embedding -> dropout -> GRU/LSTM over the valid steps of each source.

    Args:
        cfg: A :class:`Seq2SeqConfig` (``src_vocab_size``, ``embed_dim``,
            ``hidden_size``, ``num_layers``, ``cell``, ``dropout``, ``bidirectional``).

    Call arguments:
        src: ``(B, S)`` ids. src_lengths: ``(B,)``.

    Returns:
        ``(outputs, state)``: ``outputs`` ``(B, S, H)``, zero at padded steps; ``state``
        ``h_n`` ``(L, B, H)`` (``(h_n, c_n)`` for an LSTM) at each sequence's last valid
        step. With ``bidirectional`` the two directions are summed.

    Example:
        >>> enc = RNNEncoder(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20))
        >>> out, h = enc(torch.randint(4, 20, (2, 7)), torch.tensor([7, 3]))
        >>> out.shape, h.shape
        (torch.Size([2, 7, 128]), torch.Size([1, 2, 128]))
    """

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(cfg.src_vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.dropout = Dropout(cfg.dropout)
        self.rnn = _CELLS[cfg.cell](
            cfg.embed_dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
        )
        self.bidirectional = cfg.bidirectional

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Any]:
        x = self.dropout(self.embedding(src))  # (B, S, E)
        outputs, state = self.rnn(x, lengths=src_lengths)  # (B, S, D*H), (L*D, B, H)
        if self.bidirectional:
            B, S, DH = outputs.shape
            outputs = outputs.view(B, S, 2, DH // 2).sum(dim=2)  # (B, S, 2, H) -> (B, S, H)
            state = tuple(_sum_directions(s) for s in state) if isinstance(state, tuple) else _sum_directions(state)
        return outputs, state


def _sum_directions(h_n: Tensor) -> Tensor:
    LD, B, H = h_n.shape
    return h_n.view(LD // 2, 2, B, H).sum(dim=1)  # (L*2, B, H) -> (L, 2, B, H) -> (L, B, H)


class _RecurrentDecoder(Decoder):
    """Shared parts: target embedding, the RNN, the output layer, the initial state."""

    def __init__(self, cfg: Seq2SeqConfig, rnn_input_size: int, out_features: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(cfg.tgt_vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.dropout = Dropout(cfg.dropout)
        self.rnn = _CELLS[cfg.cell](
            rnn_input_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.head_drop = Dropout(cfg.drop_rate)
        self.fc = nn.Linear(out_features, cfg.tgt_vocab_size)
        self.hidden_size = cfg.hidden_size

    def init_state(self, enc_outputs: Tensor, enc_state: Any, src_lengths: Tensor) -> State:
        return _store_hidden({}, enc_state)

    def _run(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One call of the RNN on ``x`` ``(B, T, I)`` from ``state``; returns ``(B, T, H)``."""
        out, h_n = self.rnn(x, _hidden_state(state))
        return out, _store_hidden(state, h_n)


class RNNDecoder(_RecurrentDecoder):
    """The decoder without attention (Cho et al., 2014; d2l 10.7): one fixed context.

    The encoder's final top-layer state ``c`` is concatenated to the embedded input at
    every step, and the encoder's final states start the decoder. Everything the decoder
    knows about the source must pass through ``c``: the baseline attention improves on.

    Args:
        cfg: A :class:`Seq2SeqConfig`.

    Call arguments:
        tgt_in: ``(B, T)`` ids. state: From :meth:`init_state`.

    Returns:
        ``(logits (B, T, V), state)``; ``attention_weights`` stays None.

    Example:
        >>> dec = RNNDecoder(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=12))
        >>> state = dec.init_state(torch.zeros(2, 7, 128), torch.zeros(1, 2, 128), torch.tensor([7, 3]))
        >>> dec(torch.ones(2, 5, dtype=torch.long), state)[0].shape
        torch.Size([2, 5, 12])
    """

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__(cfg, cfg.embed_dim + cfg.hidden_size, cfg.hidden_size)

    def init_state(self, enc_outputs: Tensor, enc_state: Any, src_lengths: Tensor) -> State:
        state = _store_hidden({}, enc_state)
        state["context"] = state["hidden"][:, -1]  # top layer's h: (B, L, H) -> (B, H)
        return state

    def forward(self, tgt_in: Tensor, state: State) -> tuple[Tensor, State]:
        emb = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        B, T, _ = emb.shape
        context = state["context"].unsqueeze(1).expand(B, T, self.hidden_size)  # (B, H) -> (B, T, H)
        out, state = self._run(torch.cat([emb, context], dim=-1), state)  # (B, T, H)
        return self.fc(self.head_drop(out)), state


# Attention with the keys' projection computed once per source. The query of a decoder
# step depends on the previous step, but the projected keys do not: the layers'
# own forward would redo that (B, S, H) x (H, h) matmul at every target step.


def _project_keys(attn: nn.Module, keys: Tensor) -> Tensor:
    """The step-independent part of ``attn``'s score for ``keys`` ``(B, S, d_k)``."""
    if isinstance(attn, AdditiveAttention):
        return attn.W_k(keys)  # (B, S, h)
    if attn.score_name == "general":
        return attn.W_a(keys)  # (B, S, d_q)
    if attn.score_name == "concat":
        _, W_s = attn.W_a.weight.split([attn.query_size, attn.key_size], dim=1)
        return keys @ W_s.T  # (B, S, h)
    return keys  # dot


def _attend(attn: nn.Module, queries: Tensor, keys_proj: Tensor, values: Tensor, lengths: Tensor) -> Tensor:
    """``attn(queries, keys, values, valid_lens=lengths)`` from pre-projected keys.

    Returns the ``(B, Q, d_v)`` context; the ``(B, Q, S)`` weights go to
    ``attn.attention_weights``, as the layer's own forward would leave them.
    """
    if isinstance(attn, AdditiveAttention):
        features = torch.tanh(attn.W_q(queries).unsqueeze(2) + keys_proj.unsqueeze(1))  # (B, Q, S, h)
        scores = attn.w_v(features).squeeze(-1)  # (B, Q, S, 1) -> (B, Q, S)
    elif attn.score_name == "concat":
        W_t, _ = attn.W_a.weight.split([attn.query_size, attn.key_size], dim=1)
        features = torch.tanh((queries @ W_t.T).unsqueeze(2) + keys_proj.unsqueeze(1))  # (B, Q, S, h)
        scores = attn.v_a(features).squeeze(-1)  # (B, Q, S)
    else:  # dot, general: q . (W_a) k
        scores = torch.bmm(queries, keys_proj.transpose(1, 2))  # (B, Q, d) @ (B, d, S) -> (B, Q, S)
    weights = masked_softmax(scores, lengths)  # padded source steps: exactly 0
    attn.attention_weights = weights
    return torch.bmm(attn.dropout(weights), values)  # (B, Q, S) @ (B, S, d_v) -> (B, Q, d_v)


class BahdanauDecoder(_RecurrentDecoder, AttentionDecoder):
    """The decoder of Bahdanau et al. (2015): additive attention before every step.

    At step ``t`` the query is the previous top-layer state ``s_{t-1}``; the context
    ``c_t = Σ_s α_{t,s} h_s`` (``α = softmax_s(v^T tanh(W_q s_{t-1} + W_k h_s))``, padded
    ``s`` masked) is concatenated to the embedded input ``y_{t-1}``, the RNN steps, and a
    linear layer reads its output (d2l's variant; the paper adds a maxout layer).

    Args:
        cfg: A :class:`Seq2SeqConfig`.

    Call arguments:
        tgt_in: ``(B, T)`` ids. state: From :meth:`init_state`.

    Returns:
        ``(logits (B, T, V), state)``; ``attention_weights`` ``(B, T, S)``.

    Example:
        >>> dec = BahdanauDecoder(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=12))
        >>> state = dec.init_state(torch.randn(2, 7, 128), torch.zeros(1, 2, 128), torch.tensor([7, 3]))
        >>> logits, state = dec(torch.ones(2, 5, dtype=torch.long), state)
        >>> dec.attention_weights[1, :, 3:].abs().sum().item()  # padded source steps
        0.0
    """

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__(cfg, cfg.embed_dim + cfg.hidden_size, cfg.hidden_size)
        H = cfg.hidden_size
        self.attention = AdditiveAttention(key_size=H, query_size=H, num_hiddens=cfg.attention_size or H)

    def init_state(self, enc_outputs: Tensor, enc_state: Any, src_lengths: Tensor) -> State:
        state = _store_hidden({}, enc_state)
        state.update(memory=enc_outputs, keys=_project_keys(self.attention, enc_outputs), src_lengths=src_lengths)
        return state

    def forward(self, tgt_in: Tensor, state: State) -> tuple[Tensor, State]:
        emb = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        outputs, weights = [], []
        for t in range(emb.shape[1]):
            query = state["hidden"][:, -1:]  # top layer's s_{t-1}: (B, 1, H)
            context = _attend(self.attention, query, state["keys"], state["memory"], state["src_lengths"])
            out, state = self._run(torch.cat([emb[:, t : t + 1], context], dim=-1), state)  # (B, 1, H)
            outputs.append(out)
            weights.append(self.attention.attention_weights)
        self._attention_weights = torch.cat(weights, dim=1).detach()  # T x (B, 1, S) -> (B, T, S)
        out = torch.cat(outputs, dim=1)  # (B, T, H)
        return self.fc(self.head_drop(out)), state


class LuongDecoder(_RecurrentDecoder, AttentionDecoder):
    """The decoder of Luong et al. (2015): step the RNN, then attend with its state.

    At step ``t``: ``h_t = RNN([y_{t-1}; h̃_{t-1}], h_{t-1})`` (``h̃_{t-1}`` only with
    ``input_feeding``, zero at ``t = 1``), ``c_t = attention(h_t, h_s)`` with the ``dot``,
    ``general`` or ``concat`` score, the attentional state ``h̃_t = tanh(W_c [c_t; h_t])``,
    and ``logits = W_s h̃_t``.

    Args:
        cfg: A :class:`Seq2SeqConfig` (``score``, ``input_feeding``, ``attention_size``).

    Call arguments:
        tgt_in: ``(B, T)`` ids. state: From :meth:`init_state`.

    Returns:
        ``(logits (B, T, V), state)``; ``attention_weights`` ``(B, T, S)``.

    Example:
        >>> dec = LuongDecoder(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=12, score="general"))
        >>> state = dec.init_state(torch.randn(2, 7, 128), torch.zeros(1, 2, 128), torch.tensor([7, 3]))
        >>> dec(torch.ones(2, 5, dtype=torch.long), state)[0].shape
        torch.Size([2, 5, 12])
    """

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        H = cfg.hidden_size
        super().__init__(cfg, cfg.embed_dim + (H if cfg.input_feeding else 0), H)
        self.attention = LuongAttention(cfg.score, query_size=H, key_size=H, num_hiddens=cfg.attention_size or H)
        self.W_c = nn.Linear(2 * H, H, bias=False)
        self.input_feeding = cfg.input_feeding

    def init_state(self, enc_outputs: Tensor, enc_state: Any, src_lengths: Tensor) -> State:
        state = _store_hidden({}, enc_state)
        state.update(memory=enc_outputs, keys=_project_keys(self.attention, enc_outputs), src_lengths=src_lengths)
        if self.input_feeding:
            B, _, H = enc_outputs.shape
            state["feed"] = enc_outputs.new_zeros(B, H)  # h̃_0
        return state

    def _attentional(self, out: Tensor, state: State) -> Tensor:
        """``h̃ = tanh(W_c [c; h])`` for RNN outputs ``out`` ``(B, T, H)``."""
        context = _attend(self.attention, out, state["keys"], state["memory"], state["src_lengths"])  # (B, T, H)
        return torch.tanh(self.W_c(torch.cat([context, out], dim=-1)))  # (B, T, 2H) -> (B, T, H)

    def forward(self, tgt_in: Tensor, state: State) -> tuple[Tensor, State]:
        emb = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        if not self.input_feeding:
            # No step depends on an earlier attention: one RNN call, one batched attention.
            out, state = self._run(emb, state)  # (B, T, H)
            h_tilde = self._attentional(out, state)
            self._attention_weights = self.attention.attention_weights.detach()
            return self.fc(self.head_drop(h_tilde)), state
        outputs, weights = [], []
        for t in range(emb.shape[1]):
            x = torch.cat([emb[:, t : t + 1], state["feed"].unsqueeze(1)], dim=-1)  # (B, 1, E + H)
            out, state = self._run(x, state)  # (B, 1, H)
            h_tilde = self._attentional(out, state)  # (B, 1, H)
            state["feed"] = h_tilde.squeeze(1)
            outputs.append(h_tilde)
            weights.append(self.attention.attention_weights)
        self._attention_weights = torch.cat(weights, dim=1).detach()  # (B, T, S)
        return self.fc(self.head_drop(torch.cat(outputs, dim=1))), state


# ----------------------------------------------------------------------------- model

_DECODERS: dict[str, type[_RecurrentDecoder]] = {
    "none": RNNDecoder,
    "bahdanau": BahdanauDecoder,
    "luong": LuongDecoder,
}


class RNNSeq2Seq(EncoderDecoder):
    """A recurrent encoder–decoder: :class:`RNNEncoder` + the decoder ``attention`` names.

    Args:
        cfg: A :class:`Seq2SeqConfig`. Keyword arguments override its fields.
        attention: ``"none"`` (:class:`RNNDecoder`), ``"bahdanau"``
            (:class:`BahdanauDecoder`) or ``"luong"`` (:class:`LuongDecoder`).
            Defaults to ``"bahdanau"``.

    Call arguments:
        See :class:`EncoderDecoder`.

    Returns:
        ``(B, T, V)`` logits.

    Example:
        >>> net = RNNSeq2Seq(src_vocab_size=30, tgt_vocab_size=14, attention="luong", score="dot")
        >>> net(torch.randint(4, 30, (2, 9)), torch.tensor([9, 5]), torch.ones(2, 4, dtype=torch.long)).shape
        torch.Size([2, 4, 14])
    """

    def __init__(
        self,
        cfg: Seq2SeqConfig | None = None,
        attention: Literal["none", "bahdanau", "luong"] = "bahdanau",
        **overrides: Any,
    ) -> None:
        cfg = Seq2SeqConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        cfg.check()
        if attention not in _DECODERS:
            raise ValueError(f"attention must be one of {sorted(_DECODERS)}, got {attention!r}.")
        super().__init__(RNNEncoder(cfg), _DECODERS[attention](cfg), **cfg._encoder_decoder_kwargs())
        self.cfg = cfg
        self.attention_kind = attention


@register_model
def seq2seq_rnn(**kwargs: Any) -> RNNSeq2Seq:
    """GRU encoder–decoder without attention: the fixed context vector (Cho et al., 2014)."""
    return RNNSeq2Seq(Seq2SeqConfig(**kwargs), attention="none")


@register_model
def seq2seq_bahdanau(**kwargs: Any) -> RNNSeq2Seq:
    """GRU encoder–decoder with additive attention at every step (Bahdanau et al., 2015)."""
    return RNNSeq2Seq(Seq2SeqConfig(**kwargs), attention="bahdanau")


@register_model
def seq2seq_luong(**kwargs: Any) -> RNNSeq2Seq:
    """GRU encoder–decoder with Luong attention (``score="dot"|"general"|"concat"``), input feeding."""
    return RNNSeq2Seq(Seq2SeqConfig(**kwargs), attention="luong")
