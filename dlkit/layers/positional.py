"""Positional encodings: tell an order-blind attention layer where each token sits.

Both encodings are added to the token embeddings, then dropout is applied, as in
"Attention Is All You Need" (section 3.5).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dlkit.layers.dropout import Dropout

__all__ = ["SinusoidalPositionalEncoding", "LearnedPositionalEncoding"]


class _AddedPositionalEncoding(nn.Module):
    """Shared input checks and the add-then-dropout step; subclasses give the table."""

    def __init__(self, d_model: int, max_len: int, dropout: float, batch_first: bool) -> None:
        super().__init__()
        name = type(self).__name__
        if d_model <= 0 or max_len <= 0:
            raise ValueError(
                f"{name}: d_model and max_len must be positive, got d_model={d_model}, "
                f"max_len={max_len}"
            )
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout probability must be in [0, 1], got {dropout}")
        self.d_model = d_model
        self.max_len = max_len
        self.batch_first = batch_first
        self.dropout = Dropout(dropout)

    def table(self) -> Tensor:
        """The ``(max_len, d_model)`` encodings, one row per position."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        layout = "(N, T, d_model)" if self.batch_first else "(T, N, d_model)"
        if x.dim() not in (2, 3) or x.shape[-1] != self.d_model:
            raise ValueError(
                f"{name}: expected input of shape {layout} or unbatched (T, d_model) with "
                f"d_model = {self.d_model}, got {tuple(x.shape)}"
            )
        T = x.shape[1] if x.dim() == 3 and self.batch_first else x.shape[0]
        if T > self.max_len:
            raise ValueError(
                f"{name}: sequence length ({T}) exceeds max_len ({self.max_len}); "
                f"build the layer with max_len >= {T}"
            )
        pe = self.table()[:T].to(x.dtype)  # (T, d_model)
        if x.dim() == 3 and not self.batch_first:
            pe = pe.unsqueeze(1)  # (T, 1, d_model) broadcasts over the batch axis
        return self.dropout(x + pe)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, batch_first={self.batch_first}"


class SinusoidalPositionalEncoding(_AddedPositionalEncoding):
    """Fixed sine/cosine positional encoding, added to the input.

    ``PE(pos, 2i) = sin(pos / 10000^(2i / d_model))`` and
    ``PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model))``: each pair of features is a
    rotation at its own frequency, so a fixed offset is a linear map of the encoding.
    For an odd ``d_model`` the last feature is a sine without its cosine partner. The
    table is a non-persistent buffer: it follows ``.to()`` but is not saved.

    Args:
        d_model: Features per token.
        dropout: Dropout probability applied after the addition. Defaults to 0.0.
        max_len: Longest sequence the table covers. Defaults to 5000.
        batch_first: Inputs are ``(N, T, d_model)`` instead of ``(T, N, d_model)``.
            Defaults to True.

    Call arguments:
        x: ``(N, T, d_model)``, ``(T, N, d_model)`` if not ``batch_first``, or
            unbatched ``(T, d_model)``, with ``T <= max_len``.

    Returns:
        ``x + PE[:T]`` after dropout, same shape as ``x``.

    >>> pos = SinusoidalPositionalEncoding(d_model=4)
    >>> pos(torch.zeros(1, 2, 4))
    tensor([[[0.0000, 1.0000, 0.0000, 1.0000],
             [0.8415, 0.5403, 0.0100, 0.9999]]])
    """

    pe: Tensor

    def __init__(
        self, d_model: int, dropout: float = 0.0, max_len: int = 5000, batch_first: bool = True
    ) -> None:
        super().__init__(d_model, max_len, dropout, batch_first)
        # float64 for the angles: pos / 10000^(2i/d) loses digits at large pos in float32
        pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d/2),)
        angle = pos / 10000.0 ** (two_i / d_model)  # (max_len, ceil(d/2))
        pe = torch.empty(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # one cosine fewer when d is odd
        self.register_buffer("pe", pe.to(torch.get_default_dtype()), persistent=False)

    def table(self) -> Tensor:
        """The ``(max_len, d_model)`` sine/cosine table."""
        return self.pe


class LearnedPositionalEncoding(_AddedPositionalEncoding):
    """A trained embedding per position (as in BERT and GPT-2), added to the input.

    Args:
        max_len: Longest sequence; one learned vector per position.
        d_model: Features per token.
        dropout: Dropout probability applied after the addition. Defaults to 0.0.
        batch_first: Inputs are ``(N, T, d_model)`` instead of ``(T, N, d_model)``.
            Defaults to True.

    Call arguments:
        x: ``(N, T, d_model)``, ``(T, N, d_model)`` if not ``batch_first``, or
            unbatched ``(T, d_model)``, with ``T <= max_len``.

    Returns:
        ``x + weight[:T]`` after dropout, same shape as ``x``. ``weight`` has shape
        ``(max_len, d_model)`` and starts as ``N(0, 0.02^2)`` noise.

    >>> pos = LearnedPositionalEncoding(max_len=16, d_model=8)
    >>> pos(torch.zeros(2, 10, 8)).shape
    torch.Size([2, 10, 8])
    """

    def __init__(
        self, max_len: int, d_model: int, dropout: float = 0.0, batch_first: bool = True
    ) -> None:
        super().__init__(d_model, max_len, dropout, batch_first)
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small random start, so no position begins with a large bias."""
        nn.init.normal_(self.weight, std=0.02)

    def table(self) -> Tensor:
        """The learned ``(max_len, d_model)`` table."""
        return self.weight
