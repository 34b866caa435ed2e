"""dlkit.layers.positional: the sinusoidal table against the formula, shapes, errors."""

from __future__ import annotations

import math

import pytest
import torch

import dlkit.layers.positional as positional_module
from dlkit.layers import LearnedPositionalEncoding, SinusoidalPositionalEncoding

# The tensors here are tiny: waking intra-op threads costs more than it saves,
# many times more on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def formula(pos: int, j: int, d_model: int) -> float:
    """PE(pos, j) written out with math.sin / math.cos."""
    i = j // 2
    angle = pos / 10000 ** (2 * i / d_model)
    return math.sin(angle) if j % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("d_model", [6, 7])  # odd: the last feature is a lone sine
def test_sinusoidal_matches_formula(d_model):
    enc = SinusoidalPositionalEncoding(d_model, max_len=1000)
    out = enc(torch.zeros(1, 1000, d_model))[0]
    for pos in (0, 1, 2, 17, 999):
        expected = torch.tensor([formula(pos, j, d_model) for j in range(d_model)])
        torch.testing.assert_close(out[pos], expected, atol=1e-6, rtol=1e-6)


def test_sinusoidal_golden_row():
    # d_model = 4, pos = 1: sin(1), cos(1), sin(1/100), cos(1/100)
    out = SinusoidalPositionalEncoding(4)(torch.zeros(2, 4))  # unbatched (T, d_model)
    golden = torch.tensor([0.8414709848, 0.5403023059, 0.0099998333, 0.9999500004])
    torch.testing.assert_close(out[1], golden)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_sinusoidal_layouts_add_the_same_table():
    enc = SinusoidalPositionalEncoding(8, batch_first=True)
    x = torch.randn(3, 5, 8)
    out = enc(x)
    torch.testing.assert_close(out - x, enc.pe[:5].expand(3, 5, 8))
    seq_first = SinusoidalPositionalEncoding(8, batch_first=False)
    torch.testing.assert_close(seq_first(x.transpose(0, 1)), out.transpose(0, 1))
    torch.testing.assert_close(enc(x[0]), out[0])  # unbatched (T, d_model)


def test_sinusoidal_buffer_is_not_saved_but_follows_dtype():
    enc = SinusoidalPositionalEncoding(8, max_len=10)
    assert "pe" in dict(enc.named_buffers()) and enc.state_dict() == {}
    assert list(enc.parameters()) == []
    assert enc.double().pe.dtype == torch.float64


def test_dropout_only_in_training():
    layers = (SinusoidalPositionalEncoding(16, dropout=0.5), LearnedPositionalEncoding(8, 16, 0.5))
    for enc in layers:
        x = torch.randn(4, 8, 16)
        clean = enc.eval()(x)
        torch.testing.assert_close(clean, enc.table()[:8] + x)
        assert not torch.allclose(enc.train()(x), clean)


def test_learned_adds_trainable_table():
    enc = LearnedPositionalEncoding(max_len=10, d_model=4)
    assert list(enc.state_dict()) == ["weight"] and enc.weight.shape == (10, 4)
    x = torch.randn(2, 6, 4)
    out = enc(x)
    torch.testing.assert_close(out, x + enc.weight[:6])
    out.sum().backward()
    assert torch.all(enc.weight.grad[:6] == 2) and torch.all(enc.weight.grad[6:] == 0)
    seq_first = LearnedPositionalEncoding(10, 4, batch_first=False)
    seq_first.load_state_dict(enc.state_dict())
    torch.testing.assert_close(seq_first(x.transpose(0, 1)), out.transpose(0, 1))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: SinusoidalPositionalEncoding(8, max_len=16)(torch.zeros(1, 20, 8)),
            r"SinusoidalPositionalEncoding: sequence length \(20\) exceeds max_len \(16\)",
        ),
        (
            lambda: LearnedPositionalEncoding(16, 8, batch_first=False)(torch.zeros(20, 1, 8)),
            r"LearnedPositionalEncoding: sequence length \(20\) exceeds max_len \(16\)",
        ),
        (
            lambda: SinusoidalPositionalEncoding(8)(torch.zeros(1, 5, 6)),
            r"expected input of shape \(N, T, d_model\) or unbatched \(T, d_model\) with "
            r"d_model = 8, got \(1, 5, 6\)",
        ),
        (
            lambda: SinusoidalPositionalEncoding(8)(torch.zeros(1, 1, 5, 8)),
            r"got \(1, 1, 5, 8\)",
        ),
        (
            lambda: SinusoidalPositionalEncoding(8, dropout=1.2),
            r"SinusoidalPositionalEncoding: dropout probability must be in \[0, 1\], got 1.2",
        ),
        (lambda: LearnedPositionalEncoding(0, 8), r"max_len must be positive"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_docstring_examples(docstring_examples):
    docstring_examples(positional_module)
