"""dlkit.layers.recurrent against torch.nn: same weights in, same outputs and gradients out."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dlkit import layers
from dlkit.layers import recurrent, recurrent_kernels
from dlkit.layers.recurrent_kernels import (
    GRUKernel,
    LSTMKernel,
    RecurrentScan,
    RNNKernel,
    RNNReluKernel,
)

T, B, I, H = 5, 3, 4, 6  # small sizes keep the whole file fast
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

# (name for ids, dlkit class, torch class, extra constructor kwargs)
LAYERS = [
    ("rnn_tanh", layers.RNN, nn.RNN, {}),
    ("rnn_relu", layers.RNN, nn.RNN, {"nonlinearity": "relu"}),
    ("lstm", layers.LSTM, nn.LSTM, {}),
    ("gru", layers.GRU, nn.GRU, {}),
]
# Every layer with every back-end it has: "native" (the C++ loop) is LSTM's only.
LAYER_BACKENDS = [(spec, b) for spec in LAYERS for b in ("bptt", "autograd")] + [(LAYERS[2], "native")]
LAYER_BACKEND_IDS = [f"{spec[0]}-{b}" for spec, b in LAYER_BACKENDS]
CELLS = [
    ("rnn_tanh", layers.RNNCell, nn.RNNCell, {}),
    ("rnn_relu", layers.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    ("lstm", layers.LSTMCell, nn.LSTMCell, {}),
    ("gru", layers.GRUCell, nn.GRUCell, {}),
]


def _pair(spec, dtype=torch.float64, backend="bptt", **kw):
    """A torch.nn layer and its dlkit twin holding the same weights (strict load)."""
    _, ours_cls, ref_cls, extra = spec
    torch.manual_seed(0)
    ref = ref_cls(I, H, **extra, **kw).to(dtype)
    if backend is None:  # cells have no backend argument
        ours = ours_cls(I, H, **extra, **kw, dtype=dtype)
    else:
        ours = ours_cls(I, H, **extra, **kw, dtype=dtype, backend=backend)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _flat(out):
    """Flattens (output, h) / (output, (h, c)) / h / (h, c) into a list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flat(item)]


def _loss(tensors):
    # Weighted, non-linear in each tensor so every gradient path is exercised.
    return sum((t.sin() * (k + 1)).sum() for k, t in enumerate(tensors))


def _assert_same(ref_out, our_out, ref_inputs, our_inputs, ref, ours, tol):
    ref_flat, our_flat = _flat(ref_out), _flat(our_out)
    assert len(ref_flat) == len(our_flat)
    for a, b in zip(ref_flat, our_flat):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=tol, rtol=0)
    wrt_ref = [t for t in ref_inputs if t.requires_grad] + list(ref.parameters())
    wrt_our = [t for t in our_inputs if t.requires_grad] + list(ours.parameters())
    g_ref = torch.autograd.grad(_loss(ref_flat), wrt_ref)
    g_our = torch.autograd.grad(_loss(our_flat), wrt_our)
    for a, b in zip(g_ref, g_our):
        torch.testing.assert_close(b, a, atol=tol, rtol=0)


def _inputs(dtype, batch_first=False, unbatched=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (T, I) if unbatched else ((B, T, I) if batch_first else (T, B, I))
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_()


def _state(ours, dtype, unbatched=False, seed=2):
    g = torch.Generator().manual_seed(seed)
    LD = ours.num_layers * (2 if ours.bidirectional else 1)
    shape = (LD, H) if unbatched else (LD, B, H)
    h0 = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    if ours.mode != "LSTM":
        return h0, [h0]
    c0 = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    return (h0, c0), [h0, c0]


# ---- cells ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "state"])
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_cell_matches_torch(spec, dtype, bias, with_state, unbatched):
    ref, ours = _pair(spec, dtype, backend=None, bias=bias)
    g = torch.Generator().manual_seed(3)
    x = torch.randn((I,) if unbatched else (B, I), generator=g, dtype=dtype).requires_grad_()
    inputs = [x]
    args: tuple = (x,)
    if with_state:
        shape = (H,) if unbatched else (B, H)
        h = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
        if spec[0] == "lstm":
            c = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
            args, inputs = (x, (h, c)), [x, h, c]
        else:
            args, inputs = (x, h), [x, h]
    _assert_same(ref(*args), ours(*args), inputs, inputs, ref, ours, TOL[dtype])


def test_cell_repr_and_state_dict_match_torch():
    for spec in CELLS:
        ref, ours = _pair(spec, backend=None, bias=False)
        assert repr(ours) == repr(ref)
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
            (k, v.shape) for k, v in ref.state_dict().items()
        ]
        ref.load_state_dict(ours.state_dict(), strict=True)


# ---- layers: outputs and gradients ----------------------------------------------------

# Layers x directions in full; batch_first, bias and the initial state, which are
# independent code paths, in an orthogonal array (each pair of them takes all four value
# combinations), so the grid stays small enough to run in a few seconds.
_PAIRWISE = [(False, True, False), (True, True, True), (False, False, True), (True, False, False)]
GRID = [(layers_, bidir, *rest) for layers_ in (1, 2) for bidir in (False, True)
        for rest in _PAIRWISE]  # fmt: skip


def _grid_id(p):
    layers_, bidir, bf, bias, state = p
    return f"L{layers_}-{'bi' if bidir else 'uni'}-{'bf' if bf else 'tf'}-" + (
        f"{'bias' if bias else 'nobias'}-{'h0' if state else 'zeros'}"
    )


@pytest.mark.parametrize(("spec", "backend"), LAYER_BACKENDS, ids=LAYER_BACKEND_IDS)
@pytest.mark.parametrize("config", GRID, ids=[_grid_id(p) for p in GRID])
def test_layer_matches_torch_float64(config, spec, backend):
    num_layers, bidirectional, batch_first, bias, with_state = config
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
              bias=bias)  # fmt: skip
    ref, ours = _pair(spec, torch.float64, backend, **kw)
    x = _inputs(torch.float64, batch_first)
    if with_state:
        hx, states = _state(ours, torch.float64)
        _assert_same(ref(x, hx), ours(x, hx), [x, *states], [x, *states], ref, ours, 1e-10)
    else:
        _assert_same(ref(x), ours(x), [x], [x], ref, ours, 1e-10)


@pytest.mark.parametrize(("spec", "backend"), LAYER_BACKENDS, ids=LAYER_BACKEND_IDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_layer_matches_torch_float32(spec, backend, bidirectional):
    ref, ours = _pair(spec, torch.float32, backend, num_layers=2, bidirectional=bidirectional)
    x = _inputs(torch.float32)
    hx, states = _state(ours, torch.float32)
    _assert_same(ref(x, hx), ours(x, hx), [x, *states], [x, *states], ref, ours, 1e-5)


@pytest.mark.parametrize(("spec", "backend"), LAYER_BACKENDS, ids=LAYER_BACKEND_IDS)
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "h0"])
def test_layer_unbatched_input_matches_torch(spec, backend, with_state):
    ref, ours = _pair(spec, torch.float64, backend, num_layers=2, bidirectional=True)
    x = _inputs(torch.float64, unbatched=True)
    if with_state:
        hx, states = _state(ours, torch.float64, unbatched=True)
        _assert_same(ref(x, hx), ours(x, hx), [x, *states], [x, *states], ref, ours, 1e-10)
    else:
        _assert_same(ref(x), ours(x), [x], [x], ref, ours, 1e-10)


# ---- layers: parameters, state_dict, repr -------------------------------------------


@pytest.mark.parametrize("spec", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_state_dict_repr_and_parameters_match_torch(spec):
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, dropout=0.25, bias=False)
    ref, ours = _pair(spec, torch.float32, **kw)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref.state_dict().items()
    ]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert repr(ours) == repr(ref)
    assert [[p.shape for p in w] for w in ours.all_weights] == [
        [p.shape for p in w] for w in ref.all_weights
    ]
    # dlkit -> torch, strictly, after changing dlkit's weights.
    ours.reset_parameters()
    ref.load_state_dict(ours.state_dict(), strict=True)
    for a, b in zip(ref.parameters(), ours.parameters()):
        assert torch.equal(a, b)
    ours.flatten_parameters()  # a no-op kept for drop-in use


@pytest.mark.parametrize("cls", [layers.RNN, layers.LSTM, layers.GRU, layers.LSTMCell])
def test_default_init_is_uniform_in_inverse_sqrt_hidden(cls):
    torch.manual_seed(0)
    m = cls(16, 64)
    bound = 64**-0.5
    values = torch.cat([p.detach().flatten() for p in m.parameters()])
    assert values.abs().max() <= bound
    # U(-b, b) has std b/sqrt(3); a wrong init would be far off.
    assert abs(values.std().item() - bound / 3**0.5) < 0.05 * bound


def test_device_and_dtype_arguments():
    m = layers.GRU(I, H, num_layers=2, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in m.parameters())
    cell = layers.LSTMCell(I, H, dtype=torch.float64)
    assert cell.weight_hh.dtype == torch.float64


# ---- the hand-written backward ------------------------------------------------------


@pytest.mark.parametrize(
    "kernel", [RNNKernel, RNNReluKernel, LSTMKernel, GRUKernel],
    ids=["rnn_tanh", "rnn_relu", "lstm", "gru"],
)  # fmt: skip
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_recurrent_scan_gradcheck(kernel, padded):
    # The hand-written backward of one layer-direction against finite differences.
    torch.manual_seed(0)
    steps, batch, features, hidden = 4, 3, 2, 2
    G = kernel.num_gates * hidden
    opts = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(steps, batch, features, **opts)
    w_ih, b_ih = torch.randn(G, features, **opts), torch.randn(G, **opts)
    w_hh, b_hh = torch.randn(G, hidden, **opts), torch.randn(G, **opts)
    h0 = torch.randn(batch, hidden, **opts)
    c0 = torch.randn(batch, hidden, **opts) if kernel.has_cell else None
    sizes, last = None, None
    if padded:  # lengths 4, 2, 1 (sorted, as the layer passes them)
        sizes, last = [3, 2, 1, 1], torch.tensor([3, 1, 0])
    if kernel is RNNReluKernel:
        b_ih = (b_ih.detach() + 1.0).requires_grad_()  # keep pre-activations off the kink

    def fn(x, w_ih, b_ih, w_hh, b_hh, h0, c0):
        return RecurrentScan.apply(kernel, x, w_ih, b_ih, w_hh, b_hh, h0, c0, sizes, last)

    assert torch.autograd.gradcheck(fn, (x, w_ih, b_ih, w_hh, b_hh, h0, c0))
    # Without biases, too.
    assert torch.autograd.gradcheck(
        lambda x, w_ih, w_hh, h0: fn(x, w_ih, None, w_hh, None, h0, c0), (x, w_ih, w_hh, h0)
    )


@pytest.mark.parametrize("cls", [layers.RNN, layers.LSTM, layers.GRU])
def test_layer_gradcheck_with_lengths(cls):
    # The whole layer (sorting, per-sequence reversal, two layers, both directions) with
    # its parameters as gradcheck inputs; tiny sizes and fast_mode keep it quick.
    torch.manual_seed(0)
    ours = cls(2, 2, num_layers=2, bidirectional=True, dtype=torch.float64)
    names = [n for n, _ in ours.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 3])

    def fn(x, *params):
        out = torch.func.functional_call(ours, dict(zip(names, params)), (x,),
                                         {"lengths": lengths})  # fmt: skip
        return tuple(_flat(out))

    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)


@pytest.mark.parametrize(("spec", "backend"), LAYER_BACKENDS, ids=LAYER_BACKEND_IDS)
def test_single_step_matches_torch_without_the_scan(spec, backend, monkeypatch):
    # One step (a decoder called token by token) runs the cell under autograd in every
    # back-end: the same numbers as torch.nn, and RecurrentScan is never entered.
    def refuse(*args):
        raise AssertionError("RecurrentScan ran for a single step")

    monkeypatch.setattr(RecurrentScan, "apply", refuse)
    ref, ours = _pair(spec, torch.float64, backend, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, 1, I, dtype=torch.float64, requires_grad=True)
    hx, states = _state(ours, torch.float64)
    _assert_same(ref(x, hx), ours(x, hx), [x, *states], [x, *states], ref, ours, 1e-10)


def test_bptt_backend_refuses_double_backward_and_autograd_backend_supports_it():
    x = _inputs(torch.float64)
    for backend, ok in (("bptt", False), ("autograd", True)):
        m = layers.GRU(I, H, dtype=torch.float64, backend=backend)
        (gx,) = torch.autograd.grad(m(x)[0].pow(2).sum(), x, create_graph=True)
        if ok:
            torch.autograd.grad(gx.sum(), x)
        else:
            with pytest.raises(RuntimeError):
                torch.autograd.grad(gx.sum(), x)


# ---- padded batches ----------------------------------------------------------------


@pytest.mark.parametrize(("spec", "backend"), LAYER_BACKENDS, ids=LAYER_BACKEND_IDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_lengths_equal_running_each_sequence_alone(spec, backend, bidirectional):
    _, ours = _pair(spec, torch.float64, backend, num_layers=2, bidirectional=bidirectional,
                    batch_first=True)  # fmt: skip
    lengths = [3, 5, 1]  # unsorted on purpose
    x = _inputs(torch.float64, batch_first=True).detach()
    hx, _ = _state(ours, torch.float64)
    out, state = ours(x, hx, lengths=torch.tensor(lengths))
    for b, n in enumerate(lengths):
        hx_b = tuple(s[:, b : b + 1] for s in hx) if isinstance(hx, tuple) else hx[:, b : b + 1]
        out_b, state_b = ours(x[b : b + 1, :n], hx_b)
        torch.testing.assert_close(out[b, :n], out_b[0], atol=1e-12, rtol=0)
        assert torch.all(out[b, n:] == 0)
        for s, s_b in zip(_flat(state), _flat(state_b)):
            torch.testing.assert_close(s[:, b], s_b[:, 0], atol=1e-12, rtol=0)


@pytest.mark.parametrize(("spec", "backend"), LAYER_BACKENDS, ids=LAYER_BACKEND_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_lengths_match_torch_packed_sequences(spec, backend, dtype):
    ref, ours = _pair(spec, dtype, backend, num_layers=2, bidirectional=True)
    lengths = torch.tensor([3, 5, 1])
    x = _inputs(dtype)
    hx, states = _state(ours, dtype)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    ref_packed, ref_state = ref(packed, hx)
    ref_out, _ = pad_packed_sequence(ref_packed, total_length=T)
    our_out = ours(x, hx, lengths=lengths)
    inputs = [x, *states]
    _assert_same((ref_out, ref_state), our_out, inputs, inputs, ref, ours, TOL[dtype])


@pytest.mark.parametrize("spec", LAYERS, ids=[c[0] for c in LAYERS])
@pytest.mark.parametrize(
    "steps, batch, hidden, lengths",
    [(1, 3, 4, None), (4, 1, 1, [2]), (3, 2, 3, [1, 1]), (3, 4, 2, [3, 1, 2, 1])],
    ids=["one_step", "one_sequence", "all_length_one", "ties"],
)  # fmt: skip
def test_edge_shapes_match_torch(spec, steps, batch, hidden, lengths):
    _, ours_cls, ref_cls, extra = spec
    torch.manual_seed(0)
    ref = ref_cls(I, hidden, num_layers=2, bidirectional=True, **extra).double()
    ours = ours_cls(I, hidden, num_layers=2, bidirectional=True, **extra, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict(), strict=True)
    # A non-contiguous time-major view of a batch-major tensor.
    x = torch.randn(batch, steps, I, dtype=torch.float64).transpose(0, 1).requires_grad_()
    if lengths is None:
        ref_out, our_out = ref(x), ours(x)
    else:
        lens = torch.tensor(lengths)
        packed, state = ref(pack_padded_sequence(x, lens, enforce_sorted=False))
        ref_out = (pad_packed_sequence(packed, total_length=steps)[0], state)
        our_out = ours(x, lengths=lens)
    _assert_same(ref_out, our_out, [x], [x], ref, ours, 1e-10)


def test_lengths_all_full_equal_no_lengths_and_accept_a_list():
    m = layers.LSTM(I, H, bidirectional=True, dtype=torch.float64)
    x = _inputs(torch.float64)
    full = m(x)
    for lengths in (torch.full((B,), T), [T] * B):
        for a, b in zip(_flat(full), _flat(m(x, lengths=lengths))):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


# ---- dropout between layers -------------------------------------------------------


@pytest.mark.parametrize("cls", [layers.RNN, layers.LSTM, layers.GRU])
def test_dropout_only_in_training(cls):
    torch.manual_seed(0)
    m = cls(I, H, num_layers=2, dropout=0.5, dtype=torch.float64)
    x = _inputs(torch.float64).detach()
    no_dropout = cls(I, H, num_layers=2, dtype=torch.float64)
    no_dropout.load_state_dict(m.state_dict())
    reference = no_dropout(x)[0]

    m.eval()
    torch.testing.assert_close(m(x)[0], reference, atol=0, rtol=0)
    m.train()
    torch.manual_seed(1)
    first = m(x)[0]
    torch.manual_seed(2)
    second = m(x)[0]
    assert not torch.allclose(first, reference)
    assert not torch.allclose(first, second)

    m.dropout = 0.0  # p = 0 in training is the plain network
    torch.testing.assert_close(m(x)[0], reference, atol=0, rtol=0)


def test_dropout_one_zeroes_the_upper_layer_input():
    m = layers.GRU(I, H, num_layers=2, dropout=1.0, dtype=torch.float64)
    x = _inputs(torch.float64).detach()
    out = m(x)[0]
    upper = layers.GRU(H, H, dtype=torch.float64)
    upper.load_state_dict({k.replace("_l1", "_l0"): v for k, v in m.state_dict().items()
                           if "_l1" in k})  # fmt: skip
    torch.testing.assert_close(out, upper(torch.zeros(T, B, H, dtype=torch.float64))[0])


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers"):
        layers.LSTM(I, H, dropout=0.3)


# ---- bad input ------------------------------------------------------------------------


def test_bad_input_shapes_raise_helpful_errors():
    lstm = layers.LSTM(32, 128)
    with pytest.raises(ValueError, match=r"LSTM expected input with 32 features \(last dim\), "
                                         r"got shape \(50, 64, 16\)"):  # fmt: skip
        lstm(torch.randn(50, 64, 16))
    with pytest.raises(ValueError, match=r"2-D \(unbatched\) or 3-D \(batched\).*\(50,\)"):
        lstm(torch.randn(50))
    with pytest.raises(ValueError, match=r"2-D.*\(1, 2, 3, 32\)"):
        lstm(torch.randn(1, 2, 3, 32))

    x = torch.randn(5, 3, 32)
    with pytest.raises(ValueError, match=r"h_0 of shape \(1, 3, 128\), got \(2, 3, 128\)"):
        lstm(x, (torch.zeros(2, 3, 128), torch.zeros(1, 3, 128)))
    with pytest.raises(ValueError, match=r"c_0 of shape \(1, 3, 128\), got \(1, 3, 64\)"):
        lstm(x, (torch.zeros(1, 3, 128), torch.zeros(1, 3, 64)))
    with pytest.raises(ValueError, match=r"LSTM expected hx=\(h_0, c_0\), got Tensor"):
        lstm(x, torch.zeros(1, 3, 128))
    gru = layers.GRU(32, 128, num_layers=2)
    with pytest.raises(ValueError, match=r"GRU expected h_0 of shape \(2, 128\), got \(2, 3, 128"):
        gru(torch.randn(5, 32), torch.zeros(2, 3, 128))  # unbatched input, batched state


def test_bad_lengths_raise_helpful_errors():
    gru = layers.GRU(I, H)
    x = torch.randn(T, B, I)
    with pytest.raises(ValueError, match=r"GRU expected lengths of shape \(3,\), got \(2,\)"):
        gru(x, lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"lengths in \[1, 5\].*from 0 to 5"):
        gru(x, lengths=torch.tensor([0, 5, 2]))
    with pytest.raises(ValueError, match=r"lengths in \[1, 5\].*from 2 to 6"):
        gru(x, lengths=torch.tensor([6, 2, 2]))
    with pytest.raises(ValueError, match=r"integer lengths, got dtype torch.float32"):
        gru(x, lengths=torch.tensor([1.0, 2.0, 3.0]))


def test_bad_constructor_arguments_raise():
    for dropout in (-0.1, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match=r"dropout in \[0, 1\]"):
            layers.LSTM(I, H, num_layers=2, dropout=dropout)
    for cls in (layers.RNN, layers.RNNCell):
        with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu', got 'gelu'"):
            cls(I, H, nonlinearity="gelu")
    with pytest.raises(ValueError, match="hidden_size > 0"):
        layers.GRU(I, 0)
    with pytest.raises(ValueError, match="num_layers > 0"):
        layers.GRU(I, H, num_layers=0)
    with pytest.raises(ValueError, match="backend"):
        layers.GRU(I, H, backend="cudnn")
    with pytest.raises(NotImplementedError, match="proj_size"):
        layers.LSTM(I, H, proj_size=2)


def test_bad_cell_input_raises():
    cell = layers.LSTMCell(I, H)
    with pytest.raises(ValueError, match=rf"LSTMCell expected input with {I} features"):
        cell(torch.randn(B, I + 1))
    with pytest.raises(ValueError, match=r"1-D \(unbatched\) or 2-D \(batched\)"):
        cell(torch.randn(T, B, I))
    with pytest.raises(ValueError, match=rf"LSTMCell expected c of shape \({B}, {H}\)"):
        cell(torch.randn(B, I), (torch.zeros(B, H), torch.zeros(B + 1, H)))
    with pytest.raises(ValueError, match=rf"GRUCell expected hx of shape \({H},\)"):
        layers.GRUCell(I, H)(torch.randn(I), torch.zeros(1, H))


@pytest.mark.parametrize("cls", [layers.GRU, layers.LSTM, layers.RNN])
def test_graphs_are_freed_after_backward(cls) -> None:
    # Returning the kernel's own output buffer would make a reference cycle
    # (output -> grad_fn -> ctx -> kernel -> output) that keeps each graph alive until a
    # full garbage collection; reference counting alone must free it.
    import gc
    import weakref

    layer = cls(4, 8)  # time-major: the output is the kernel's buffer itself, not a view
    gc.disable()
    try:
        out, _ = layer(torch.randn(5, 3, 4, requires_grad=True))
        probe = weakref.ref(out)
        out.sum().backward()
        del out, _
        assert probe() is None, "the output (and its autograd graph) is kept alive by a cycle"
    finally:
        gc.enable()


@pytest.mark.parametrize("module", [recurrent, recurrent_kernels], ids=lambda m: m.__name__)
def test_docstring_examples(docstring_examples, module):
    docstring_examples(module)


@pytest.mark.parametrize("hidden", [1, 3], ids=["h1", "h3"])
@pytest.mark.parametrize("spec", LAYERS, ids=[c[0] for c in LAYERS])
def test_forward_never_writes_the_parameters(spec, hidden):
    # The scan scales a private copy of W_hh in place; with hidden size 1 a transposed
    # weight is already contiguous, so a careless copy would alias the parameter.
    _, ours_cls, _, extra = spec
    ours = ours_cls(2, hidden, **extra, num_layers=2, bidirectional=True)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    out, _ = ours(torch.randn(4, 3, 2))
    out.sum().backward()
    for k, v in ours.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_tanh_via_sigmoid_matches_tanh():
    from dlkit.layers.recurrent_kernels import tanh_

    x = torch.cat([torch.linspace(-30, 30, 2001, dtype=torch.float64), torch.tensor([0.0, 1e-300, -1e-8])])
    torch.testing.assert_close(tanh_(x.clone()), torch.tanh(x), atol=1e-15, rtol=0)
    x32 = x.float()
    out = torch.empty_like(x32)
    assert tanh_(x32, out=out) is out
    torch.testing.assert_close(out, torch.tanh(x32), atol=3e-7, rtol=0)
    assert torch.isnan(tanh_(torch.tensor([float("nan")]))).all()
    assert tanh_(torch.tensor([float("inf"), float("-inf")])).tolist() == [1.0, -1.0]
