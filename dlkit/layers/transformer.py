"""Transformer encoder and decoder layers and stacks, drop-in for their ``torch.nn`` namesakes.

Each layer is attention + a position-wise feed-forward network, each wrapped in a
residual connection and layer normalisation, either after the residual (``norm_first
=False``, the original "post-LN" Transformer) or before the sub-block (``norm_first=
True``, "pre-LN", which trains more stably when deep)::

    post-LN: x = norm(x + block(x))        pre-LN: x = x + block(norm(x))

Constructor arguments, state_dict keys and outputs are those of
``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` /
``TransformerEncoder`` / ``TransformerDecoder``, built from dlkit's
``MultiheadAttention``, ``LayerNorm``, ``Dropout`` and activations. There is no
nested-tensor "fast path": eval mode runs the same code as training.

Masks are passed to ``MultiheadAttention`` (bool ``True`` = blocked, or float added
to the scores). ``is_causal=True`` without a mask applies the causal mask (torch
raises there); with a mask given it is only a hint and the mask is used.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from dlkit.layers.activations import get_activation
from dlkit.layers.attention import MultiheadAttention
from dlkit.layers.dropout import Dropout
from dlkit.layers.normalization import LayerNorm

__all__ = [
    "generate_square_subsequent_mask",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerDecoder",
]

Activation = str | Callable[[Tensor], Tensor] | nn.Module


def generate_square_subsequent_mask(
    sz: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Causal mask: position ``i`` may attend to positions ``<= i`` only.

    Args:
        sz: Sequence length.
        device: Device of the mask. Defaults to None.
        dtype: Float dtype of the mask. Defaults to None (the default dtype).

    Returns:
        A float ``(sz, sz)`` tensor, ``-inf`` above the diagonal and ``0`` elsewhere,
        equal to ``torch.nn.Transformer.generate_square_subsequent_mask(sz)``.

    >>> generate_square_subsequent_mask(3)
    tensor([[0., -inf, -inf],
            [0., 0., -inf],
            [0., 0., 0.]])
    """
    return torch.full((sz, sz), float("-inf"), device=device, dtype=dtype).triu(diagonal=1)


# ----------------------------------------------------------------------------- helpers


def _check_layer_args(owner: str, d_model: int, nhead: int, dropout: float) -> None:
    if d_model <= 0 or nhead <= 0:
        raise ValueError(
            f"{owner}: d_model and nhead must be positive, got d_model={d_model}, nhead={nhead}"
        )
    if d_model % nhead != 0:
        raise ValueError(f"{owner}: d_model ({d_model}) must be divisible by nhead ({nhead})")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"{owner}: dropout probability must be in [0, 1], got {dropout}")


def _check_sequence(owner: str, name: str, x: Tensor, d_model: int, batch_first: bool) -> None:
    if x.dim() not in (2, 3) or x.shape[-1] != d_model:
        layout = f"(N, T, {d_model})" if batch_first else f"(T, N, {d_model})"
        raise ValueError(
            f"{owner}: {name} expected shape {layout} or unbatched (T, {d_model}), "
            f"got {tuple(x.shape)}"
        )


def _attend(
    owner: str,
    names: str,
    attn: MultiheadAttention,
    x: Tensor,
    kv: Tensor,
    mask: Tensor | None,
    key_padding_mask: Tensor | None,
    is_causal: bool,
) -> Tensor:
    """Run ``attn(x, kv, kv)`` without weights; name the caller's masks in errors."""
    try:
        return attn(
            x,
            kv,
            kv,
            attn_mask=mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )[0]
    except ValueError as err:
        # The user passed e.g. `src_mask`; MultiheadAttention only knows `attn_mask`.
        raise ValueError(f"{owner}: {names} rejected by attention: {err}") from err


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    if n <= 0:
        raise ValueError(f"num_layers must be positive, got {n}")
    # Independent copies that start from the same weights, as torch does.
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


# ----------------------------------------------------------------------------- layers


class TransformerEncoderLayer(nn.Module):
    """Self-attention and a feed-forward network, each with residual + LayerNorm.

    Same constructor, state_dict (``self_attn.*``, ``linear1``, ``linear2``,
    ``norm1``, ``norm2``) and outputs as ``torch.nn.TransformerEncoderLayer``.

    Args:
        d_model: Features per token; divisible by ``nhead``.
        nhead: Number of attention heads.
        dim_feedforward: Hidden size of the feed-forward network. Defaults to 2048.
        dropout: Dropout probability on attention weights, the feed-forward hidden
            layer and both residual branches. Defaults to 0.1.
        activation: Feed-forward activation: a name (``"relu"``, ``"gelu"``, or any
            name :func:`dlkit.layers.get_activation` knows), a module or a callable.
            Defaults to ``"relu"``.
        layer_norm_eps: Epsilon of the layer norms. Defaults to 1e-5.
        batch_first: Inputs are ``(N, S, E)`` instead of ``(S, N, E)``. Defaults to False.
        norm_first: Pre-LN (normalise before each sub-block) instead of post-LN.
            Defaults to False.
        bias: Learn biases in the linear layers and layer norms. Defaults to True.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.

    Call arguments:
        src: ``(S, N, E)``, ``(N, S, E)`` if ``batch_first``, or unbatched ``(S, E)``.
        src_mask: ``(S, S)`` or ``(N * nhead, S, S)``, bool or float. Defaults to None.
        src_key_padding_mask: ``(N, S)`` (``(S,)`` unbatched), bool ``True`` =
            padding, or float. Defaults to None.
        is_causal: Apply a causal mask (see the module notes). Defaults to False.

    Returns:
        A tensor of the shape of ``src``.

    >>> layer = TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32,
    ...                                 batch_first=True)
    >>> layer(torch.randn(2, 10, 16)).shape
    torch.Size([2, 10, 16])
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_layer_args("TransformerEncoderLayer", d_model, nhead, dropout)
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **factory
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = get_activation(activation)
        self.d_model, self.batch_first = d_model, batch_first

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        _check_sequence("TransformerEncoderLayer", "src", src, self.d_model, self.batch_first)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(
        self, x: Tensor, mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        x = _attend(
            "TransformerEncoderLayer",
            "src_mask / src_key_padding_mask",
            self.self_attn,
            x,
            x,
            mask,
            key_padding_mask,
            is_causal,
        )
        return self.dropout1(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout2(x)


class TransformerDecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder memory, and a feed-forward
    network, each with residual + LayerNorm.

    Same constructor, state_dict (``self_attn.*``, ``multihead_attn.*``,
    ``linear1``, ``linear2``, ``norm1..3``) and outputs as
    ``torch.nn.TransformerDecoderLayer``.

    Args:
        d_model: Features per token; divisible by ``nhead``.
        nhead: Number of attention heads.
        dim_feedforward: Hidden size of the feed-forward network. Defaults to 2048.
        dropout: Dropout probability on attention weights, the feed-forward hidden
            layer and the three residual branches. Defaults to 0.1.
        activation: Feed-forward activation: a name, a module or a callable.
            Defaults to ``"relu"``.
        layer_norm_eps: Epsilon of the layer norms. Defaults to 1e-5.
        batch_first: Inputs are ``(N, T, E)`` instead of ``(T, N, E)``. Defaults to False.
        norm_first: Pre-LN instead of post-LN. Defaults to False.
        bias: Learn biases in the linear layers and layer norms. Defaults to True.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.

    Call arguments:
        tgt: ``(T, N, E)``, ``(N, T, E)`` if ``batch_first``, or unbatched ``(T, E)``.
        memory: Encoder output ``(S, N, E)``, ``(N, S, E)`` or ``(S, E)``.
        tgt_mask: ``(T, T)`` or ``(N * nhead, T, T)``. Defaults to None.
        memory_mask: ``(T, S)`` or ``(N * nhead, T, S)``. Defaults to None.
        tgt_key_padding_mask: ``(N, T)``. Defaults to None.
        memory_key_padding_mask: ``(N, S)``. Defaults to None.
        tgt_is_causal: Apply a causal mask to the self-attention. Defaults to False.
        memory_is_causal: Apply a causal mask to the memory attention.
            Defaults to False.

    Returns:
        A tensor of the shape of ``tgt``.

    >>> layer = TransformerDecoderLayer(d_model=16, nhead=4, dim_feedforward=32,
    ...                                 batch_first=True)
    >>> tgt, memory = torch.randn(2, 7, 16), torch.randn(2, 10, 16)
    >>> layer(tgt, memory, tgt_is_causal=True).shape
    torch.Size([2, 7, 16])
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_layer_args("TransformerDecoderLayer", d_model, nhead, dropout)
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **factory
        )
        self.multihead_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **factory
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = get_activation(activation)
        self.d_model, self.batch_first = d_model, batch_first

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        owner = "TransformerDecoderLayer"
        _check_sequence(owner, "tgt", tgt, self.d_model, self.batch_first)
        _check_sequence(owner, "memory", memory, self.d_model, self.batch_first)
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(
                self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal
            )
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(
                x
                + self._mha_block(
                    x, memory, memory_mask, memory_key_padding_mask, memory_is_causal
                )
            )
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(
        self, x: Tensor, mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        x = _attend(
            "TransformerDecoderLayer",
            "tgt_mask / tgt_key_padding_mask",
            self.self_attn,
            x,
            x,
            mask,
            key_padding_mask,
            is_causal,
        )
        return self.dropout1(x)

    def _mha_block(
        self,
        x: Tensor,
        memory: Tensor,
        mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
    ) -> Tensor:
        x = _attend(
            "TransformerDecoderLayer",
            "memory_mask / memory_key_padding_mask",
            self.multihead_attn,
            x,
            memory,
            mask,
            key_padding_mask,
            is_causal,
        )
        return self.dropout2(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout3(x)


# ----------------------------------------------------------------------------- stacks


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` copies of an encoder layer, then an optional norm.

    Same constructor, state_dict (``layers.0.*``, ``layers.1.*``, ..., ``norm.*``)
    and outputs as ``torch.nn.TransformerEncoder``. The layers are deep copies of
    ``encoder_layer``, so they start with equal weights (as in torch).

    Args:
        encoder_layer: The layer to copy, e.g. a :class:`TransformerEncoderLayer`.
        num_layers: Number of copies.
        norm: Final normalisation, e.g. ``LayerNorm(d_model)`` for pre-LN stacks.
            Defaults to None.
        enable_nested_tensor: Accepted for compatibility with torch and ignored
            (dlkit has no nested-tensor fast path). Defaults to True.
        mask_check: Accepted for compatibility and ignored. Defaults to True.

    Call arguments:
        src: ``(S, N, E)``, ``(N, S, E)`` if the layers are ``batch_first``, or ``(S, E)``.
        mask: ``(S, S)`` or ``(N * nhead, S, S)``, given to every layer. Defaults to None.
        src_key_padding_mask: ``(N, S)``. Defaults to None.
        is_causal: Apply a causal mask in every layer; None means False.
            Defaults to None.

    Returns:
        A tensor of the shape of ``src``.

    >>> layer = TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    >>> encoder = TransformerEncoder(layer, num_layers=2)
    >>> encoder(torch.randn(2, 10, 16)).shape
    torch.Size([2, 10, 16])
    """

    def __init__(
        self,
        encoder_layer: nn.Module,
        num_layers: int,
        norm: nn.Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ) -> None:
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        x = src
        for layer in self.layers:
            x = layer(
                x,
                src_mask=mask,
                src_key_padding_mask=src_key_padding_mask,
                is_causal=bool(is_causal),
            )
        if self.norm is not None:
            x = self.norm(x)
        return x


class TransformerDecoder(nn.Module):
    """A stack of ``num_layers`` copies of a decoder layer, then an optional norm.

    Same constructor, state_dict (``layers.N.*``, ``norm.*``) and outputs as
    ``torch.nn.TransformerDecoder``; the layers are deep copies of ``decoder_layer``.

    Args:
        decoder_layer: The layer to copy, e.g. a :class:`TransformerDecoderLayer`.
        num_layers: Number of copies.
        norm: Final normalisation. Defaults to None.

    Call arguments:
        tgt: ``(T, N, E)``, ``(N, T, E)`` if the layers are ``batch_first``, or ``(T, E)``.
        memory: Encoder output ``(S, N, E)``, ``(N, S, E)`` or ``(S, E)``.
        tgt_mask: ``(T, T)`` or ``(N * nhead, T, T)``. Defaults to None.
        memory_mask: ``(T, S)`` or ``(N * nhead, T, S)``. Defaults to None.
        tgt_key_padding_mask: ``(N, T)``. Defaults to None.
        memory_key_padding_mask: ``(N, S)``. Defaults to None.
        tgt_is_causal: Causal self-attention in every layer; None means False.
            Defaults to None.
        memory_is_causal: Causal memory attention. Defaults to False.

    Returns:
        A tensor of the shape of ``tgt``.

    >>> layer = TransformerDecoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    >>> decoder = TransformerDecoder(layer, num_layers=2)
    >>> decoder(torch.randn(2, 7, 16), torch.randn(2, 10, 16), tgt_is_causal=True).shape
    torch.Size([2, 7, 16])
    """

    def __init__(
        self, decoder_layer: nn.Module, num_layers: int, norm: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> Tensor:
        x = tgt
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=bool(tgt_is_causal),
                memory_is_causal=memory_is_causal,
            )
        if self.norm is not None:
            x = self.norm(x)
        return x
