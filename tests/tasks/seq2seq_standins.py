"""Small networks with dlkit's encoder–decoder contract, for testing the Seq2Seq task alone.

They implement exactly what :class:`dlkit.tasks.Seq2Seq` and :mod:`dlkit.models.decoding`
use (``forward/start/step/select_state/attention_weights`` and the special ids), with
torch's own layers, so the task's tests do not depend on dlkit's model families.
:func:`date_data` and :func:`tiny_task` build what the task and callback tests train on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from dlkit.data import DateTranslationDataModule
from dlkit.tasks import Seq2Seq

State = dict[str, Tensor]


def date_data(**kwargs: Any) -> DateTranslationDataModule:
    """A :class:`DateTranslationDataModule` built with ``kwargs`` and already set up.

    Example:
        >>> dm = date_data(num_train=128, num_val=32, num_test=32, batch_size=32, seed=1)
        >>> len(dm.src_vocab) > 3
        True
    """
    dm = DateTranslationDataModule(**kwargs)
    dm.setup()
    return dm


def tiny_task(dm: DateTranslationDataModule, **kwargs: Any) -> Seq2Seq:
    """A :class:`Seq2Seq` task over a seeded :class:`TinySeq2Seq` (hidden 16) sized for ``dm``.

    Args:
        dm: The data; its vocabularies give the network's sizes.
        **kwargs: Passed to :class:`Seq2Seq` (``metrics``, ``teacher_forcing``, ...).

    Example:
        >>> task = tiny_task(dm, metrics=["token_acc"])
    """
    torch.manual_seed(0)
    net = TinySeq2Seq(len(dm.src_vocab), len(dm.tgt_vocab), hidden=16)
    return Seq2Seq(net, **kwargs)


class TinySeq2Seq(nn.Module):
    """GRU encoder, GRU-cell decoder with masked dot-product attention; records forcing ratios."""

    def __init__(
        self, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.src_embed = nn.Embedding(src_vocab_size, hidden, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, hidden, padding_idx=pad_id)
        self.encoder = nn.GRU(hidden, hidden, batch_first=True)
        self.cell = nn.GRUCell(hidden, hidden)
        self.out = nn.Linear(2 * hidden, tgt_vocab_size)
        self.ratios: list[float] = []
        self._attention: Tensor | None = None

    def start(self, src: Tensor, src_lengths: Tensor) -> State:
        keys, _ = self.encoder(self.src_embed(src))  # (B, S, H)
        B, S, _ = keys.shape
        h0 = keys[torch.arange(B), src_lengths - 1]  # last valid step, (B, H)
        mask = torch.arange(S, device=src.device)[None] < src_lengths[:, None]  # (B, S)
        state = {"h": h0, "keys": keys, "mask": mask, "attention": keys.new_zeros(B, 0, S)}
        self._attention = state["attention"]
        return state

    def step(self, y_prev: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.cell(self.tgt_embed(y_prev), state["h"])  # (B, H)
        scores = torch.einsum("bsh,bh->bs", state["keys"], h).masked_fill(~state["mask"], float("-inf"))
        weights = scores.softmax(-1)  # (B, S), exactly 0 on padding
        context = torch.einsum("bs,bsh->bh", weights, state["keys"])
        logits = self.out(torch.cat([h, context], -1))
        new = {**state, "h": h, "attention": torch.cat([state["attention"], weights[:, None]], 1)}
        self._attention = new["attention"]
        return logits, new

    def select_state(self, state: State, index: Tensor) -> State:
        new = {k: v.index_select(0, index) for k, v in state.items()}
        self._attention = new["attention"]
        return new

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing_ratio: float = 1.0) -> Tensor:
        self.ratios.append(teacher_forcing_ratio)
        state = self.start(src, src_lengths)
        y, steps = tgt_in[:, 0], []
        for t in range(tgt_in.shape[1]):
            logits, state = self.step(y, state)
            steps.append(logits)
            if t + 1 < tgt_in.shape[1]:
                forced = torch.rand(len(y), device=y.device) < teacher_forcing_ratio
                y = torch.where(forced, tgt_in[:, t + 1], logits.argmax(-1))
        return torch.stack(steps, 1)  # (B, T, V)

    @property
    def attention_weights(self) -> Tensor | None:
        return self._attention


class CopyOracle(nn.Module):
    """A perfect "model" of the copy task: the target is the source; no parameters learn.

    Teacher-forced logits at position t favour ``src[t]`` (``<eos>`` at the source's end);
    decoding copies the source and stops. A dummy parameter lets optimisers be built.
    """

    pad_id, bos_id, eos_id = 0, 1, 2

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.src_vocab_size = self.tgt_vocab_size = vocab_size
        self.dummy = nn.Parameter(torch.zeros(()))

    def _logits_for(self, tokens: Tensor) -> Tensor:
        return nn.functional.one_hot(tokens, self.tgt_vocab_size).float() * 10.0 + self.dummy

    def _expected(self, src: Tensor, src_lengths: Tensor, T: int) -> Tensor:
        B, S = src.shape
        padded = torch.cat([src, src.new_zeros(B, max(0, T - S + 1))], 1)[:, :T]  # (B, T)
        t = torch.arange(T, device=src.device)[None]
        return torch.where(t < src_lengths[:, None], padded, torch.full_like(padded, self.eos_id))

    def start(self, src: Tensor, src_lengths: Tensor) -> State:
        return {"src": src, "lengths": src_lengths, "t": torch.zeros(len(src), dtype=torch.long)}

    def step(self, y_prev: Tensor, state: State) -> tuple[Tensor, State]:
        B, S = state["src"].shape
        t = state["t"]
        tok = state["src"][torch.arange(B), t.clamp_max(S - 1)]
        tok = torch.where(t >= state["lengths"], torch.full_like(tok, self.eos_id), tok)
        return self._logits_for(tok), {**state, "t": t + 1}

    def select_state(self, state: State, index: Tensor) -> State:
        return {k: v.index_select(0, index) for k, v in state.items()}

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing_ratio: float = 1.0) -> Tensor:
        return self._logits_for(self._expected(src, src_lengths, tgt_in.shape[1]))

    attention_weights = None
