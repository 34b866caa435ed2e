"""Attention's shared parts: masked softmax, the mask helpers, and multi-head attention.

``MultiheadAttention`` is a drop-in replacement for ``torch.nn.MultiheadAttention``:
same constructor, state_dict and call signature, same outputs and gradients. The
classic single-head score layers (additive, Luong, dot-product) are in
:mod:`dlkit.layers.attention_scoring`.

Masks follow ``torch.nn.MultiheadAttention``: in a bool mask ``True`` means "do not
attend"; a float mask is added to the scores (``-inf`` blocks a position). A query
whose keys are all masked gets all-zero weights (so a zero context vector), as in
``torch.nn.functional.scaled_dot_product_attention``; note that plain ``torch.softmax``
and ``torch.nn.MultiheadAttention(need_weights=True)`` give NaN there instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlkit.layers.dropout import Dropout

# format_shape, check_dropout_p and check_mask_dtype are shared with
# dlkit.layers.attention_scoring; they are helpers, so dlkit.layers does not re-export them.
__all__ = [
    "MultiheadAttention",
    "masked_softmax",
]


# ----------------------------------------------------------------------------- helpers


def format_shape(t: Tensor | tuple[int, ...]) -> str:
    """Format a shape for an error message: ``(2, 3)`` rather than ``torch.Size([2, 3])``.

    Args:
        t: A tensor (its shape is used) or a tuple of sizes.

    >>> format_shape(torch.zeros(2, 3)), format_shape((4,))
    ('(2, 3)', '(4,)')
    """
    dims = tuple(t.shape) if isinstance(t, Tensor) else tuple(t)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def check_dropout_p(owner: str, p: float) -> None:
    """Raise a ValueError naming ``owner`` unless the dropout probability ``p`` is in [0, 1].

    >>> check_dropout_p("MyAttention", 0.1)
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: dropout probability must be in [0, 1], got {p}")


def check_mask_dtype(owner: str, name: str, mask: Tensor) -> None:
    """Raise a ValueError naming ``owner`` and ``name`` unless ``mask`` is bool or floating point.

    >>> check_mask_dtype("MyAttention", "key_padding_mask", torch.zeros(2, 5, dtype=torch.bool))
    """
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise ValueError(
            f"{owner}: {name} must be a bool or floating-point tensor, got {mask.dtype}"
        )


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Turn a bool mask (True = blocked) into a float one to add to scores."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)


def _softmax_zero_empty_rows(scores: Tensor) -> Tensor:
    """Softmax over the last axis; rows that are entirely ``-inf`` get all-zero weights."""
    # Softmax of an all -inf row is 0/0 = NaN, and the NaN would leak into the
    # gradient of every key. Give such rows finite scores first, zero them after.
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)
    return weights.masked_fill(empty, 0.0)


# ----------------------------------------------------------------------------- masked softmax


def masked_softmax(
    scores: Tensor, valid_lens: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    """Softmax over the last axis that gives exactly zero weight to masked positions.

    Masked scores are set to ``-inf`` before the softmax, so their weight is exactly
    0. A row in which every position is masked returns all zeros (not NaN), as
    ``torch.nn.functional.scaled_dot_product_attention`` does.

    Args:
        scores: Attention scores of shape ``(B, ..., K)``, usually ``(B, Q, K)``.
        valid_lens: Number of leading positions each row may attend to, of shape
            ``(B,)`` (same for every query) or ``scores.shape[:-1]`` (per query,
            e.g. ``(B, Q)``). Defaults to None.
        mask: A mask broadcastable to ``scores``: bool with ``True`` = masked, or
            float, added to the scores (``-inf`` = masked). Defaults to None.

    Returns:
        Weights of the same shape as ``scores``, summing to 1 (or 0 for fully
        masked rows) over the last axis.

    >>> w = masked_softmax(torch.zeros(1, 2, 4), torch.tensor([3]))
    >>> w[0, 0]
    tensor([0.3333, 0.3333, 0.3333, 0.0000])
    """
    if valid_lens is None and mask is None:
        return torch.softmax(scores, dim=-1)
    K = scores.shape[-1]
    if valid_lens is not None:
        if valid_lens.dim() == 1 and valid_lens.shape[0] == scores.shape[0]:
            # (B,) -> (B, 1, ..., 1): one length for every query of a sample
            lens = valid_lens.reshape(-1, *([1] * (scores.dim() - 1)))
        elif tuple(valid_lens.shape) == tuple(scores.shape[:-1]):
            lens = valid_lens.unsqueeze(-1)  # (B, Q) -> (B, Q, 1)
        else:
            raise ValueError(
                f"masked_softmax: valid_lens expected shape ({scores.shape[0]},) or "
                f"{format_shape(scores.shape[:-1])} for scores {format_shape(scores)}, "
                f"got {format_shape(valid_lens)}"
            )
        beyond = torch.arange(K, device=scores.device) >= lens  # (B, Q or 1, K)
        scores = scores.masked_fill(beyond, float("-inf"))
    if mask is not None:
        check_mask_dtype("masked_softmax", "mask", mask)
        try:
            broadcast = torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != scores.shape:
            raise ValueError(
                f"masked_softmax: mask expected a shape broadcastable to scores "
                f"{format_shape(scores)}, got {format_shape(mask)}"
            )
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask, float("-inf"))
        else:
            scores = scores + mask
    return _softmax_zero_empty_rows(scores)


# ----------------------------------------------------------------------------- multi-head


class MultiheadAttention(nn.Module):
    """Multi-head attention, a drop-in replacement for ``torch.nn.MultiheadAttention``.

    Queries, keys and values are projected, split into ``num_heads`` heads of
    ``embed_dim // num_heads`` features, attended with scaled dot products, and the
    heads are concatenated and projected back: ``out_proj(concat_h softmax(q_h k_h^T
    / sqrt(d_h) + mask) v_h)``. Parameter names and shapes are those of torch, so a
    torch state_dict loads with ``strict=True``.

    When no weights are requested (``need_weights=False``) and ``use_fast_path`` is
    True, the per-head attention runs in ``torch.nn.functional.scaled_dot_product_attention``
    (a fused kernel); otherwise it is the explicit matmul + softmax below. Both give
    the same result.

    Differences from torch, where torch raises or is inconsistent: ``is_causal=True``
    without ``attn_mask`` builds the causal mask (torch raises); with ``attn_mask``
    given, ``is_causal`` is only a hint and the mask is always used; a query with
    every key masked gets zero weights in both paths (torch gives NaN when
    ``need_weights=True``).

    Args:
        embed_dim: Model size ``E``; must be divisible by ``num_heads``.
        num_heads: Number of parallel heads.
        dropout: Dropout probability on the attention weights (training only).
            Defaults to 0.0.
        bias: Add biases to the input and output projections. Defaults to True.
        add_bias_kv: Append a learned key and value to the sequence. Defaults to False.
        add_zero_attn: Append an all-zero key and value to the sequence. Defaults to False.
        kdim: Features per key. Defaults to None (= ``embed_dim``).
        vdim: Features per value. Defaults to None (= ``embed_dim``).
        batch_first: Inputs are ``(N, L, E)`` instead of ``(L, N, E)``. Defaults to False.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.

    Call arguments:
        query: ``(L, N, E)``, ``(N, L, E)`` if ``batch_first``, or ``(L, E)`` unbatched.
        key: ``(S, N, kdim)``, ``(N, S, kdim)`` or ``(S, kdim)``.
        value: ``(S, N, vdim)``, ``(N, S, vdim)`` or ``(S, vdim)``.
        key_padding_mask: ``(N, S)`` or ``(S,)``; bool ``True`` = ignore this key, or
            float added to the scores. Defaults to None.
        need_weights: Also return the attention weights. Defaults to True.
        attn_mask: ``(L, S)`` or ``(N * num_heads, L, S)``; bool ``True`` = blocked,
            or float added to the scores. Defaults to None.
        average_attn_weights: Average the returned weights over heads. Defaults to True.
        is_causal: Query ``i`` may only attend to keys ``<= i``. Defaults to False.

    Returns:
        ``(attn_output, attn_weights)``: the output has the shape of ``query``; the
        weights are ``(N, L, S)`` averaged, ``(N, num_heads, L, S)`` per head (no
        ``N`` when unbatched), or None if ``need_weights=False``. ``S`` counts the
        extra key of ``add_bias_kv`` / ``add_zero_attn``.

    >>> mha = MultiheadAttention(embed_dim=16, num_heads=4, batch_first=True)
    >>> x = torch.randn(2, 5, 16)
    >>> out, w = mha(x, x, x)
    >>> out.shape, w.shape
    (torch.Size([2, 5, 16]), torch.Size([2, 5, 5]))
    """

    use_fast_path: bool = True

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"MultiheadAttention: embed_dim and num_heads must be positive, "
                f"got embed_dim={embed_dim}, num_heads={num_heads}"
            )
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        check_dropout_p("MultiheadAttention", dropout)
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        # torch's name: one packed (3E, E) projection exists only when all sizes agree
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        # dlkit's Dropout, so dropout schedules and MC dropout reach the attention weights;
        # `self.dropout` stays a float property, as in torch.
        self.attn_dropout = Dropout(dropout)
        self.batch_first = batch_first
        self.add_zero_attn = add_zero_attn

        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
        else:
            self.bias_k = self.bias_v = None
        self._reset_parameters()

    @property
    def dropout(self) -> float:
        """Dropout probability on the attention weights (a float, as in torch)."""
        return self.attn_dropout.p

    @dropout.setter
    def dropout(self, p: float) -> None:
        check_dropout_p("MultiheadAttention", p)
        self.attn_dropout.p = p

    def _reset_parameters(self) -> None:
        """Initialise like torch: Xavier-uniform projections, zero biases."""
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.k_proj_weight)
            nn.init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"batch_first={self.batch_first}"
        )

    # -- input handling -------------------------------------------------------------

    def _layout(self, batched: bool, length: str, features: str) -> str:
        if not batched:
            return f"({length}, {features})"
        return f"(N, {length}, {features})" if self.batch_first else f"({length}, N, {features})"

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        if query.dim() not in (2, 3):
            raise ValueError(
                f"MultiheadAttention: query expected a 3-D batched {self._layout(True, 'L', 'E')} "
                f"or 2-D unbatched (L, E) tensor, got {query.dim()}-D shape {format_shape(query)}"
            )
        batched = query.dim() == 3
        for name, t, size, n in (
            ("query", query, self.embed_dim, "L"),
            ("key", key, self.kdim, "S"),
            ("value", value, self.vdim, "S"),
        ):
            if t.dim() != query.dim() or t.shape[-1] != size:
                raise ValueError(
                    f"MultiheadAttention: {name} expected shape "
                    f"{self._layout(batched, n, str(size))}, got {format_shape(t)}"
                )
        seq = 0 if not batched or not self.batch_first else 1
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(
                f"MultiheadAttention: key and value must agree in all but the last "
                f"dimension, got {format_shape(key)} and {format_shape(value)}"
            )
        if batched and query.shape[1 - seq] != key.shape[1 - seq]:
            raise ValueError(
                f"MultiheadAttention: query and key must have the same batch size N, "
                f"got {format_shape(query)} and {format_shape(key)}"
            )

    def _merge_masks(
        self,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
        N: int,
        L: int,
        S: int,
        batched: bool,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor | None:
        """Validate both masks and combine them into one additive float mask.

        Returns None or a tensor broadcastable to the scores ``(N, H, L, S)``.
        """
        H = self.num_heads
        if attn_mask is None and is_causal:
            # top-left aligned like scaled_dot_product_attention: query i sees keys <= i
            attn_mask = torch.ones(L, S, dtype=torch.bool, device=device).triu(1)
        mask = None
        if attn_mask is not None:
            check_mask_dtype("MultiheadAttention", "attn_mask", attn_mask)
            if tuple(attn_mask.shape) == (L, S):
                mask = _additive(attn_mask, dtype)  # (L, S) broadcasts over N and H
            elif tuple(attn_mask.shape) == (N * H, L, S):
                mask = _additive(attn_mask, dtype).view(N, H, L, S)  # (N*H, L, S) -> (N, H, L, S)
            else:
                rows = "N*num_heads" if batched else "num_heads"
                raise ValueError(
                    f"MultiheadAttention: attn_mask expected shape (L, S) = ({L}, {S}) or "
                    f"({rows}, L, S) = ({N * H}, {L}, {S}), got {format_shape(attn_mask)}"
                )
        if key_padding_mask is not None:
            check_mask_dtype("MultiheadAttention", "key_padding_mask", key_padding_mask)
            expected = (N, S) if batched else (S,)
            if tuple(key_padding_mask.shape) != expected:
                names = "(N, S)" if batched else "(S,)"
                raise ValueError(
                    f"MultiheadAttention: key_padding_mask expected shape {names} = "
                    f"{format_shape(expected)}, got {format_shape(key_padding_mask)}"
                )
            # (N, S) -> (N, 1, 1, S): the same keys are hidden from every head and query
            padding = _additive(key_padding_mask, dtype).view(N, 1, 1, S)
            mask = padding if mask is None else mask + padding
        return mask

    # -- forward --------------------------------------------------------------------

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        self._check_inputs(query, key, value)
        batched = query.dim() == 3
        self_attention = query is key and key is value
        # Work batch-first internally: (N, L, E).
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        N, L, E = query.shape
        S = key.shape[1]
        H, D = self.num_heads, self.head_dim
        mask = self._merge_masks(
            attn_mask, key_padding_mask, is_causal, N, L, S, batched, query.dtype, query.device
        )
        only_causal = is_causal and attn_mask is None and key_padding_mask is None

        q, k, v = self._project(query, key, value, self_attention)  # (N, L, E), (N, S, E) x2
        if self.bias_k is not None:
            # one learned key/value every query may attend to
            k = torch.cat([k, self.bias_k.expand(N, 1, E)], dim=1)  # (N, S+1, E)
            v = torch.cat([v, self.bias_v.expand(N, 1, E)], dim=1)
            mask = _append_open_key(mask)
        q = q.view(N, L, H, D).transpose(1, 2)  # (N, L, E) -> (N, H, L, D)
        k = k.view(N, -1, H, D).transpose(1, 2)  # (N, S', E) -> (N, H, S', D)
        v = v.view(N, -1, H, D).transpose(1, 2)
        if self.add_zero_attn:
            # an all-zero key scores 0, giving each query a "none of the above" option
            zeros = q.new_zeros(N, H, 1, D)
            k = torch.cat([k, zeros], dim=2)  # (N, H, S'+1, D)
            v = torch.cat([v, zeros], dim=2)
            mask = _append_open_key(mask)
        p = self.attn_dropout.p if self.attn_dropout.training else 0.0

        weights = None
        if need_weights or not self.use_fast_path:
            # (N, H, L, D) @ (N, H, D, S') -> (N, H, L, S')
            scores = (q * D**-0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
                weights = _softmax_zero_empty_rows(scores)
            else:
                weights = torch.softmax(scores, dim=-1)
            weights = self.attn_dropout(weights)
            context = weights @ v  # (N, H, L, D)
        else:
            # A mask built only from is_causal has all the kernel needs in the flag
            # (same top-left alignment), so it need not be materialised per call.
            plain_causal = only_causal and k.shape[2] == S
            context = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=None if plain_causal else mask,
                dropout_p=p,
                is_causal=plain_causal,
            )  # (N, H, L, D)

        if batched and not self.batch_first:
            context = context.permute(2, 0, 1, 3).reshape(L, N, E)  # (N, H, L, D) -> (L, N, E)
        else:
            context = context.transpose(1, 2).reshape(N, L, E)  # (N, H, L, D) -> (N, L, E)
        out = self.out_proj(context)
        if not batched:
            out = out.squeeze(0)  # (1, L, E) -> (L, E)

        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)  # (N, H, L, S') -> (N, L, S')
        if not batched:
            weights = weights.squeeze(0)
        return out, weights

    def _project(
        self, query: Tensor, key: Tensor, value: Tensor, self_attention: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Input projections: (N, L, E), (N, S, kdim), (N, S, vdim) -> three (N, *, E)."""
        E = self.embed_dim
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.split(E)
        else:
            b_q = b_k = b_v = None
        if self._qkv_same_embed_dim:
            if self_attention:
                # one (3E, E) matmul instead of three (E, E) ones
                qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)  # (N, L, 3E)
                q, k, v = qkv.split(E, dim=-1)
                return q, k, v
            w_q, w_k, w_v = self.in_proj_weight.split(E)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)


def _append_open_key(mask: Tensor | None) -> Tensor | None:
    """Extend a (..., S) additive mask by one key every query may attend to."""
    if mask is None:
        return None
    return torch.cat([mask, mask.new_zeros(*mask.shape[:-1], 1)], dim=-1)  # (..., S+1)
