"""Every seq2seq model: shapes, padding masks, causality, step-by-step decoding, states.

The models are tiny (8-16 units) and run in eval mode, so every comparison is exact up
to float rounding.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.testing import assert_close

from dlkit.layers import AdditiveAttention, Dropout, LuongAttention
from dlkit.models import EncoderDecoder, create_model, list_models
from dlkit.models.encoder_decoder import select_rows
from dlkit.models.seq2seq import RNNSeq2Seq, Seq2SeqConfig

SRC_V, TGT_V = 17, 11
PAD, BOS, EOS = 0, 1, 2
# Every registered encoder-decoder: a new family is tested by being registered.
SEQ2SEQ_MODELS = list_models(kind="seq2seq")
RECURRENT = {"embed_dim": 8, "hidden_size": 12}
SMALL = {
    "seq2seq_rnn": RECURRENT,
    "seq2seq_bahdanau": RECURRENT,
    "seq2seq_luong": RECURRENT,
    "transformer_seq2seq": {"d_model": 16, "nhead": 2, "dim_feedforward": 24},
}
# (id, registered name, options): the registered models plus the options that change
# the code path (cell, layers, directions, Luong's scores and input feeding).
CASES = [
    ("rnn", "seq2seq_rnn", {}),
    ("rnn-lstm-2layers-bi", "seq2seq_rnn", {"cell": "lstm", "num_layers": 2, "bidirectional": True}),
    ("bahdanau", "seq2seq_bahdanau", {}),
    ("bahdanau-lstm-2layers-bi", "seq2seq_bahdanau", {"cell": "lstm", "num_layers": 2, "bidirectional": True}),
    ("luong-dot", "seq2seq_luong", {"score": "dot"}),
    ("luong-general", "seq2seq_luong", {"score": "general"}),
    ("luong-concat", "seq2seq_luong", {"score": "concat", "attention_size": 6}),
    ("luong-general-no-feeding", "seq2seq_luong", {"score": "general", "input_feeding": False}),
    ("luong-dot-lstm-2layers", "seq2seq_luong", {"score": "dot", "cell": "lstm", "num_layers": 2}),
    ("transformer", "transformer_seq2seq", {}),
    ("transformer-prenorm-shared", "transformer_seq2seq", {"norm_first": True, "share_embeddings": True}),
]
ATTENTION_CASES = [c for c in CASES if c[1] != "seq2seq_rnn"]
IDS = [c[0] for c in CASES]


def build(name: str, seed: int = 0, **options) -> EncoderDecoder:
    torch.manual_seed(seed)
    vocab = {"src_vocab_size": SRC_V, "tgt_vocab_size": TGT_V}
    if options.get("share_embeddings"):
        vocab = {"src_vocab_size": SRC_V, "tgt_vocab_size": SRC_V}
    return create_model(name, **vocab, **SMALL[name], **options).eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three sources of lengths 7, 4 and 1 (padded), and targets with padding in row 2."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 4, 1])
    src = torch.randint(4, SRC_V, (3, 7), generator=gen)
    src[torch.arange(7) >= lengths.unsqueeze(1)] = PAD
    tgt_in = torch.randint(3, TGT_V, (3, 6), generator=gen)
    tgt_in[:, 0] = BOS
    tgt_in[2, 4:] = PAD  # [bos, y1, y2, eos?, pad, pad]
    return src, lengths, tgt_in


def stepwise(net: EncoderDecoder, src, lengths, tokens) -> torch.Tensor:
    """Logits of feeding ``tokens`` one at a time through start/step: (B, T, V)."""
    state = net.start(src, lengths)
    steps = []
    for t in range(tokens.shape[1]):
        logits, state = net.step(tokens[:, t], state)
        steps.append(logits)
    return torch.stack(steps, dim=1)


def test_every_seq2seq_model_is_registered() -> None:
    assert set(SEQ2SEQ_MODELS) <= set(list_models())
    # A new family needs its tiny sizes here (and cases in CASES) to be tested.
    assert SEQ2SEQ_MODELS and set(SEQ2SEQ_MODELS) == set(SMALL) == {c[1] for c in CASES}
    assert all(isinstance(build(name), EncoderDecoder) for name in SEQ2SEQ_MODELS)


@pytest.mark.parametrize(("name", "options"), [c[1:] for c in CASES], ids=IDS)
def test_shapes_attributes_and_backward(name: str, options: dict) -> None:
    net = build(name, **options).train()
    src, lengths, tgt_in = batch()
    logits = net(src, lengths, tgt_in)
    V = net.tgt_vocab_size
    assert logits.shape == (3, 6, V)
    assert (net.pad_id, net.bos_id, net.eos_id) == (PAD, BOS, EOS) and net.src_vocab_size == SRC_V
    weights = net.attention_weights
    if name == "seq2seq_rnn":
        assert weights is None
    else:
        assert weights.shape == (3, 6, 7)
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize(("name", "options"), [c[1:] for c in ATTENTION_CASES], ids=[c[0] for c in ATTENTION_CASES])
def test_padded_source_steps_get_exactly_zero_attention(name: str, options: dict) -> None:
    net = build(name, **options)
    src, lengths, tgt_in = batch()
    net(src, lengths, tgt_in)
    stepped = stepwise(net, src, lengths, tgt_in)
    assert stepped.shape == (3, 6, net.tgt_vocab_size)
    weights = net.attention_weights  # accumulated by step()
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(weights[b, :, n:], torch.zeros_like(weights[b, :, n:]))
    assert_close(weights.sum(-1), torch.ones(3, 6))
    net(src, lengths, tgt_in)
    forward_weights = net.attention_weights
    assert (forward_weights[1, :, 4:] == 0).all() and (forward_weights[2, :, 1:] == 0).all()
    assert_close(forward_weights[2, :, 0], torch.ones(6))  # one valid step takes all the weight


@pytest.mark.parametrize(("name", "options"), [c[1:] for c in CASES], ids=IDS)
def test_padding_content_and_extra_padding_do_not_change_logits(name: str, options: dict) -> None:
    net = build(name, **options)
    src, lengths, tgt_in = batch()
    reference = net(src, lengths, tgt_in)
    # Garbage (non-pad ids) in the padded steps: masks, not zero embeddings, must hide them.
    noisy = src.clone()
    pad = torch.arange(7) >= lengths.unsqueeze(1)
    noisy[pad] = torch.randint(4, SRC_V, (int(pad.sum()),), generator=torch.Generator().manual_seed(5))
    assert_close(net(noisy, lengths, tgt_in), reference, atol=1e-5, rtol=1e-5)
    # Three more padded steps for everybody.
    longer = torch.cat([src, torch.full((3, 3), PAD)], dim=1)
    assert_close(net(longer, lengths, tgt_in), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "options"), [c[1:] for c in CASES], ids=IDS)
def test_changing_a_future_target_token_leaves_earlier_logits_unchanged(name: str, options: dict) -> None:
    net = build(name, **options)
    src, lengths, tgt_in = batch()
    reference = net(src, lengths, tgt_in)
    for k in (1, 3, 5):
        changed = tgt_in.clone()
        changed[:, k] = (changed[:, k] + 1 - 3) % (TGT_V - 3) + 3  # another ordinary token
        logits = net(src, lengths, changed)
        assert_close(logits[:, :k], reference[:, :k], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(logits[:, k], reference[:, k])  # the input is read at step k


@pytest.mark.parametrize(("name", "options"), [c[1:] for c in CASES], ids=IDS)
def test_teacher_forced_forward_equals_start_and_step(name: str, options: dict) -> None:
    net = build(name, **options)
    src, lengths, tgt_in = batch()
    logits = net(src, lengths, tgt_in)
    forward_weights = net.attention_weights
    assert_close(stepwise(net, src, lengths, tgt_in), logits, atol=1e-5, rtol=1e-5)
    if forward_weights is not None:
        assert_close(net.attention_weights, forward_weights, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "options"), [c[1:] for c in CASES], ids=IDS)
def test_select_state_picks_rows(name: str, options: dict) -> None:
    net = build(name, **options)
    src, lengths, tgt_in = batch()
    state = net.start(src, lengths)
    logits, state = net.step(tgt_in[:, 0], state)
    index = torch.tensor([2, 0, 0, 1])
    picked = net.select_state(state, index)
    for key, value in picked.items():
        assert torch.equal(value, state[key].index_select(0, index)), key
    if "attention" in picked:
        assert torch.equal(net.attention_weights, state["attention"][index])
    # Stepping the picked rows is stepping the batch and picking its rows.
    y = tgt_in[:, 1]
    full, _ = net.step(y, state)
    rows, _ = net.step(y[index], picked)
    assert_close(rows, full[index], atol=1e-6, rtol=1e-6)


def test_select_rows_keeps_structure() -> None:
    state = {"h": torch.arange(6).view(3, 2), "pair": (torch.arange(3), None), "n": 4}
    picked = select_rows(state, torch.tensor([1, 1]))
    assert picked["h"].tolist() == [[2, 3], [2, 3]] and picked["pair"][0].tolist() == [1, 1]
    assert picked["pair"][1] is None and picked["n"] == 4


@pytest.mark.parametrize(("name", "options"), [c[1:] for c in CASES if c[1] != "transformer_seq2seq"],
                         ids=[c[0] for c in CASES if c[1] != "transformer_seq2seq"])
def test_teacher_forcing_ratio_zero_feeds_the_argmax(name: str, options: dict) -> None:
    net = build(name, **options)
    src, lengths, tgt_in = batch()
    free = net(src, lengths, tgt_in, teacher_forcing_ratio=0.0)
    # Greedy decoding by hand: only tgt_in's first token (bos) and its length are used.
    state = net.start(src, lengths)
    y, steps = tgt_in[:, 0], []
    for _ in range(tgt_in.shape[1]):
        logits, state = net.step(y, state)
        steps.append(logits)
        y = logits.argmax(-1)
    assert_close(free, torch.stack(steps, dim=1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(free, net(src, lengths, tgt_in))
    assert_close(net(src, lengths, tgt_in, teacher_forcing_ratio=1.0), net(src, lengths, tgt_in))


def test_teacher_forcing_ratio_between_mixes_per_row_and_step() -> None:
    net = build("seq2seq_bahdanau")
    src, lengths, tgt_in = batch()
    torch.manual_seed(0)
    mixed = net(src, lengths, tgt_in, teacher_forcing_ratio=0.5)
    assert mixed.shape == (3, 6, TGT_V) and net.attention_weights.shape == (3, 6, 7)
    # The first step never depends on the ratio: it reads bos.
    assert_close(mixed[:, 0], net(src, lengths, tgt_in)[:, 0])
    with pytest.raises(ValueError, match=r"teacher_forcing_ratio must be in \[0, 1\]"):
        net(src, lengths, tgt_in, teacher_forcing_ratio=1.5)


def test_transformer_ignores_the_ratio_with_a_warning() -> None:
    net = build("transformer_seq2seq")
    src, lengths, tgt_in = batch()
    with pytest.warns(UserWarning, match="always teacher-forced"):
        free = net(src, lengths, tgt_in, teacher_forcing_ratio=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_close(free, net(src, lengths, tgt_in))


@pytest.mark.parametrize(
    "attention",
    [
        AdditiveAttention(key_size=12, query_size=12, num_hiddens=5),
        LuongAttention("dot"),
        LuongAttention("general", query_size=12, key_size=12),
        LuongAttention("concat", query_size=12, key_size=12, num_hiddens=7),
    ],
    ids=["additive", "luong-dot", "luong-general", "luong-concat"],
)
def test_cached_key_projection_equals_the_layer(attention) -> None:
    torch.manual_seed(0)
    queries, keys = torch.randn(3, 2, 12), torch.randn(3, 7, 12)
    lengths = torch.tensor([7, 4, 1])
    expected = attention(queries, keys, keys, valid_lens=lengths)
    expected_weights = attention.attention_weights
    got = attention(queries, keys, keys, valid_lens=lengths, projected_keys=attention.project_keys(keys))
    assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert_close(attention.attention_weights, expected_weights, atol=1e-6, rtol=1e-6)


def test_bidirectional_encoder_sums_directions() -> None:
    net = build("seq2seq_bahdanau", bidirectional=True)
    src, lengths, _ = batch()
    outputs, h_n = net.encoder(src, lengths)
    assert outputs.shape == (3, 7, 12) and h_n.shape == (1, 3, 12)
    both, h_both = net.encoder.rnn(net.encoder.embedding(src), lengths=lengths)
    assert_close(outputs, both[..., :12] + both[..., 12:])
    assert_close(h_n[0], h_both[0] + h_both[1])
    assert (outputs[1, 4:] == 0).all()


@pytest.mark.parametrize("name", SEQ2SEQ_MODELS)
def test_state_dict_round_trip(name: str) -> None:
    net = build(name, seed=0)
    other = build(name, seed=1)
    other.load_state_dict(net.state_dict(), strict=True)
    src, lengths, tgt_in = batch()
    assert_close(other(src, lengths, tgt_in), net(src, lengths, tgt_in))


@pytest.mark.parametrize("name", SEQ2SEQ_MODELS)
def test_dropout_and_drop_rate_reach_their_layers(name: str) -> None:
    net = build(name, dropout=0.3, drop_rate=0.2)
    assert net.decoder.head_drop.p == 0.2  # before the output layer
    assert 0.3 in {m.p for m in net.encoder.modules() if isinstance(m, Dropout)}
    src, lengths, tgt_in = batch()
    net.train()
    assert not torch.allclose(net(src, lengths, tgt_in), net(src, lengths, tgt_in))
    net.eval()
    assert torch.equal(net(src, lengths, tgt_in), net(src, lengths, tgt_in))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", SEQ2SEQ_MODELS)
def test_bad_batches_raise_clear_errors(name: str) -> None:
    net = build(name)
    src, lengths, tgt_in = batch()
    with pytest.raises(ValueError, match=r"src holds ids from .* vocabulary has 17 tokens"):
        net(src + SRC_V, lengths, tgt_in)
    with pytest.raises(ValueError, match=r"tgt_in holds ids .* vocabulary has"):
        net(src, lengths, tgt_in + 100)
    with pytest.raises(ValueError, match=r"src_lengths must be in \[1, 7\].*empty source"):
        net(src, torch.tensor([7, 0, 1]), tgt_in)
    with pytest.raises(ValueError, match=r"src_lengths expected integer lengths of shape \(3,\)"):
        net(src, torch.tensor([7, 4]), tgt_in)
    with pytest.raises(ValueError, match=r"src expected integer token ids"):
        net(src.float(), lengths, tgt_in)
    with pytest.raises(ValueError, match="same batch size"):
        net(src, lengths, tgt_in[:2])
    with pytest.raises(ValueError, match=r"y_prev expected shape \(B,\)"):
        net.step(tgt_in[:, :1], net.start(src, lengths))


@pytest.mark.parametrize("name", SEQ2SEQ_MODELS)
def test_missing_vocabulary_sizes_or_ids_name_the_fix(name: str) -> None:
    with pytest.raises(ValueError, match=r"model.src_vocab_size .* got None.*model_hints"):
        create_model(name, tgt_vocab_size=TGT_V)
    with pytest.raises(ValueError, match=r"model.pad_id must be a token id .* got None"):
        create_model(name, src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, pad_id=None)


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="model.cell must be one of"):
        create_model("seq2seq_bahdanau", src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, cell="rnn")
    with pytest.raises(ValueError, match="model.score must be"):
        create_model("seq2seq_luong", src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, score="cosine")
    with pytest.raises(ValueError, match="attention must be one of"):
        RNNSeq2Seq(Seq2SeqConfig(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V), attention="multihead")


def test_the_transformers_teacher_forced_forward_is_one_graph_for_torch_compile() -> None:
    # compile=true: the value checks (ids in the vocabulary, lengths in range) read tensors
    # back and would split the graph; under torch.compile only shapes and dtypes are checked.
    # (The recurrent models' time loops over lengths still split it: not yet tested here.)
    import torch._dynamo

    torch._dynamo.reset()
    explained = torch._dynamo.explain(build("transformer_seq2seq").train())(*batch())
    assert explained.graph_break_count == 0, [r.reason.splitlines()[0] for r in explained.break_reasons]
