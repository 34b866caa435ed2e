"""The transformer encoder–decoder (Vaswani et al., 2017) on dlkit's seq2seq interface.

Token embeddings scaled by ``√d_model`` plus sinusoidal positions feed a stack of
:class:`dlkit.layers.TransformerEncoderLayer` (self-attention over the source, padding
masked) and of :class:`dlkit.layers.TransformerDecoderLayer` (causal self-attention over
the target prefix, then attention over the encoder memory, source padding masked); a
linear layer gives the next-token logits. The classes plug into
:class:`dlkit.models.encoder_decoder.EncoderDecoder`, so the ``Seq2Seq`` task trains and decodes
it like the recurrent models.

Decoding one token at a time (:meth:`EncoderDecoder.step`) recomputes the decoder over
the whole prefix generated so far (the state carries the memory, the source padding mask
and the prefix) instead of caching keys and values per layer: O(T²) work for a
``T``-token output, negligible for the short outputs this model is meant for here
(dates, short sentences), and the step is then exactly the teacher-forced computation.

Example:
    >>> net = create_model("transformer_seq2seq", src_vocab_size=30, tgt_vocab_size=14)
    >>> src, lengths = torch.randint(4, 30, (2, 9)), torch.tensor([9, 5])
    >>> net(src, lengths, torch.randint(4, 14, (2, 11))).shape, net.attention_weights.shape
    (torch.Size([2, 11, 14]), torch.Size([2, 11, 9]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from dlkit.layers import (
    Dropout,
    LayerNorm,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    generate_square_subsequent_mask,
)
from dlkit.models.encoder_decoder import (
    AttentionDecoder,
    Encoder,
    EncoderDecoder,
    State,
    VocabConfig,
)
from dlkit.models.registry import register_model

__all__ = [
    "TransformerSeq2Seq",
    "TransformerSeq2SeqConfig",
    "TransformerSeq2SeqDecoder",
    "TransformerSeq2SeqEncoder",
]


@dataclass
class TransformerSeq2SeqConfig(VocabConfig):
    """Hyper-parameters of :class:`TransformerSeq2Seq`; ``model/transformer_seq2seq.yaml`` fills them.

    Attributes:
        src_vocab_size: Source vocabulary size (``null`` in the config: filled from the data).
        tgt_vocab_size: Target vocabulary size (idem).
        pad_id: Padding id; masked as a key everywhere, its embedding is zero.
        bos_id: First decoder input.
        eos_id: End of a target sequence.
        d_model: Features per token in every layer; divisible by ``nhead``.
        nhead: Attention heads.
        num_encoder_layers: Encoder layers.
        num_decoder_layers: Decoder layers.
        dim_feedforward: Hidden size of each layer's feed-forward network.
        dropout: Dropout after the positional encoding, on attention weights, in the
            feed-forward networks and on the residual branches.
        drop_rate: Dropout before the output layer (the key every dlkit model config
            has; usually 0 here, ``dropout`` regularises the layers).
        activation: Feed-forward activation (``"relu"``, ``"gelu"``, ...).
        norm_first: Pre-LN layers (plus a final LayerNorm on each stack) instead of the
            original post-LN.
        share_embeddings: One embedding matrix for source, target and the output layer
            (Press & Wolf, 2017). Needs ``src_vocab_size == tgt_vocab_size`` (one
            joint vocabulary); the model refuses otherwise.
        max_len: Longest source or target sequence the positional table covers.
    """

    d_model: int = 128
    nhead: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dim_feedforward: int = 512
    dropout: float = 0.1
    drop_rate: float = 0.0
    activation: str = "relu"
    norm_first: bool = False
    share_embeddings: bool = False
    max_len: int = 256

    def check(self) -> None:
        """Raise a clear error for a missing vocabulary size or inconsistent sizes."""
        super().check()
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                "model.share_embeddings=true ties source, target and output embeddings, which needs one "
                f"joint vocabulary, got src_vocab_size={self.src_vocab_size} and tgt_vocab_size="
                f"{self.tgt_vocab_size}. Build a shared vocabulary in the data or set share_embeddings=false."
            )
        if self.d_model % self.nhead:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.nhead ({self.nhead}).")


def _embedding(vocab_size: int, d_model: int, pad_id: int) -> nn.Embedding:
    emb = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
    # std d^-1/2, so the √d-scaled embedding has unit scale like the positional table
    # (torch's default N(0, 1) would drown the positions by a factor √d).
    nn.init.normal_(emb.weight, std=d_model**-0.5)
    with torch.no_grad():
        emb.weight[pad_id].zero_()
    return emb


def _layer_stack(
    cfg: TransformerSeq2SeqConfig,
    layer_cls: type[TransformerEncoderLayer | TransformerDecoderLayer],
    stack_cls: type[TransformerEncoder | TransformerDecoder],
    num_layers: int,
) -> TransformerEncoder | TransformerDecoder:
    """``num_layers`` copies of a ``layer_cls`` built from ``cfg``, in a ``stack_cls``."""
    layer = layer_cls(
        cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout, cfg.activation,
        batch_first=True, norm_first=cfg.norm_first,
    )  # fmt: skip
    # Pre-LN leaves the last residual sum unnormalised: the stack ends with a LayerNorm.
    norm = LayerNorm(cfg.d_model) if cfg.norm_first else None
    return stack_cls(layer, num_layers, norm=norm)


def _padding_mask(lengths: Tensor, S: int) -> Tensor:
    """``(B, S)`` bool, True at the padded steps beyond each length."""
    return torch.arange(S, device=lengths.device) >= lengths.unsqueeze(1)  # (S,) vs (B, 1) -> (B, S)


class TransformerSeq2SeqEncoder(Encoder):
    """Embedding × √d_model + sinusoidal positions -> a stack of encoder layers.

    Args:
        cfg: A :class:`TransformerSeq2SeqConfig`.
        embedding: The source embedding, shared with the decoder when
            ``share_embeddings``. Defaults to a new one.

    Call arguments:
        src: ``(B, S)`` ids. src_lengths: ``(B,)``.

    Returns:
        ``(memory, padding_mask)``: ``(B, S, d_model)`` and the ``(B, S)`` bool mask of
        padded source steps (True = padding).

    Example:
        >>> enc = TransformerSeq2SeqEncoder(TransformerSeq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20))
        >>> memory, mask = enc(torch.randint(4, 20, (2, 7)), torch.tensor([7, 3]))
        >>> memory.shape, mask[1].tolist()
        (torch.Size([2, 7, 128]), [False, False, False, True, True, True, True])
    """

    def __init__(self, cfg: TransformerSeq2SeqConfig, embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        self.embedding = embedding or _embedding(cfg.src_vocab_size, cfg.d_model, cfg.pad_id)
        self.scale = math.sqrt(cfg.d_model)
        self.pos = SinusoidalPositionalEncoding(cfg.d_model, cfg.dropout, cfg.max_len, batch_first=True)
        self.layers = _layer_stack(cfg, TransformerEncoderLayer, TransformerEncoder, cfg.num_encoder_layers)

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        B, S = src.shape
        padding = _padding_mask(src_lengths, S)  # (B, S)
        x = self.pos(self.embedding(src) * self.scale)  # (B, S, d_model)
        return self.layers(x, src_key_padding_mask=padding), padding


class TransformerSeq2SeqDecoder(AttentionDecoder):
    """Embedding × √d_model + positions -> decoder layers (causal) -> linear to the vocabulary.

    The state holds the encoder ``memory`` ``(B, S, d)``, its ``src_padding_mask``
    ``(B, S)`` and the target ``prefix`` ``(B, P)`` decoded so far; ``forward`` runs the
    layers over ``[prefix; tgt_in]`` and returns the logits of the ``tgt_in`` positions.

    Args:
        cfg: A :class:`TransformerSeq2SeqConfig`.
        embedding: The target embedding (shared when ``share_embeddings``). Defaults to
            a new one.

    Call arguments:
        tgt_in: ``(B, T)`` ids. state: From :meth:`init_state` or an earlier call.

    Returns:
        ``(logits (B, T, V), state)``; ``attention_weights`` ``(B, T, S)`` are the last
        decoder layer's attention over the memory, averaged over heads.

    Example:
        >>> cfg = TransformerSeq2SeqConfig(src_vocab_size=20, tgt_vocab_size=12)
        >>> dec = TransformerSeq2SeqDecoder(cfg)
        >>> state = dec.init_state(torch.randn(2, 7, 128), None, torch.tensor([7, 3]))
        >>> dec(torch.ones(2, 5, dtype=torch.long), state)[0].shape
        torch.Size([2, 5, 12])
    """

    def __init__(self, cfg: TransformerSeq2SeqConfig, embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        self.embedding = embedding or _embedding(cfg.tgt_vocab_size, cfg.d_model, cfg.pad_id)
        self.scale = math.sqrt(cfg.d_model)
        self.pos = SinusoidalPositionalEncoding(cfg.d_model, cfg.dropout, cfg.max_len, batch_first=True)
        self.layers = _layer_stack(cfg, TransformerDecoderLayer, TransformerDecoder, cfg.num_decoder_layers)
        self.head_drop = Dropout(cfg.drop_rate)
        self.fc = nn.Linear(cfg.d_model, cfg.tgt_vocab_size)
        self.pad_id = cfg.pad_id
        # The layers call their attention with need_weights=False (the fused kernel); for
        # the last layer's memory attention, ask for the head-averaged weights and keep them.
        cross = self.layers.layers[-1].multihead_attn
        cross.register_forward_pre_hook(self._request_weights, with_kwargs=True)
        cross.register_forward_hook(self._keep_weights, with_kwargs=True)

    @staticmethod
    def _request_weights(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "need_weights": True, "average_attn_weights": True}

    def _keep_weights(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._cross_weights = output[1].detach()

    def init_state(self, enc_outputs: Tensor, enc_state: Any, src_lengths: Tensor) -> State:
        B, S, _ = enc_outputs.shape
        padding = enc_state if isinstance(enc_state, Tensor) else _padding_mask(src_lengths, S)
        prefix = torch.empty(B, 0, dtype=torch.long, device=enc_outputs.device)
        return {"memory": enc_outputs, "src_padding_mask": padding, "prefix": prefix}

    def forward(self, tgt_in: Tensor, state: State) -> tuple[Tensor, State]:
        P = state["prefix"].shape[1]
        tokens = torch.cat([state["prefix"], tgt_in], dim=1)  # (B, P + T)
        B, L = tokens.shape
        x = self.pos(self.embedding(tokens) * self.scale)  # (B, L, d_model)
        causal = generate_square_subsequent_mask(L, device=tokens.device, dtype=x.dtype)  # (L, L)
        self._cross_weights = None
        y = self.layers(
            x,
            state["memory"],
            tgt_mask=causal,
            tgt_key_padding_mask=tokens == self.pad_id,
            memory_key_padding_mask=state["src_padding_mask"],
            tgt_is_causal=True,
        )  # (B, L, d_model)
        if self._cross_weights is None:
            raise RuntimeError(
                "TransformerSeq2SeqDecoder: the last layer's memory attention returned no weights; "
                "the hooks that request them no longer match dlkit.layers.TransformerDecoderLayer."
            )
        self._attention_weights = self._cross_weights[:, P:].detach()  # (B, L, S) -> (B, T, S)
        return self.fc(self.head_drop(y[:, P:])), {**state, "prefix": tokens}


class TransformerSeq2Seq(EncoderDecoder):
    """The transformer encoder–decoder; always teacher-forced in ``forward``.

    Args:
        cfg: A :class:`TransformerSeq2SeqConfig`. Keyword arguments override its fields.

    Call arguments:
        See :class:`~dlkit.models.encoder_decoder.EncoderDecoder` (``teacher_forcing_ratio`` is
        ignored, with a warning when below 1).

    Returns:
        ``(B, T, V)`` logits.

    Example:
        >>> net = TransformerSeq2Seq(src_vocab_size=40, tgt_vocab_size=40, share_embeddings=True)
        >>> net.decoder.fc.weight is net.encoder.embedding.weight
        True
    """

    supports_free_running = False
    # With share_embeddings the output layer's weight is the embedding's, kept in "embeddings".
    group_layout = {
        "embeddings": ("encoder.embedding", "decoder.embedding"),
        "encoder": ("encoder.layers",),
        "decoder": ("decoder.layers",),
        "output": ("decoder.fc",),
    }

    def __init__(self, cfg: TransformerSeq2SeqConfig | None = None, **overrides: Any) -> None:
        cfg = TransformerSeq2SeqConfig(**{**(vars(cfg) if cfg else {}), **overrides})
        cfg.check()
        shared = _embedding(cfg.src_vocab_size, cfg.d_model, cfg.pad_id) if cfg.share_embeddings else None
        decoder = TransformerSeq2SeqDecoder(cfg, shared)
        if shared is not None:
            decoder.fc.weight = shared.weight  # (V, d_model) serves as the output projection too
        super().__init__(TransformerSeq2SeqEncoder(cfg, shared), decoder, **cfg.encoder_decoder_kwargs())
        self.cfg = cfg


@register_model(kind="seq2seq")
def transformer_seq2seq(**kwargs: Any) -> TransformerSeq2Seq:
    """Transformer encoder–decoder: d_model 128, 4 heads, 2 + 2 post-LN layers by default."""
    return TransformerSeq2Seq(TransformerSeq2SeqConfig(**kwargs))
