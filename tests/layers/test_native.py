"""LSTM(backend="native"): the C++ time loop, its build, and what it refuses.

Parity with torch.nn.LSTM over the whole configuration grid (layers, directions, states,
padded batches, float32/float64) is in test_recurrent.py, which runs every back-end; here
are the shapes that take the C++ kernel's other code paths, and its errors.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dlkit.layers.native as native
from dlkit import create_model, layers

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def _pair(input_size: int, hidden: int, **kw) -> tuple[nn.LSTM, layers.LSTM]:
    torch.manual_seed(0)
    ref = nn.LSTM(input_size, hidden, **kw).double()
    ours = layers.LSTM(input_size, hidden, backend="native", dtype=torch.float64, **kw)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize(
    ("batch", "hidden", "threads"),
    [(5, 40, 1),    # two full vectors of 16 (AVX-512) or 8 (AVX2) lanes, then a partial one
     (300, 32, 2)],  # enough rows for the step's rows to be split over two threads
    ids=["vector-tail", "rows-split-over-threads"],
)  # fmt: skip
def test_the_kernels_other_paths_match_torch(batch: int, hidden: int, threads: int) -> None:
    ref, ours = _pair(3, hidden)
    x = torch.randn(7, batch, 3, dtype=torch.float64, requires_grad=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        outs = []
        for m in (ref, ours):
            y, (h, c) = m(x)
            loss = (y.sin().sum() + 2 * h.cos().sum() + 3 * c.sin().sum())
            outs.append([y, h, c, *torch.autograd.grad(loss, [x, *m.parameters()])])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=0)


def test_a_retained_graph_gives_the_same_gradients_twice() -> None:
    _, ours = _pair(3, 8)
    x = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    y, _ = ours(x)
    first = torch.autograd.grad(y.sum(), x, retain_graph=True)[0]
    second = torch.autograd.grad(y.sum(), x)[0]
    torch.testing.assert_close(second, first, atol=0, rtol=0)  # the forward's buffers were left alone


def test_native_is_refused_for_other_cells_and_tensors_it_cannot_run() -> None:
    with pytest.raises(ValueError, match="backend 'native' exists for LSTM only.*'bptt'"):
        layers.GRU(3, 4, backend="native")
    with pytest.raises(ValueError, match="expected backend 'bptt', 'autograd' or 'native', got 'cudnn'"):
        layers.LSTM(3, 4, backend="cudnn")
    lstm = layers.LSTM(3, 4, backend="native").to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"CPU float32/float64 tensors, got a torch.bfloat16 tensor on cpu: "
                                         r"use backend='bptt'"):
        lstm(torch.randn(2, 1, 3, dtype=torch.bfloat16))


def test_a_failed_build_says_what_is_missing_and_how_to_do_without(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    native.lstm_ops.cache_clear()
    try:
        with pytest.raises(native.NativeBuildError, match="Ninja is required.*apt-get install g\\+\\+.*"
                                                          "pip install ninja.*backend='bptt'"):
            layers.LSTM(3, 4, backend="native")(torch.randn(2, 1, 3))
    finally:
        native.lstm_ops.cache_clear()  # the next caller builds (loads) the real one


def test_the_build_is_named_for_this_cpu_torch_and_source(monkeypatch: pytest.MonkeyPatch) -> None:
    name = native.native_extension_name()
    assert name.startswith(f"dlkit_lstm_{torch.backends.cpu.get_cpu_capability().lower()}_")
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert native.native_extension_name() != name  # another torch never loads this build


def test_rnn_classifier_trains_with_the_native_loop_and_names_its_key() -> None:
    torch.manual_seed(0)
    bptt = create_model("rnn_classifier", input_size=5, hidden_size=8, num_classes=3)
    ours = create_model("rnn_classifier", input_size=5, hidden_size=8, num_classes=3, rnn_backend="native")
    ours.load_state_dict(bptt.state_dict(), strict=True)
    x = torch.randn(4, 6, 5)
    losses = [nn.functional.cross_entropy(m(x), torch.tensor([0, 1, 2, 0])) for m in (bptt, ours)]
    grads = [torch.autograd.grad(loss, list(m.parameters())) for loss, m in zip(losses, (bptt, ours))]
    torch.testing.assert_close(losses[1], losses[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a)
    with pytest.raises(ValueError, match=r"model.rnn_backend must be one of \['bptt', 'autograd'\] for "
                                         r"model.cell=gru, got 'native'"):
        create_model("rnn_classifier", input_size=5, cell="gru", rnn_backend="native")


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(native)
