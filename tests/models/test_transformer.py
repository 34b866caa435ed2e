"""transformer_seq2seq: causal and padding masks, the reported attention, tied embeddings.

The interface checks every seq2seq model shares (shapes, step == forward, select_state)
are in test_seq2seq.py; these are the transformer's own.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from dlkit.layers import generate_square_subsequent_mask
from dlkit.models import TransformerSeq2Seq, create_model

SRC_V, TGT_V, PAD = 19, 13, 0
SMALL = {"d_model": 16, "nhead": 2, "dim_feedforward": 24}


def build(seed: int = 0, **options) -> TransformerSeq2Seq:
    torch.manual_seed(seed)
    sizes = {"src_vocab_size": SRC_V, "tgt_vocab_size": TGT_V, **SMALL, **options}
    return create_model("transformer_seq2seq", **sizes).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    lengths = torch.tensor([6, 2])
    src = torch.randint(4, SRC_V, (2, 6), generator=gen)
    src[1, 2:] = PAD
    tgt_in = torch.randint(3, TGT_V, (2, 8), generator=gen)
    tgt_in[:, 0] = 1
    tgt_in[1, 5:] = PAD
    return src, lengths, tgt_in


@pytest.mark.parametrize("norm_first", [False, True])
def test_no_position_sees_a_later_target_token(norm_first: bool) -> None:
    net = build(norm_first=norm_first)
    src, lengths, tgt_in = batch()
    reference = net(src, lengths, tgt_in)
    T = tgt_in.shape[1]
    for k in range(1, T):
        changed = tgt_in.clone()
        changed[:, k:] = torch.randint(3, TGT_V, (2, T - k), generator=torch.Generator().manual_seed(k))
        logits = net(src, lengths, changed)
        assert torch.equal(logits[:, :k], reference[:, :k]) or torch.allclose(
            logits[:, :k], reference[:, :k], atol=1e-6, rtol=1e-6
        ), f"position < {k} changed"


def test_attention_weights_are_the_last_layers_memory_attention() -> None:
    net = build(num_decoder_layers=2)
    src, lengths, tgt_in = batch()
    net(src, lengths, tgt_in)
    reported = net.attention_weights

    # Recompute by hand: decoder input, first layer, then the last layer's two attentions (post-LN).
    memory, src_padding = net.encoder(src, lengths)
    dec = net.decoder
    T = tgt_in.shape[1]
    x = dec.pos(dec.embedding(tgt_in) * dec.scale)
    causal = generate_square_subsequent_mask(T)
    masks = {"tgt_mask": causal, "tgt_key_padding_mask": tgt_in == PAD, "memory_key_padding_mask": src_padding}
    x = dec.layers.layers[0](x, memory, **masks)
    last = dec.layers.layers[1]
    sa = last.self_attn(x, x, x, attn_mask=causal, key_padding_mask=tgt_in == PAD, need_weights=False)[0]
    x = last.norm1(x + sa)
    _, expected = last.multihead_attn(x, memory, memory, key_padding_mask=src_padding, need_weights=True)
    assert_close(reported, expected, atol=1e-6, rtol=1e-6)
    assert (reported[1, :, 2:] == 0).all()  # padded source steps


def test_step_recomputes_the_prefix_kept_in_the_state() -> None:
    net = build()
    src, lengths, tgt_in = batch()
    state = net.start(src, lengths)
    assert set(state) == {"memory", "src_padding_mask", "prefix", "attention"}
    assert state["prefix"].shape == (2, 0) and state["src_padding_mask"][1].tolist() == [False] * 2 + [True] * 4
    for t in range(3):
        _, state = net.step(tgt_in[:, t], state)
    assert torch.equal(state["prefix"], tgt_in[:, :3])
    assert net.attention_weights.shape == (2, 3, 6)


def test_share_embeddings_ties_source_target_and_output() -> None:
    net = build(tgt_vocab_size=SRC_V, share_embeddings=True)
    shared = net.encoder.embedding.weight
    assert net.decoder.embedding.weight is shared and net.decoder.fc.weight is shared
    separate = build(tgt_vocab_size=SRC_V)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 - parameters() dedups ties
    assert count(separate) - count(net) == 2 * SRC_V * SMALL["d_model"]
    src, lengths, tgt_in = batch()
    logits = net(src, lengths, tgt_in)
    # Tied to the output layer, the pad row learns (to score low as a prediction); as an
    # input it is masked everywhere, so its value never reaches a real position.
    with torch.no_grad():
        shared[PAD] = torch.randn(SMALL["d_model"])
    real = tgt_in != PAD
    others = slice(PAD + 1, None)  # the pad logit itself is read from the changed row
    assert_close(net(src, lengths, tgt_in)[real][:, others], logits[real][:, others], atol=1e-5, rtol=1e-5)


def test_share_embeddings_needs_one_vocabulary() -> None:
    with pytest.raises(ValueError, match=r"share_embeddings=true .* src_vocab_size=19 and tgt_vocab_size=13"):
        build(share_embeddings=True)


def test_embeddings_have_unit_scale_after_the_sqrt_d_factor() -> None:
    net = build(d_model=64, nhead=4)
    weight = net.encoder.embedding.weight
    assert (weight[PAD] == 0).all()
    scaled_std = (weight[4:] * net.encoder.scale).std().item()
    assert 0.8 < scaled_std < 1.2


def test_bad_sizes_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"d_model \(18\) must be divisible by model.nhead \(4\)"):
        build(d_model=18, nhead=4)
    net = build(max_len=8)
    src, lengths, tgt_in = batch()
    with pytest.raises(ValueError, match=r"sequence length \(9\) exceeds max_len \(8\)"):
        net(src, lengths, torch.cat([tgt_in, tgt_in[:, :1]], dim=1))


def test_copies_report_their_own_attention() -> None:
    net = build()
    twin = copy.deepcopy(net)
    src, lengths, tgt_in = batch()
    twin(src, lengths, tgt_in)
    assert twin.attention_weights.shape == (2, 8, 6) and net.attention_weights is None
