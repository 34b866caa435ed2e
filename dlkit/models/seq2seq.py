"""Recurrent encoder–decoders: the fixed-context RNN, Bahdanau and Luong attention.

They implement the interface of :mod:`dlkit.models.encoder_decoder`. Recurrent hidden
states are kept batch-first ``(B, L, H)`` in the decoder state (so beams reorder them
like every other entry) and transposed to the ``(L, B, H)`` the RNN layers take.

Padding: encoders run the recurrent layers with ``lengths=``, so padded source steps
neither change the final state nor produce outputs (they are zero), and every attention
masks them (``valid_lens``): their weights are exactly 0.

Example:
    >>> net = create_model("seq2seq_bahdanau", src_vocab_size=30, tgt_vocab_size=14)
    >>> src, lengths = torch.randint(4, 30, (2, 9)), torch.tensor([9, 5])
    >>> tgt_in = torch.randint(4, 14, (2, 11))
    >>> net(src, lengths, tgt_in).shape, net.attention_weights.shape
    (torch.Size([2, 11, 14]), torch.Size([2, 11, 9]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from dlkit.layers import GRU, LSTM, AdditiveAttention, Dropout, LuongAttention
from dlkit.models.encoder_decoder import (
    AttentionDecoder,
    Decoder,
    Encoder,
    EncoderDecoder,
    State,
    VocabConfig,
)
from dlkit.models.registry import register_model

__all__ = [
    "BahdanauDecoder",
    "LuongDecoder",
    "RNNDecoder",
    "RNNEncoder",
    "RNNSeq2Seq",
    "Seq2SeqConfig",
]

_CELLS = {"gru": GRU, "lstm": LSTM}


# ----------------------------------------------------------------------------- config


@dataclass
class Seq2SeqConfig(VocabConfig):
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



def _attend(attention: AdditiveAttention | LuongAttention, queries: Tensor, state: State) -> Tensor:
    """Context ``(B, Q, H)`` of ``queries`` ``(B, Q, H)`` over the state's memory, padding masked."""
    memory = state["memory"]  # (B, S, H): keys and values
    return attention(queries, memory, memory, valid_lens=state["src_lengths"], projected_keys=state["keys"])


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
        # The keys' projection does not depend on the step: computed once per source.
        keys = self.attention.project_keys(enc_outputs)
        state.update(memory=enc_outputs, keys=keys, src_lengths=src_lengths)
        return state

    def forward(self, tgt_in: Tensor, state: State) -> tuple[Tensor, State]:
        emb = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        outputs, weights = [], []
        for t in range(emb.shape[1]):
            query = state["hidden"][:, -1:]  # top layer's s_{t-1}: (B, 1, H)
            context = _attend(self.attention, query, state)  # (B, 1, H)
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
        keys = self.attention.project_keys(enc_outputs)  # once per source, as for Bahdanau
        state.update(memory=enc_outputs, keys=keys, src_lengths=src_lengths)
        if self.input_feeding:
            B, _, H = enc_outputs.shape
            state["feed"] = enc_outputs.new_zeros(B, H)  # h̃_0
        return state

    def _attentional(self, out: Tensor, state: State) -> Tensor:
        """``h̃ = tanh(W_c [c; h])`` for RNN outputs ``out`` ``(B, T, H)``."""
        context = _attend(self.attention, out, state)  # (B, T, H)
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

    group_layout = {
        "embeddings": ("encoder.embedding", "decoder.embedding"),
        "encoder": ("encoder.rnn",),
        "decoder": ("decoder.rnn",),
        "attention": ("decoder.attention", "decoder.W_c"),  # Bahdanau and Luong only
        "output": ("decoder.fc",),
    }

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
        super().__init__(RNNEncoder(cfg), _DECODERS[attention](cfg), **cfg.encoder_decoder_kwargs())
        self.cfg = cfg
        self.attention_kind = attention


@register_model(kind="seq2seq")
def seq2seq_rnn(**kwargs: Any) -> RNNSeq2Seq:
    """GRU encoder–decoder without attention: the fixed context vector (Cho et al., 2014)."""
    return RNNSeq2Seq(Seq2SeqConfig(**kwargs), attention="none")


@register_model(kind="seq2seq")
def seq2seq_bahdanau(**kwargs: Any) -> RNNSeq2Seq:
    """GRU encoder–decoder with additive attention at every step (Bahdanau et al., 2015)."""
    return RNNSeq2Seq(Seq2SeqConfig(**kwargs), attention="bahdanau")


@register_model(kind="seq2seq")
def seq2seq_luong(**kwargs: Any) -> RNNSeq2Seq:
    """GRU encoder–decoder with Luong attention (``score="dot"|"general"|"concat"``), input feeding."""
    return RNNSeq2Seq(Seq2SeqConfig(**kwargs), attention="luong")
