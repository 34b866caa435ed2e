"""dlkit.layers.transformer against torch.nn with the same weights.

Each case builds the ``torch.nn`` layer, randomises its parameters, loads them into the
dlkit layer with ``strict=True`` and compares outputs, input gradients and parameter
gradients (1e-5 in float32, 1e-10 in float64). Both run in train mode with dropout 0,
which is deterministic and keeps torch off its eval-only fast paths.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dlkit.layers.transformer as transformer_module
from tests.layers.conftest import TOLERANCE, close
from dlkit.layers import (
    Dropout,
    GELU,
    LayerNorm,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    generate_square_subsequent_mask,
)

D_MODEL, NHEAD, FF, N, S, T = 8, 2, 16, 3, 5, 4  # S: source length, T: target length


# The tensors here are tiny: waking intra-op threads costs more than it saves,
# many times more on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (biases and norm scales included), so that sharing
    torch's initial zeros and ones cannot hide a missing term."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module


def seq(length: int, batch_first: bool, dtype: torch.dtype, g: torch.Generator, batched=True):
    shape = (N, length, D_MODEL) if batch_first else (length, N, D_MODEL)
    return torch.randn(*(shape if batched else (length, D_MODEL)), generator=g, dtype=dtype)


def bool_mask(*shape, g: torch.Generator) -> torch.Tensor:
    m = torch.rand(*shape, generator=g) < 0.4
    m[..., 0] = False  # every query keeps at least one key
    return m


def float_mask(*shape, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype).masked_fill(
        bool_mask(*shape, g=g), -math.inf
    )


def compare(ref: nn.Module, ours: nn.Module, inputs, call: dict, dtype: torch.dtype) -> None:
    """Same forward, input gradients and parameter gradients for both modules."""
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.train(), ours.train()
    results = []
    for module in (ref, ours):
        leaves = [x.clone().requires_grad_() for x in inputs]
        out = module(*leaves, **call)
        g = torch.Generator().manual_seed(7)
        module.zero_grad()
        out.backward(torch.randn(out.shape, generator=g, dtype=dtype))
        grads = {n: p.grad for n, p in module.named_parameters()}
        results.append((out, [x.grad for x in leaves], grads))
    (out_r, gx_r, gp_r), (out_o, gx_o, gp_o) = results
    close(out_o, out_r, dtype, "output")
    for a, b in zip(gx_o, gx_r):
        close(a, b, dtype, "input gradient")
    assert gp_o.keys() == gp_r.keys()
    for name in gp_r:
        close(gp_o[name], gp_r[name], dtype, f"gradient of {name}")


def encoder_call(kind: str, dtype: torch.dtype, g: torch.Generator, batched=True) -> dict:
    if kind == "none":
        return {}
    if kind == "bool_masks":
        kpm = bool_mask(N, S, g=g)
        mask = bool_mask(S, S, g=g)
        return {"src_mask": mask, "src_key_padding_mask": kpm if batched else kpm[0]}
    if kind == "float_mask_3d":
        return {"src_mask": float_mask(N * NHEAD, S, S, g=g, dtype=dtype)}
    if kind == "float_kpm":
        return {"src_key_padding_mask": float_mask(N, S, g=g, dtype=dtype)}
    if kind == "causal":
        return {"src_mask": generate_square_subsequent_mask(S, dtype=dtype), "is_causal": True}
    raise KeyError(kind)


def decoder_call(kind: str, dtype: torch.dtype, g: torch.Generator) -> dict:
    if kind == "none":
        return {}
    if kind == "bool_masks":
        return {
            "tgt_mask": bool_mask(T, T, g=g),
            "memory_mask": bool_mask(T, S, g=g),
            "tgt_key_padding_mask": bool_mask(N, T, g=g),
            "memory_key_padding_mask": bool_mask(N, S, g=g),
        }
    if kind == "float_masks":
        return {
            "tgt_mask": float_mask(T, T, g=g, dtype=dtype),
            "memory_mask": float_mask(N * NHEAD, T, S, g=g, dtype=dtype),
            "tgt_key_padding_mask": float_mask(N, T, g=g, dtype=dtype),
            "memory_key_padding_mask": float_mask(N, S, g=g, dtype=dtype),
        }
    if kind == "causal":
        return {
            "tgt_mask": generate_square_subsequent_mask(T, dtype=dtype),
            "tgt_is_causal": True,
            "memory_key_padding_mask": float_mask(N, S, g=g, dtype=dtype),
        }
    if kind == "memory_kpm":
        return {"memory_key_padding_mask": bool_mask(N, S, g=g)}
    raise KeyError(kind)


DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
ENCODER_KINDS = ["none", "bool_masks", "float_mask_3d", "float_kpm", "causal"]
DECODER_KINDS = ["none", "bool_masks", "float_masks", "causal", "memory_kpm"]


# ----------------------------------------------------------------------------- layers


@DTYPES
@pytest.mark.parametrize("kind", ENCODER_KINDS)
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
def test_encoder_layer_matches_torch(batch_first, norm_first, activation, kind, dtype):
    kw = dict(dim_feedforward=FF, dropout=0.0, activation=activation, batch_first=batch_first,
              norm_first=norm_first, dtype=dtype)
    ref = randomize(nn.TransformerEncoderLayer(D_MODEL, NHEAD, **kw))
    ours = TransformerEncoderLayer(D_MODEL, NHEAD, **kw)
    g = torch.Generator().manual_seed(1)
    compare(ref, ours, [seq(S, batch_first, dtype, g)], encoder_call(kind, dtype, g), dtype)


@DTYPES
@pytest.mark.parametrize("kind", DECODER_KINDS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
def test_decoder_layer_matches_torch(batch_first, norm_first, kind, dtype):
    kw = dict(dim_feedforward=FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first,
              dtype=dtype, activation="gelu" if norm_first else "relu")
    ref = randomize(nn.TransformerDecoderLayer(D_MODEL, NHEAD, **kw))
    ours = TransformerDecoderLayer(D_MODEL, NHEAD, **kw)
    g = torch.Generator().manual_seed(2)
    inputs = [seq(T, batch_first, dtype, g), seq(S, batch_first, dtype, g)]
    compare(ref, ours, inputs, decoder_call(kind, dtype, g), dtype)


@pytest.mark.parametrize(
    "kw",
    [
        {"bias": False},
        {"activation": torch.tanh},  # a plain callable
        {"activation": nn.GELU(approximate="tanh"), "norm_first": True},  # a module
        {"layer_norm_eps": 1e-3, "batch_first": True},
    ],
    ids=["no_bias", "callable", "module", "eps"],
)
def test_layer_options_match_torch(kw):
    dtype = torch.float64
    common = dict(dim_feedforward=FF, dropout=0.0, dtype=dtype, **kw)
    g = torch.Generator().manual_seed(3)
    batch_first = kw.get("batch_first", False)
    ref = randomize(nn.TransformerEncoderLayer(D_MODEL, NHEAD, **common))
    ours = TransformerEncoderLayer(D_MODEL, NHEAD, **common)
    compare(ref, ours, [seq(S, batch_first, dtype, g)], encoder_call("bool_masks", dtype, g), dtype)
    ref = randomize(nn.TransformerDecoderLayer(D_MODEL, NHEAD, **common))
    ours = TransformerDecoderLayer(D_MODEL, NHEAD, **common)
    inputs = [seq(T, batch_first, dtype, g), seq(S, batch_first, dtype, g)]
    compare(ref, ours, inputs, decoder_call("bool_masks", dtype, g), dtype)


def test_unbatched_input_matches_torch():
    dtype = torch.float64
    g = torch.Generator().manual_seed(4)
    kw = dict(dim_feedforward=FF, dropout=0.0, dtype=dtype)
    ref = randomize(nn.TransformerEncoderLayer(D_MODEL, NHEAD, **kw))
    ours = TransformerEncoderLayer(D_MODEL, NHEAD, **kw)
    call = encoder_call("bool_masks", dtype, g, batched=False)
    compare(ref, ours, [seq(S, False, dtype, g, batched=False)], call, dtype)
    ref = randomize(nn.TransformerDecoderLayer(D_MODEL, NHEAD, **kw))
    ours = TransformerDecoderLayer(D_MODEL, NHEAD, **kw)
    inputs = [seq(T, False, dtype, g, batched=False), seq(S, False, dtype, g, batched=False)]
    call = {"tgt_mask": generate_square_subsequent_mask(T, dtype=dtype)}
    compare(ref, ours, inputs, call, dtype)


# ----------------------------------------------------------------------------- stacks


def encoder_pair(dtype: torch.dtype, norm_first: bool, batch_first: bool):
    kw = dict(dim_feedforward=FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first,
              dtype=dtype)
    ref = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(D_MODEL, NHEAD, **kw), num_layers=2,
        norm=nn.LayerNorm(D_MODEL, dtype=dtype) if norm_first else None,
        enable_nested_tensor=False,
    )
    ours = TransformerEncoder(
        TransformerEncoderLayer(D_MODEL, NHEAD, **kw), num_layers=2,
        norm=LayerNorm(D_MODEL, dtype=dtype) if norm_first else None,
    )
    return randomize(ref), ours


def decoder_pair(dtype: torch.dtype, norm_first: bool, batch_first: bool):
    kw = dict(dim_feedforward=FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first,
              dtype=dtype)
    ref = nn.TransformerDecoder(
        nn.TransformerDecoderLayer(D_MODEL, NHEAD, **kw), num_layers=2,
        norm=nn.LayerNorm(D_MODEL, dtype=dtype) if norm_first else None,
    )
    ours = TransformerDecoder(
        TransformerDecoderLayer(D_MODEL, NHEAD, **kw), num_layers=2,
        norm=LayerNorm(D_MODEL, dtype=dtype) if norm_first else None,
    )
    return randomize(ref), ours


@DTYPES
@pytest.mark.parametrize("kind", ["none", "bool_masks", "causal"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln_with_norm"])
def test_encoder_stack_matches_torch(norm_first, kind, dtype):
    ref, ours = encoder_pair(dtype, norm_first, batch_first=norm_first)
    g = torch.Generator().manual_seed(5)
    call = encoder_call(kind, dtype, g)
    if "src_mask" in call:
        call["mask"] = call.pop("src_mask")  # the stack names it `mask`
    compare(ref, ours, [seq(S, norm_first, dtype, g)], call, dtype)


@DTYPES
@pytest.mark.parametrize("kind", ["none", "bool_masks", "causal"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln_with_norm"])
def test_decoder_stack_matches_torch(norm_first, kind, dtype):
    ref, ours = decoder_pair(dtype, norm_first, batch_first=not norm_first)
    g = torch.Generator().manual_seed(6)
    inputs = [seq(T, not norm_first, dtype, g), seq(S, not norm_first, dtype, g)]
    compare(ref, ours, inputs, decoder_call(kind, dtype, g), dtype)


def test_stacks_state_dict_keys_and_deep_copies():
    ref, ours = encoder_pair(torch.float32, norm_first=True, batch_first=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert "layers.1.self_attn.in_proj_weight" in ours.state_dict()
    a, b = ours.layers[0].linear1.weight, ours.layers[1].linear1.weight
    assert a is not b and torch.equal(a, b)  # copies start equal but are separate
    ref.load_state_dict(ours.state_dict(), strict=True)  # and back into torch
    ref_dec, ours_dec = decoder_pair(torch.float32, norm_first=False, batch_first=False)
    keys = set(ours_dec.state_dict())
    assert keys == set(ref_dec.state_dict())
    assert {"layers.0.multihead_attn.out_proj.weight", "layers.1.norm3.bias"} <= keys


# ----------------------------------------------------------------------------- behaviour


def test_generate_square_subsequent_mask_equals_torch():
    for sz in (1, 4):
        torch.testing.assert_close(
            generate_square_subsequent_mask(sz), nn.Transformer.generate_square_subsequent_mask(sz)
        )
    assert generate_square_subsequent_mask(3, dtype=torch.float64).dtype == torch.float64


def test_is_causal_without_mask_applies_the_causal_mask():
    dtype = torch.float64
    g = torch.Generator().manual_seed(8)
    _, enc = encoder_pair(dtype, norm_first=False, batch_first=True)
    randomize(enc)
    x = seq(S, True, dtype, g)
    causal = generate_square_subsequent_mask(S, dtype=dtype)
    close(enc(x, is_causal=True), enc(x, mask=causal), dtype)
    _, dec = decoder_pair(dtype, norm_first=False, batch_first=True)
    randomize(dec)
    tgt, memory = seq(T, True, dtype, g), seq(S, True, dtype, g)
    causal = generate_square_subsequent_mask(T, dtype=dtype)
    close(dec(tgt, memory, tgt_is_causal=True), dec(tgt, memory, tgt_mask=causal), dtype)


def test_eval_mode_matches_torch_inference():
    """With dropout 0.1 in eval mode, equal to torch's inference (its fused fast path)."""
    torch.manual_seed(0)
    ref_layer = nn.TransformerEncoderLayer(D_MODEL, NHEAD, FF, batch_first=True)
    ref = nn.TransformerEncoder(ref_layer, 2, enable_nested_tensor=False).eval()
    ours_layer = TransformerEncoderLayer(D_MODEL, NHEAD, FF, batch_first=True)
    ours = TransformerEncoder(ours_layer, 2).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(N, S, D_MODEL)
    kpm = bool_mask(N, S, g=torch.Generator().manual_seed(9))
    with torch.no_grad():
        close(ours(x, src_key_padding_mask=kpm), ref(x, src_key_padding_mask=kpm), torch.float32)


def test_dropout_layers_are_dlkit_and_active_in_training():
    layer = TransformerDecoderLayer(D_MODEL, NHEAD, FF, dropout=0.3, batch_first=True)
    drops = [m for m in layer.modules() if isinstance(m, Dropout)]
    assert len(drops) == 6  # dropout, dropout1-3 and both attentions' weight dropout
    assert all(m.p == 0.3 for m in drops) and not any(isinstance(m, nn.Dropout) for m in drops)
    assert isinstance(TransformerEncoderLayer(D_MODEL, NHEAD, activation="gelu").activation, GELU)
    tgt, memory = torch.randn(N, T, D_MODEL), torch.randn(N, S, D_MODEL)
    layer.eval()
    torch.testing.assert_close(layer(tgt, memory), layer(tgt, memory))
    assert not torch.allclose(layer.train()(tgt, memory), layer.eval()(tgt, memory))


_ENC = TransformerEncoderLayer(D_MODEL, NHEAD, FF)  # (S, N, E) inputs
_DEC = TransformerDecoderLayer(D_MODEL, NHEAD, FF, batch_first=True)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: TransformerEncoderLayer(250, 8),
            r"TransformerEncoderLayer: d_model \(250\) must be divisible by nhead \(8\)",
        ),
        (
            lambda: TransformerDecoderLayer(8, 2, dropout=1.5),
            r"TransformerDecoderLayer: dropout probability must be in \[0, 1\], got 1.5",
        ),
        (
            lambda: TransformerEncoderLayer(8, 2, activation="swishy"),
            r"Unknown activation 'swishy'",
        ),
        (
            lambda: _ENC(torch.randn(S, N, 6)),
            r"TransformerEncoderLayer: src expected shape \(T, N, 8\) or unbatched \(T, 8\), "
            r"got \(5, 3, 6\)",
        ),
        (
            lambda: _ENC(torch.randn(S, N, D_MODEL), src_mask=torch.zeros(S, S + 1)),
            r"TransformerEncoderLayer: src_mask / src_key_padding_mask rejected by attention: "
            r"MultiheadAttention: attn_mask expected shape \(L, S\) = \(5, 5\) or "
            r"\(N\*num_heads, L, S\) = \(6, 5, 5\), got \(5, 6\)",
        ),
        (
            lambda: _DEC(torch.randn(N, T, D_MODEL), torch.randn(N, S, D_MODEL, 1)),
            r"TransformerDecoderLayer: memory expected shape \(N, T, 8\) .*got \(3, 5, 8, 1\)",
        ),
        (
            lambda: _DEC(
                torch.randn(N, T, D_MODEL),
                torch.randn(N, S, D_MODEL),
                memory_key_padding_mask=torch.zeros(N, T, dtype=torch.bool),
            ),
            r"memory_mask / memory_key_padding_mask rejected by attention: .*"
            r"key_padding_mask expected shape \(N, S\) = \(3, 5\), got \(3, 4\)",
        ),
        (lambda: TransformerEncoder(_ENC, 0), r"num_layers must be positive, got 0"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_docstring_examples(docstring_examples):
    docstring_examples(transformer_module)
