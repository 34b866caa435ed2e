"""Turning an encoder–decoder into output sequences: greedy decoding and beam search.

Both work on any network with the contract of :mod:`dlkit.models.encoder_decoder`::

    state = net.start(src, src_lengths)             # encode once
    logits, state = net.step(y_prev, state)         # (B, V) scores of the next token
    state = net.select_state(state, index)          # keep / repeat rows of the batch

and the ids ``net.bos_id``, ``net.eos_id``, ``net.pad_id``. Decoding never emits
``<pad>`` or ``<bos>``: their logits are set to ``-inf`` before the softmax (the
other tokens' probabilities are renormalised), so an untrained network still
yields clean sequences.

Scores are sums of log-probabilities of the chosen tokens (``<eos>`` included).
Beam search ranks finished hypotheses by that sum divided by the GNMT length
penalty ``((5 + length) / 6) ** alpha`` (Wu et al., 2016), where ``length`` counts
the generated tokens, ``<eos>`` included; ``alpha = 0`` ranks by the raw sum.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["Hypothesis", "beam_search", "generate", "greedy_decode", "length_penalty_factor"]


class Hypothesis(NamedTuple):
    """One decoded sequence of a beam search.

    Attributes:
        tokens: Generated ids, ``(L,)`` LongTensor, without ``<bos>``; ends with
            ``<eos>`` unless the search hit ``max_len`` first.
        score: Sum of token log-probabilities divided by the length penalty.
    """

    tokens: Tensor
    score: float


def length_penalty_factor(length: int, alpha: float) -> float:
    """GNMT's length normaliser ``((5 + length) / 6) ** alpha``.

    Args:
        length: Generated tokens, ``<eos>`` included.
        alpha: Strength; 0 turns normalisation off, larger values favour longer
            hypotheses (GNMT used 0.6–0.7).

    Example:
        >>> length_penalty_factor(1, 0.6)
        1.0
    """
    return ((5.0 + length) / 6.0) ** alpha


def _ids(net: Any) -> tuple[int, int, int]:
    try:
        return int(net.bos_id), int(net.eos_id), int(net.pad_id)
    except AttributeError as err:
        raise TypeError(
            f"Decoding needs an encoder-decoder with bos_id, eos_id and pad_id attributes "
            f"(dlkit.models.encoder_decoder.EncoderDecoder); {type(net).__name__} lacks {err.name!r}."
        ) from err


def _check_args(src: Tensor, src_lengths: Tensor, max_len: int) -> None:
    if src.ndim != 2:
        raise ValueError(f"src must be (B, S) token ids, got shape {tuple(src.shape)}.")
    if src_lengths.shape != (src.shape[0],):
        raise ValueError(
            f"src_lengths must be ({src.shape[0]},) for src {tuple(src.shape)}, got {tuple(src_lengths.shape)}."
        )
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be an integer >= 1, got {max_len!r}.")


def _next_log_probs(logits: Tensor, bos_id: int, pad_id: int) -> Tensor:
    """Log-probabilities of the next token, ``(N, V)``, renormalised without ``<bos>``/``<pad>``."""
    logits = logits.float().clone()
    logits[:, [bos_id, pad_id]] = float("-inf")
    return logits.log_softmax(-1)


@torch.no_grad()
def greedy_decode(net: Any, src: Tensor, src_lengths: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """Decode by taking the most likely token at every step.

    Args:
        net: An encoder–decoder with ``start/step`` and ``bos_id/eos_id/pad_id``.
        src: Source ids, ``(B, S)``, padded with ``pad_id``.
        src_lengths: Valid source lengths, ``(B,)``.
        max_len: Most tokens to generate per sequence, ``<eos>`` included.

    Returns:
        ``(tokens, scores)``: ``tokens`` LongTensor ``(B, L)``, ``L <= max_len``,
        without ``<bos>``, each row ending at its first ``<eos>`` and padded with
        ``pad_id`` after it; ``scores`` ``(B,)`` the sums of the chosen tokens'
        log-probabilities. Decoding stops early once every row has emitted ``<eos>``.

    Example:
        >>> tokens, scores = greedy_decode(net, batch["src"], batch["src_lengths"], max_len=12)
        >>> tgt_vocab.decode(tokens[0])
        '1998-03-03'
    """
    _check_args(src, src_lengths, max_len)
    bos_id, eos_id, pad_id = _ids(net)
    B = src.shape[0]
    state = net.start(src, src_lengths)
    y = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
    scores = torch.zeros(B, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    out: list[Tensor] = []
    for _ in range(max_len):
        logits, state = net.step(y, state)
        best, y = _next_log_probs(logits, bos_id, pad_id).max(-1)
        # Rows that already ended keep their score and are padded.
        scores = scores + best.masked_fill(finished, 0.0)
        y = y.masked_fill(finished, pad_id)
        out.append(y)
        finished = finished | (y == eos_id)
        if bool(finished.all()):
            break
    return torch.stack(out, 1), scores


@torch.no_grad()
def beam_search(
    net: Any,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = 4,
    max_len: int = 50,
    length_penalty: float = 0.6,
) -> list[list[Hypothesis]]:
    """Decode with a beam of the ``beam_size`` best partial sequences per example.

    Every step extends each live hypothesis by every token and keeps the best
    ``2 * beam_size`` candidates by summed log-probability. Candidates ending in
    ``<eos>`` that rank among the first ``beam_size`` are finished (scored with the
    length penalty); the best ``beam_size`` others stay live. An example is done once
    it has ``beam_size`` finished hypotheses (fairseq's rule); at ``max_len`` the live
    ones are finished as they are. With ``beam_size=1`` this is exactly greedy
    decoding.

    Args:
        net: An encoder–decoder with ``start/step/select_state`` and
            ``bos_id/eos_id/pad_id``.
        src: Source ids, ``(B, S)``.
        src_lengths: Valid source lengths, ``(B,)``.
        beam_size: Hypotheses kept per example. Defaults to 4.
        max_len: Most tokens to generate, ``<eos>`` included. Defaults to 50.
        length_penalty: GNMT's ``alpha``; finished hypotheses are ranked by
            ``sum log p / ((5 + length) / 6) ** alpha``. Defaults to 0.6.

    Returns:
        For each of the ``B`` examples, up to ``beam_size`` :class:`Hypothesis`
        ``(tokens (L,), score)``, sorted by score, best first.

    Example:
        >>> hyps = beam_search(net, batch["src"], batch["src_lengths"], beam_size=4, max_len=12)
        >>> tgt_vocab.decode(hyps[0][0].tokens), hyps[0][0].score
        ('1998-03-03', -0.0123)
    """
    _check_args(src, src_lengths, max_len)
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}.")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}.")
    bos_id, eos_id, pad_id = _ids(net)
    B, K, device = src.shape[0], beam_size, src.device
    state = net.start(src, src_lengths)
    # K copies of every example, example-major: row b * K + k is beam k of example b.
    state = net.select_state(state, torch.arange(B, device=device).repeat_interleave(K))
    y = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    # Only beam 0 is live at the start, so the K copies do not yield K equal hypotheses.
    beam_scores = torch.full((B, K), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    history = torch.empty(B, K, 0, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    offsets = torch.arange(B, device=device)[:, None] * K

    for t in range(max_len):
        logits, state = net.step(y, state)
        logp = _next_log_probs(logits, bos_id, pad_id)
        V = logp.shape[-1]
        candidates = (beam_scores.reshape(B * K, 1) + logp).reshape(B, K * V)  # (B, K*V)
        n_top = min(2 * K, K * V)
        top_scores, top_index = candidates.topk(n_top, dim=1)  # (B, n_top), best first
        top_beam, top_token = top_index // V, top_index % V
        is_eos = top_token == eos_id

        # Finish <eos> candidates ranked within the first K (Python: few per step).
        lp = length_penalty_factor(t + 1, length_penalty)
        rows, ranks = torch.nonzero(is_eos[:, :K] & torch.isfinite(top_scores[:, :K]), as_tuple=True)
        for b, r in zip(rows.tolist(), ranks.tolist()):
            if done[b]:
                continue
            prefix = history[b, int(top_beam[b, r])]
            tokens = torch.cat([prefix, prefix.new_tensor([eos_id])])
            finished[b].append(Hypothesis(tokens, float(top_scores[b, r]) / lp))
        for b in set(rows.tolist()):
            done[b] = done[b] or len(finished[b]) >= K
        if all(done):
            break

        # The first K non-<eos> candidates of each example stay live: a stable sort
        # on the <eos> flag moves them to the front in score order.
        order = is_eos.long().argsort(dim=1, stable=True)[:, :K]  # (B, K)
        next_beam, y_next = top_beam.gather(1, order), top_token.gather(1, order)
        beam_scores = top_scores.gather(1, order).masked_fill(is_eos.gather(1, order), float("-inf"))
        # Finished examples keep decoding (rows cannot be dropped cheaply) but no longer count.
        beam_scores[torch.tensor(done, device=device)] = float("-inf")
        history = torch.cat([history.gather(1, next_beam[..., None].expand(-1, -1, t)), y_next[..., None]], 2)
        state = net.select_state(state, (offsets + next_beam).reshape(-1))
        y = y_next.reshape(-1)
    else:
        # max_len reached: live hypotheses end without <eos>.
        lp = length_penalty_factor(max_len, length_penalty)
        for b in range(B):
            if done[b]:
                continue
            for k in range(K):
                if torch.isfinite(beam_scores[b, k]):
                    finished[b].append(Hypothesis(history[b, k].clone(), float(beam_scores[b, k]) / lp))

    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:K] for hyps in finished]


def generate(
    net: Any,
    src: Tensor,
    src_lengths: Tensor,
    max_len: int,
    beam_size: int = 1,
    length_penalty: float = 0.6,
) -> Tensor:
    """The best sequence per example: greedy when ``beam_size == 1``, else beam search.

    Args:
        net: An encoder–decoder (see :func:`greedy_decode`).
        src: Source ids, ``(B, S)``.
        src_lengths: Valid source lengths, ``(B,)``.
        max_len: Most tokens to generate, ``<eos>`` included.
        beam_size: Beam width; 1 decodes greedily. Defaults to 1.
        length_penalty: GNMT ``alpha`` of the beam search. Defaults to 0.6.

    Returns:
        LongTensor ``(B, L)``: the best hypotheses without ``<bos>``, padded with
        ``pad_id`` after their ``<eos>``.

    Example:
        >>> generate(net, batch["src"], batch["src_lengths"], max_len=12, beam_size=3).shape
        torch.Size([64, 11])
    """
    if beam_size == 1:
        return greedy_decode(net, src, src_lengths, max_len)[0]
    hyps = beam_search(net, src, src_lengths, beam_size, max_len, length_penalty)
    _, _, pad_id = _ids(net)
    best = [h[0].tokens for h in hyps]
    L = max(len(t) for t in best)
    out = torch.full((len(best), L), pad_id, dtype=torch.long, device=src.device)
    for row, tokens in enumerate(best):
        out[row, : len(tokens)] = tokens
    return out
