"""Greedy decoding and beam search: beam 1 is greedy, hypotheses are sorted, brute force agrees."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn as nn
from torch import Tensor

from dlkit.models.decoding import beam_search, generate, greedy_decode, length_penalty_factor

# Tiny tensors: a second intra-op thread only adds contention.
pytestmark = pytest.mark.usefixtures("one_thread")

PAD, BOS, EOS = 0, 1, 2


class TableModel(nn.Module):
    """A hand-built "decoder": fixed log-probabilities indexed by (step, previous token).

    ``table[t, prev]`` holds the next-token scores at step ``t`` after token ``prev``; the
    source only picks one of several tables per example, so the model is Markov and the
    best sequence can be found by enumerating all sequences.
    """

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self, tables: Tensor) -> None:
        super().__init__()
        self.tables = tables  # (N_tables, steps, V, V)
        self.calls = 0

    def start(self, src: Tensor, src_lengths: Tensor) -> dict[str, Tensor]:
        return {"table": src[:, 0], "t": torch.zeros(len(src), dtype=torch.long)}

    def step(self, y_prev: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        self.calls += 1
        t = state["t"].clamp_max(self.tables.shape[1] - 1)
        logits = self.tables[state["table"], t, y_prev]  # (B, V)
        return logits, {"table": state["table"], "t": state["t"] + 1}

    def select_state(self, state: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        return {k: v.index_select(0, index) for k, v in state.items()}


def _random_tables(n: int, steps: int, V: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, steps, V, V, generator=g) * 2.0


def _brute_force(tables: Tensor, table: int, max_len: int, alpha: float) -> list[tuple[list[int], float]]:
    """Every sequence (ending in <eos>, or of length max_len) with its penalised score, best first."""
    V = tables.shape[-1]
    words = [w for w in range(V) if w not in (PAD, BOS)]
    scored = []
    for length in range(1, max_len + 1):
        for seq in itertools.product(words, repeat=length):
            if EOS in seq[:-1] or (length < max_len and seq[-1] != EOS):
                continue
            prev, total = BOS, 0.0
            for t, tok in enumerate(seq):
                logp = tables[table, t, prev].clone()
                logp[[PAD, BOS]] = float("-inf")
                total += float(logp.log_softmax(-1)[tok])
                prev = tok
            scored.append((list(seq), total / length_penalty_factor(length, alpha)))
    return sorted(scored, key=lambda s: s[1], reverse=True)


def _batch(tables_idx: list[int]) -> tuple[Tensor, Tensor]:
    src = torch.tensor(tables_idx)[:, None].repeat(1, 3)
    return src, torch.full((len(tables_idx),), 3)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_of_one_equals_greedy(alpha: float) -> None:
    model = TableModel(_random_tables(6, 8, 7, seed=1))
    src, lengths = _batch([0, 1, 2, 3, 4, 5])
    tokens, scores = greedy_decode(model, src, lengths, max_len=8)
    hyps = beam_search(model, src, lengths, beam_size=1, max_len=8, length_penalty=alpha)
    for row, (best,) in enumerate(hyps):
        n = len(best.tokens)
        assert tokens[row, :n].tolist() == best.tokens.tolist()
        assert (tokens[row, n:] == PAD).all()
        if alpha == 0.0:
            assert best.score == pytest.approx(float(scores[row]), abs=1e-6)
    assert torch.equal(generate(model, src, lengths, max_len=8, beam_size=1), tokens)


def test_greedy_stops_at_eos_pads_after_it_and_sums_log_probs() -> None:
    V = 6
    tables = torch.full((1, 4, V, V), -5.0)
    tables[0, 0, BOS, 4] = 5.0  # step 0: token 4
    tables[0, 1, 4, 5] = 5.0  # step 1: token 5
    tables[0, 2, 5, EOS] = 5.0  # step 2: <eos>
    model = TableModel(tables)
    tokens, scores = greedy_decode(model, *_batch([0]), max_len=10)
    assert tokens.tolist() == [[4, 5, EOS]]
    assert model.calls == 3  # stopped once every row had ended
    logp = torch.tensor([5.0, -5.0, -5.0, -5.0]).log_softmax(-1)[0]  # 4 valid tokens (pad/bos masked)
    assert float(scores[0]) == pytest.approx(3 * float(logp), rel=1e-5)


def test_greedy_never_emits_pad_or_bos() -> None:
    V = 5
    tables = torch.zeros(1, 3, V, V)
    tables[..., PAD] = 50.0
    tables[..., BOS] = 40.0
    tokens, _ = greedy_decode(TableModel(tables), *_batch([0]), max_len=3)
    assert not ({PAD, BOS} & set(tokens.flatten().tolist()))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_exhaustive_beam_matches_brute_force_ranking(alpha: float) -> None:
    # V' = 3 usable tokens (eos, 3, 4) and max_len 3: at most 3 * 4 = 12 candidates per step,
    # so a beam of 12 keeps everything and must return the 12 best sequences, in order.
    tables = _random_tables(3, 3, 5, seed=7)
    model = TableModel(tables)
    src, lengths = _batch([0, 1, 2])
    hyps = beam_search(model, src, lengths, beam_size=12, max_len=3, length_penalty=alpha)
    for table in range(3):
        expected = _brute_force(tables, table, max_len=3, alpha=alpha)[:12]
        got = [(h.tokens.tolist(), h.score) for h in hyps[table]]
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert [sc for _, sc in got] == pytest.approx([sc for _, sc in expected], abs=1e-5)


def test_beam_finds_the_sequence_greedy_misses() -> None:
    # Step 0: token 3 (p .55) beats token 4 (p .45); after 3 everything is uncertain, after
    # 4 <eos> is certain. Best sequence: [4, eos]; greedy takes [3, ...].
    V = 6
    tables = torch.full((1, 3, V, V), -30.0)
    tables[0, 0, BOS, 3], tables[0, 0, BOS, 4] = math.log(0.55), math.log(0.45)
    tables[0, 1, 3, [EOS, 3, 4, 5]] = math.log(0.25)
    tables[0, 1, 4, EOS] = 0.0
    tables[0, 2, :, EOS] = 0.0
    model = TableModel(tables)
    src, lengths = _batch([0])
    assert greedy_decode(model, src, lengths, max_len=3)[0][0, 0] == 3
    hyps = beam_search(model, src, lengths, beam_size=2, max_len=3, length_penalty=0.0)
    assert hyps[0][0].tokens.tolist() == [4, EOS]
    assert _brute_force(tables, 0, 3, 0.0)[0][0] == [4, EOS]
    assert generate(model, src, lengths, max_len=3, beam_size=2, length_penalty=0.0).tolist() == [[4, EOS]]


@pytest.mark.parametrize("beam", [2, 3, 5])
def test_hypotheses_are_sorted_distinct_and_at_most_beam_size(beam: int) -> None:
    model = TableModel(_random_tables(4, 10, 9, seed=3))
    hyps = beam_search(model, *_batch([0, 1, 2, 3]), beam_size=beam, max_len=10)
    for per_example in hyps:
        assert 1 <= len(per_example) <= beam
        scores = [h.score for h in per_example]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens.tolist()) for h in per_example}) == len(per_example)
        for h in per_example:
            ids = h.tokens.tolist()
            assert EOS not in ids[:-1] and PAD not in ids and BOS not in ids
            assert len(ids) <= 10


def test_generate_pads_the_best_hypotheses() -> None:
    model = TableModel(_random_tables(3, 6, 7, seed=5))
    src, lengths = _batch([0, 1, 2])
    out = generate(model, src, lengths, max_len=6, beam_size=3)
    hyps = beam_search(model, src, lengths, beam_size=3, max_len=6)
    for row, per_example in enumerate(hyps):
        best = per_example[0].tokens.tolist()
        assert out[row, : len(best)].tolist() == best and (out[row, len(best):] == PAD).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"beam_size": 0}, "beam_size"), ({"max_len": 0}, "max_len"), ({"length_penalty": -1.0}, "length_penalty")],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    model = TableModel(_random_tables(1, 2, 5, seed=0))
    args = {"beam_size": 2, "max_len": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        beam_search(model, *_batch([0]), **args)


def test_a_net_without_the_contract_gets_a_clear_error() -> None:
    with pytest.raises(TypeError, match="bos_id"):
        greedy_decode(nn.Linear(2, 2), *_batch([0]), max_len=3)
