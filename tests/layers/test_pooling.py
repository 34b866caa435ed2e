"""MaxPool2d must equal torch.nn.MaxPool2d bit for bit: values, the element each gradient goes to, NaN and infinities."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dlkit.layers as L
from dlkit.layers import pooling

DTYPES = {"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16}


def _grads(
    layer: nn.Module, x: torch.Tensor, dy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    y = layer(x)
    (dx,) = torch.autograd.grad(y, x, dy)
    return y, dx


def assert_same_as_torch(x: torch.Tensor, seed: int = 0, **kwargs) -> None:
    """Forward and backward of dlkit's and torch's layer on ``x``: identical tensors."""
    ours, theirs = (
        L.MaxPool2d(**{"kernel_size": 2, **kwargs}),
        nn.MaxPool2d(**{"kernel_size": 2, **kwargs}),
    )
    y_ref = theirs(x)
    dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(seed)).to(x.dtype)
    y_ours, dx_ours = _grads(ours, x, dy)
    y_ref, dx_ref = _grads(theirs, x, dy)
    torch.testing.assert_close(y_ours, y_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(
        dx_ours, dx_ref, rtol=0, atol=0, msg="the gradient went to another element"
    )


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.randn(4, 3, 8, 12, generator=g),
        lambda g: torch.randn(
            4, 3, 8, 12, generator=g
        ).relu(),  # ReLU outputs: whole windows of zeros
        lambda g: torch.randint(-1, 2, (4, 3, 8, 12), generator=g).float(),  # ties everywhere
        lambda g: torch.ones(2, 2, 4, 4),
    ],
    ids=["random", "after_relu", "ties", "constant"],
)
def test_matches_torch(make, dtype):
    assert_same_as_torch(make(_gen()).to(dtype))


# Windows are (a, b / c, d); torch scans a, b, c, d and takes a value when it is greater
# than the best so far or NaN: the first maximum, or the last NaN.
EDGE_WINDOWS = {
    "nan_b_and_c": [0.0, math.nan, math.nan, 1.0],
    "nan_a": [math.nan, 5.0, 1.0, 2.0],
    "nan_d": [1.0, 5.0, 1.0, math.nan],
    "all_nan": [math.nan] * 4,
    "all_minus_inf": [-math.inf] * 4,
    "inf_a_and_d": [math.inf, 0.0, 1.0, math.inf],
    "inf_b": [1.0, math.inf, 2.0, 3.0],
    "minus_inf_pair_finite_max": [-math.inf, -math.inf, 1.0, 2.0],
    "inf_and_nan": [math.inf, math.nan, 1.0, math.inf],
    "overflowing_sum": [3e38, 3e38, 3e38, 2e38],  # finite values whose sum is inf: the exact path
}


@pytest.mark.parametrize("window", list(EDGE_WINDOWS.values()), ids=list(EDGE_WINDOWS))
def test_non_finite_windows_match_torch(window):
    x = torch.randn(2, 2, 4, 6, generator=_gen())
    x[1, 0, 2:, 2:4] = torch.tensor(window).view(2, 2)
    assert_same_as_torch(x)


def test_double_backward_matches_torch():
    x = torch.randn(2, 3, 6, 4, dtype=torch.float64, generator=_gen())
    dy = torch.randn(2, 3, 3, 2, dtype=torch.float64, generator=_gen(1), requires_grad=True)
    v = torch.randn_like(x)
    results = []
    for layer in (L.MaxPool2d(2), nn.MaxPool2d(2)):
        xg = x.clone().requires_grad_()
        (dx,) = torch.autograd.grad(layer(xg), xg, dy, create_graph=True)
        results.append(torch.autograd.grad((dx * v).sum(), dy)[0])
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    assert torch.autograd.gradgradcheck(L.MaxPool2d(2), (x.clone().requires_grad_(),))


@pytest.fixture
def fast_path_calls(monkeypatch):
    """How often the 2x2 Function ran."""
    calls = []
    real = pooling._MaxPool2x2Function.apply
    monkeypatch.setattr(
        pooling._MaxPool2x2Function, "apply", lambda x: calls.append(x.shape) or real(x)
    )
    return calls


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"kernel_size": 3}, (2, 3, 9, 9)),
        ({"kernel_size": 2, "stride": 1}, (2, 3, 6, 6)),
        ({"kernel_size": 2, "padding": 1}, (2, 3, 6, 6)),
        ({"kernel_size": 2, "dilation": 2}, (2, 3, 8, 8)),
        ({"kernel_size": 2}, (2, 3, 7, 8)),  # odd height: the last row is dropped
        ({"kernel_size": 2, "ceil_mode": True}, (2, 3, 7, 7)),  # odd: a partial window
        ({"kernel_size": (2, 3)}, (2, 3, 6, 6)),
    ],
    ids=["k3", "stride1", "padding", "dilation", "odd", "ceil_odd", "k2x3"],
)
def test_other_configurations_run_torchs_kernel(kwargs, shape, fast_path_calls):
    assert_same_as_torch(
        torch.randn(shape, generator=_gen()),
        **{k: v for k, v in kwargs.items() if k != "kernel_size"},
        kernel_size=kwargs["kernel_size"],
    )
    assert fast_path_calls == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 2},
        {"kernel_size": (2, 2), "stride": 2},
        {"kernel_size": 2, "ceil_mode": True},
    ],
    ids=["k2", "tuples", "ceil_even"],
)
def test_the_2x2_window_is_dlkits(kwargs, fast_path_calls):
    x = torch.randn(2, 3, 6, 8, generator=_gen())
    assert_same_as_torch(
        x,
        **{k: v for k, v in kwargs.items() if k != "kernel_size"},
        kernel_size=kwargs["kernel_size"],
    )
    assert fast_path_calls == [(2, 3, 6, 8)]


def test_unbatched_channels_last_and_indices(fast_path_calls):
    x = torch.randn(3, 6, 8, generator=_gen())
    assert_same_as_torch(x)  # (C, H, W): fast path on a batch of one
    assert fast_path_calls == [(1, 3, 6, 8)]
    assert_same_as_torch(
        torch.randn(2, 3, 6, 8, generator=_gen()).contiguous(memory_format=torch.channels_last)
    )
    y, idx = L.MaxPool2d(2, return_indices=True)(x.unsqueeze(0))
    y_ref, idx_ref = nn.MaxPool2d(2, return_indices=True)(x.unsqueeze(0))
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)
    assert len(fast_path_calls) == 1


def test_without_grad_skips_the_masks(fast_path_calls):
    x = torch.randn(2, 3, 6, 8, generator=_gen(), requires_grad=True)
    with torch.no_grad():
        y = L.MaxPool2d(2)(x)
    assert torch.equal(y, nn.functional.max_pool2d(x.detach(), 2))
    assert fast_path_calls == []


def test_is_a_drop_in_for_nn_maxpool2d():
    ours, theirs = L.MaxPool2d(2, stride=2), nn.MaxPool2d(2, stride=2)
    assert isinstance(ours, nn.MaxPool2d)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict() == {}
    assert L.max_pool2x2(torch.zeros(0, 3, 4, 4)).shape == (0, 3, 2, 2)


def test_docstring_examples(docstring_examples):
    docstring_examples(pooling)
