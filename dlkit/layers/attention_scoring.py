"""The classic attention score functions as layers (d2l's batch-first interface).

``NadarayaWatsonPooling``, ``DotProductAttention``, ``AdditiveAttention`` and
``LuongAttention`` are called as::

    layer(queries (B, Q, d_q), keys (B, K, d_k), values (B, K, d_v),
          valid_lens=None, key_padding_mask=None) -> (B, Q, d_v)

and keep the last ``(B, Q, K)`` weights in ``layer.attention_weights``. Masks follow
:func:`dlkit.layers.attention.masked_softmax`: padded keys get exactly zero weight.

The keys' part of the additive and Luong scores does not depend on the query, so a
decoder that attends over the same keys at every step projects them once with
``project_keys(keys)`` and passes the result as ``projected_keys=``; the output is the
same as without it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dlkit.layers.attention import check_dropout_p, check_mask_dtype, format_shape, masked_softmax
from dlkit.layers.dropout import Dropout

__all__ = [
    "AdditiveAttention",
    "DotProductAttention",
    "LuongAttention",
    "NadarayaWatsonPooling",
]

_LUONG_SCORES = ("dot", "general", "concat")


# ----------------------------------------------------------------------------- checks


def _check_qkv(
    owner: str,
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    query_size: int | None = None,
    key_size: int | None = None,
) -> None:
    """Validate the batch-first (B, Q, d_q), (B, K, d_k), (B, K, d_v) triple."""
    for name, t in (("queries", queries), ("keys", keys), ("values", values)):
        if t.dim() != 3:
            raise ValueError(
                f"{owner}: {name} expected a 3-D (B, length, features) tensor, "
                f"got {t.dim()}-D shape {format_shape(t)}"
            )
    B, Q, d_q = queries.shape
    _, K, d_k = keys.shape
    if keys.shape[0] != B or values.shape[0] != B:
        raise ValueError(
            f"{owner}: queries, keys and values must share the batch size, got "
            f"{format_shape(queries)}, {format_shape(keys)}, {format_shape(values)}"
        )
    if values.shape[1] != K:
        raise ValueError(
            f"{owner}: keys and values must have the same length K, got "
            f"keys {format_shape(keys)} and values {format_shape(values)}"
        )
    if query_size is not None and d_q != query_size:
        raise ValueError(
            f"{owner}: queries expected shape (B, Q, {query_size}), got {format_shape(queries)}"
        )
    if key_size is not None and d_k != key_size:
        raise ValueError(f"{owner}: keys expected shape (B, K, {key_size}), got {format_shape(keys)}")


def _key_padding_to_mask(
    owner: str, key_padding_mask: Tensor | None, B: int, K: int
) -> Tensor | None:
    """Check a (B, K) key padding mask and make it broadcast over queries: (B, 1, K)."""
    if key_padding_mask is None:
        return None
    check_mask_dtype(owner, "key_padding_mask", key_padding_mask)
    if tuple(key_padding_mask.shape) != (B, K):
        raise ValueError(
            f"{owner}: key_padding_mask expected shape (B, K) = ({B}, {K}), "
            f"got {format_shape(key_padding_mask)}"
        )
    return key_padding_mask.unsqueeze(1)



# ----------------------------------------------------------------------------- layers


class _ScoreAttention(nn.Module):
    """Shared body of the d2l-style layers: scores -> masked softmax -> weighted values."""

    attention_weights: Tensor | None

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        check_dropout_p(type(self).__name__, dropout)
        self.dropout = Dropout(dropout)
        self.attention_weights = None

    def score(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Return unnormalised scores of shape (B, Q, K)."""
        raise NotImplementedError

    def check_inputs(self, queries: Tensor, keys: Tensor, values: Tensor) -> None:
        """Validate the inputs; subclasses add their feature sizes."""
        _check_qkv(type(self).__name__, queries, keys, values)

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        valid_lens: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        self.check_inputs(queries, keys, values)
        return self._weigh(self.score(queries, keys), values, valid_lens, key_padding_mask)

    def _weigh(
        self, scores: Tensor, values: Tensor, valid_lens: Tensor | None, key_padding_mask: Tensor | None
    ) -> Tensor:
        """Masked softmax of ``scores`` ``(B, Q, K)`` (kept in ``attention_weights``) applied to ``values``."""
        B, _, K = scores.shape
        mask = _key_padding_to_mask(type(self).__name__, key_padding_mask, B, K)
        self.attention_weights = masked_softmax(scores, valid_lens, mask)
        return torch.bmm(self.dropout(self.attention_weights), values)  # (B, Q, d_v)


class _ProjectedKeyAttention(_ScoreAttention):
    """A score whose keys-only part (:meth:`project_keys`) can be computed once and reused."""

    def project_keys(self, keys: Tensor) -> Tensor:
        """The part of the score that depends on the keys only, ``(B, K, h)``."""
        raise NotImplementedError

    def projected_size(self, keys: Tensor) -> int:
        """Features ``h`` of :meth:`project_keys`' output for these keys."""
        raise NotImplementedError

    def score_projected(self, queries: Tensor, projected_keys: Tensor) -> Tensor:
        """Scores ``(B, Q, K)`` from queries and :meth:`project_keys`' output."""
        raise NotImplementedError

    def score(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Unnormalised scores of shape ``(B, Q, K)``."""
        return self.score_projected(queries, self.project_keys(keys))

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        valid_lens: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        projected_keys: Tensor | None = None,
    ) -> Tensor:
        self.check_inputs(queries, keys, values)
        if projected_keys is None:
            projected_keys = self.project_keys(keys)
        else:
            B, K, _ = keys.shape
            expected = (B, K, self.projected_size(keys))
            if tuple(projected_keys.shape) != expected:
                raise ValueError(
                    f"{type(self).__name__}: projected_keys expected shape {format_shape(expected)} "
                    f"(project_keys(keys)), got {format_shape(projected_keys)}"
                )
        return self._weigh(self.score_projected(queries, projected_keys), values, valid_lens, key_padding_mask)


class NadarayaWatsonPooling(_ScoreAttention):
    """Nadaraya-Watson kernel regression: attention pooling with a Gaussian kernel.

    The weight of key ``k`` for query ``q`` is ``softmax_k(-(||q - k|| * w)^2 / 2)``:
    nearby keys get large weights. With a fixed ``w`` this is the non-parametric
    estimator; with ``learnable=True`` the inverse bandwidth ``w`` is trained.

    Args:
        learnable: Whether ``w`` is a trainable parameter (else a buffer).
            Defaults to False.
        w: Initial inverse bandwidth; larger means a narrower kernel. Defaults to 1.0.

    Call arguments:
        queries: ``(B, Q, d)``.
        keys: ``(B, K, d)``.
        values: ``(B, K, d_v)``.
        valid_lens: ``(B,)`` or ``(B, Q)`` number of valid keys. Defaults to None.
        key_padding_mask: ``(B, K)``, bool ``True`` = padding, or float added to
            the scores. Defaults to None.

    Returns:
        ``(B, Q, d_v)``; the ``(B, Q, K)`` weights are kept in ``attention_weights``.

    >>> pool = NadarayaWatsonPooling()
    >>> x = torch.linspace(0, 5, 50).reshape(1, 50, 1)
    >>> pool(x, x, torch.sin(x)).shape
    torch.Size([1, 50, 1])
    """

    def __init__(self, learnable: bool = False, w: float = 1.0) -> None:
        super().__init__(dropout=0.0)
        init = torch.tensor([float(w)])
        if learnable:
            self.w = nn.Parameter(init)
        else:
            self.register_buffer("w", init)

    def check_inputs(self, queries: Tensor, keys: Tensor, values: Tensor) -> None:
        """Queries and keys live in the same space, so their feature sizes must agree."""
        _check_qkv(type(self).__name__, queries, keys, values, key_size=queries.shape[-1])

    def score(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Negative scaled squared distance between every query and every key."""
        diff = queries.unsqueeze(2) - keys.unsqueeze(1)  # (B, Q, 1, d) - (B, 1, K, d): (B, Q, K, d)
        return -((diff * self.w) ** 2).sum(dim=-1) / 2  # (B, Q, K)


class DotProductAttention(_ScoreAttention):
    """(Scaled) dot-product attention: ``softmax(q k^T / sqrt(d)) v``.

    Args:
        scaled: Divide the scores by ``sqrt(d)`` so their variance does not grow
            with the feature size. Defaults to True.
        dropout: Dropout probability applied to the attention weights.
            Defaults to 0.0.

    Call arguments:
        queries: ``(B, Q, d)``.
        keys: ``(B, K, d)``.
        values: ``(B, K, d_v)``.
        valid_lens: ``(B,)`` or ``(B, Q)`` number of valid keys. Defaults to None.
        key_padding_mask: ``(B, K)``, bool ``True`` = padding, or float added to
            the scores. Defaults to None.

    Returns:
        ``(B, Q, d_v)``; the ``(B, Q, K)`` weights are kept in ``attention_weights``.

    >>> attn = DotProductAttention()
    >>> q, kv = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    >>> attn(q, kv, kv, valid_lens=torch.tensor([2, 5])).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, scaled: bool = True, dropout: float = 0.0) -> None:
        super().__init__(dropout)
        self.scaled = scaled

    def check_inputs(self, queries: Tensor, keys: Tensor, values: Tensor) -> None:
        """A dot product needs queries and keys of the same size."""
        _check_qkv(type(self).__name__, queries, keys, values, key_size=queries.shape[-1])

    def score(self, queries: Tensor, keys: Tensor) -> Tensor:
        """``q . k`` for every pair, optionally divided by ``sqrt(d)``."""
        scores = torch.bmm(queries, keys.transpose(1, 2))  # (B, Q, d) @ (B, d, K) -> (B, Q, K)
        if self.scaled:
            scores = scores / math.sqrt(queries.shape[-1])
        return scores


class AdditiveAttention(_ProjectedKeyAttention):
    """Additive (Bahdanau) attention: score ``v^T tanh(W_q q + W_k k)``.

    Queries and keys may have different sizes; both are projected to
    ``num_hiddens`` features, added, squashed and reduced to one score.

    Args:
        key_size: Features per key, ``d_k``.
        query_size: Features per query, ``d_q``.
        num_hiddens: Size of the hidden layer of the score network.
        dropout: Dropout probability applied to the attention weights.
            Defaults to 0.0.

    Call arguments:
        queries: ``(B, Q, query_size)``.
        keys: ``(B, K, key_size)``.
        values: ``(B, K, d_v)``.
        valid_lens: ``(B,)`` or ``(B, Q)`` number of valid keys. Defaults to None.
        key_padding_mask: ``(B, K)``, bool ``True`` = padding, or float added to
            the scores. Defaults to None.
        projected_keys: ``(B, K, num_hiddens)`` from :meth:`project_keys` on these
            ``keys``, to reuse across calls over the same keys. Defaults to None
            (computed here).

    Returns:
        ``(B, Q, d_v)``; the ``(B, Q, K)`` weights are kept in ``attention_weights``.

    >>> attn = AdditiveAttention(key_size=4, query_size=6, num_hiddens=8)
    >>> keys, values = torch.randn(2, 5, 4), torch.randn(2, 5, 3)
    >>> attn(torch.randn(2, 1, 6), keys, values).shape
    torch.Size([2, 1, 3])
    >>> projected = attn.project_keys(keys)  # once, for every query step over these keys
    >>> attn(torch.randn(2, 1, 6), keys, values, projected_keys=projected).shape
    torch.Size([2, 1, 3])
    """

    def __init__(
        self, key_size: int, query_size: int, num_hiddens: int, dropout: float = 0.0
    ) -> None:
        super().__init__(dropout)
        self.key_size, self.query_size = key_size, query_size
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)

    def check_inputs(self, queries: Tensor, keys: Tensor, values: Tensor) -> None:
        """Feature sizes must match the projections."""
        _check_qkv(type(self).__name__, queries, keys, values, self.query_size, self.key_size)

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W_k k``: the keys' half of the score, to compute once per key sequence.

        Args:
            keys: ``(B, K, key_size)``.

        Returns:
            ``(B, K, num_hiddens)``, for ``forward(..., projected_keys=)``.

        >>> attn = AdditiveAttention(key_size=4, query_size=6, num_hiddens=8)
        >>> attn.project_keys(torch.randn(2, 5, 4)).shape
        torch.Size([2, 5, 8])
        """
        return self.W_k(keys)  # (B, K, h)

    def projected_size(self, keys: Tensor) -> int:
        """``num_hiddens``: the features of :meth:`project_keys`' output."""
        return self.W_k.out_features

    def score_projected(self, queries: Tensor, projected_keys: Tensor) -> Tensor:
        """``w_v . tanh(W_q q + W_k k)`` for every query/key pair, from ``W_k k`` ``(B, K, h)``."""
        q = self.W_q(queries)  # (B, Q, h)
        # Project once per query and once per key, then broadcast to all pairs.
        features = torch.tanh(q.unsqueeze(2) + projected_keys.unsqueeze(1))  # (B, Q, K, h)
        return self.w_v(features).squeeze(-1)  # (B, Q, K, 1) -> (B, Q, K)


class LuongAttention(_ProjectedKeyAttention):
    """Luong's global attention with the ``dot``, ``general`` or ``concat`` score.

    With decoder state ``h_t`` (query) and encoder state ``h_s`` (key):

    - ``"dot"``: ``h_t . h_s`` (sizes must match, no parameters);
    - ``"general"``: ``h_t^T W_a h_s`` with ``W_a`` of shape ``(query_size, key_size)``;
    - ``"concat"``: ``v_a^T tanh(W_a [h_t; h_s])`` with ``W_a`` of shape
      ``(num_hiddens, query_size + key_size)``.

    Args:
        score: One of ``"dot"``, ``"general"``, ``"concat"``. Defaults to ``"dot"``.
        query_size: Features per query; required for ``"general"`` and
            ``"concat"``. Defaults to None.
        key_size: Features per key. Defaults to None (= ``query_size``).
        num_hiddens: Hidden size of the ``"concat"`` score. Defaults to None
            (= ``query_size``).
        dropout: Dropout probability applied to the attention weights.
            Defaults to 0.0.

    Call arguments:
        queries: ``(B, Q, query_size)``.
        keys: ``(B, K, key_size)``.
        values: ``(B, K, d_v)``.
        valid_lens: ``(B,)`` or ``(B, Q)`` number of valid keys. Defaults to None.
        key_padding_mask: ``(B, K)``, bool ``True`` = padding, or float added to
            the scores. Defaults to None.
        projected_keys: :meth:`project_keys` of these ``keys`` (``(B, K, key_size)``
            for ``"dot"``, ``(B, K, query_size)`` for ``"general"``, ``(B, K,
            num_hiddens)`` for ``"concat"``), to reuse across calls over the same
            keys. Defaults to None (computed here).

    Returns:
        ``(B, Q, d_v)``; the ``(B, Q, K)`` weights are kept in ``attention_weights``.

    >>> attn = LuongAttention("general", query_size=6, key_size=4)
    >>> keys = torch.randn(2, 5, 4)
    >>> attn(torch.randn(2, 1, 6), keys, keys).shape
    torch.Size([2, 1, 4])
    >>> attn(torch.randn(2, 1, 6), keys, keys, projected_keys=attn.project_keys(keys)).shape
    torch.Size([2, 1, 4])
    """

    def __init__(
        self,
        score: str = "dot",
        query_size: int | None = None,
        key_size: int | None = None,
        num_hiddens: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dropout)
        if score not in _LUONG_SCORES:
            raise ValueError(f"LuongAttention: score must be one of {_LUONG_SCORES}, got {score!r}")
        if score != "dot" and query_size is None:
            raise ValueError(f"LuongAttention: score {score!r} needs query_size, got None")
        self.score_name = score
        self.query_size = query_size
        self.key_size = key_size if key_size is not None else query_size
        if score == "general":
            self.W_a = nn.Linear(self.key_size, query_size, bias=False)
        elif score == "concat":
            hidden = num_hiddens if num_hiddens is not None else query_size
            self.W_a = nn.Linear(query_size + self.key_size, hidden, bias=False)
            self.v_a = nn.Linear(hidden, 1, bias=False)

    def extra_repr(self) -> str:
        return f"score={self.score_name!r}"

    def check_inputs(self, queries: Tensor, keys: Tensor, values: Tensor) -> None:
        """``dot`` needs equal sizes; the others need the configured sizes."""
        if self.score_name == "dot":
            _check_qkv("LuongAttention", queries, keys, values, key_size=queries.shape[-1])
        else:
            _check_qkv("LuongAttention", queries, keys, values, self.query_size, self.key_size)

    def project_keys(self, keys: Tensor) -> Tensor:
        """The keys' part of the score, to compute once per key sequence.

        ``"dot"``: the keys themselves; ``"general"``: ``W_a h_s``; ``"concat"``: the
        keys' block of ``W_a [h_t; h_s]`` (``W_a`` split by columns into ``[W_t, W_s]``).

        Args:
            keys: ``(B, K, key_size)``.

        Returns:
            ``(B, K, h)`` with ``h`` = ``key_size``, ``query_size`` or ``num_hiddens``
            for ``"dot"``, ``"general"``, ``"concat"``.

        >>> attn = LuongAttention("concat", query_size=6, key_size=4, num_hiddens=3)
        >>> attn.project_keys(torch.randn(2, 5, 4)).shape
        torch.Size([2, 5, 3])
        """
        if self.score_name == "dot":
            return keys
        if self.score_name == "general":
            return self.W_a(keys)  # (B, K, d_q)
        # W_a [h_t; h_s] = W_t h_t + W_s h_s: projecting queries and keys separately
        # avoids building all (B, Q, K, d_q + d_k) concatenations.
        _, W_s = self.W_a.weight.split([self.query_size, self.key_size], dim=1)
        return keys @ W_s.T  # (B, K, h)

    def projected_size(self, keys: Tensor) -> int:
        """Features of :meth:`project_keys`' output (see there)."""
        if self.score_name == "dot":
            return keys.shape[-1]
        return self.query_size if self.score_name == "general" else self.W_a.out_features

    def score_projected(self, queries: Tensor, projected_keys: Tensor) -> Tensor:
        """Luong score ``(B, Q, K)`` for every query/key pair, from :meth:`project_keys`' output."""
        if self.score_name != "concat":
            # dot: q . k; general: q . (W_a k)
            return torch.bmm(queries, projected_keys.transpose(1, 2))  # (B, Q, d) @ (B, d, K) -> (B, Q, K)
        W_t, _ = self.W_a.weight.split([self.query_size, self.key_size], dim=1)
        q = queries @ W_t.T  # (B, Q, h)
        features = torch.tanh(q.unsqueeze(2) + projected_keys.unsqueeze(1))  # (B, Q, K, h)
        return self.v_a(features).squeeze(-1)  # (B, Q, K)
