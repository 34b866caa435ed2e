"""Activations must equal their torch.nn namesakes; the factory must resolve every spec."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

import dlkit.layers as L

# (dlkit layer, torch layer): constructed per test so parameters are fresh.
PAIRS = {
    "sigmoid": (L.Sigmoid, nn.Sigmoid),
    "tanh": (L.Tanh, nn.Tanh),
    "relu": (L.ReLU, nn.ReLU),
    "relu6": (L.ReLU6, nn.ReLU6),
    "leaky_relu": (L.LeakyReLU, nn.LeakyReLU),
    "leaky_relu_0.2": (
        functools.partial(L.LeakyReLU, 0.2),
        functools.partial(nn.LeakyReLU, 0.2),
    ),
    "prelu": (L.PReLU, nn.PReLU),
    "prelu_channels": (
        functools.partial(L.PReLU, 6, init=0.1),
        functools.partial(nn.PReLU, 6, init=0.1),
    ),
    "elu": (L.ELU, nn.ELU),
    "elu_alpha": (functools.partial(L.ELU, alpha=0.5), functools.partial(nn.ELU, alpha=0.5)),
    "gelu": (L.GELU, nn.GELU),
    "gelu_tanh": (
        functools.partial(L.GELU, approximate="tanh"),
        functools.partial(nn.GELU, approximate="tanh"),
    ),
    "silu": (L.SiLU, nn.SiLU),
    "softmax_last": (functools.partial(L.Softmax, dim=-1), functools.partial(nn.Softmax, dim=-1)),
    "softmax_1": (functools.partial(L.Softmax, dim=1), functools.partial(nn.Softmax, dim=1)),
    "log_softmax": (
        functools.partial(L.LogSoftmax, dim=-1),
        functools.partial(nn.LogSoftmax, dim=-1),
    ),
    "identity": (L.Identity, nn.Identity),
}


def _inputs(dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(4, 6, 5, generator=gen, dtype=dtype)
    # Edge values: the kink at 0, and magnitudes where a naive exp() overflows.
    x[0, 0] = torch.tensor([0.0, -50.0, 50.0, -1e3, 1e3], dtype=dtype)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_matches_torch(name, dtype, parity, randomize):
    ours_cls, theirs_cls = PAIRS[name]
    theirs = randomize(theirs_cls().to(dtype))
    ours = ours_cls().to(dtype)
    x = _inputs(dtype)
    if name.startswith(("softmax", "log_softmax")):
        x[0, 0] = 0.0  # softmax of ±1e3 rows is a test of torch's rounding, not ours
    parity(ours, theirs, x)


def test_state_dicts_match():
    for ours_cls, theirs_cls in PAIRS.values():
        ours, theirs = ours_cls(), theirs_cls()
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in theirs.state_dict().items()
        }
    assert L.PReLU(3).weight.tolist() == pytest.approx([0.25] * 3)


def test_softmax_with_masked_entries():
    x = torch.tensor([[1.0, float("-inf"), 2.0]])
    torch.testing.assert_close(L.softmax(x, -1), torch.softmax(x, -1))
    torch.testing.assert_close(L.log_softmax(x, -1), torch.log_softmax(x, -1))


def test_softmax_implicit_dim_warns_like_torch():
    x = torch.randn(2, 3, 4)
    with pytest.warns(UserWarning, match="dim"):
        y = L.Softmax()(x)
    torch.testing.assert_close(y, torch.softmax(x, 0))


@pytest.mark.parametrize("cls", [L.ReLU, L.ReLU6, L.LeakyReLU, L.ELU, L.SiLU])
def test_inplace_overwrites_input_and_keeps_gradients(cls):
    ref_leaf = torch.randn(10, requires_grad=True)
    leaf = ref_leaf.detach().clone().requires_grad_(True)
    expected = cls()(ref_leaf * 2)
    x = leaf * 2  # a non-leaf, as in a network
    y = cls(inplace=True)(x)
    torch.testing.assert_close(y, expected)
    expected.sum().backward()
    y.sum().backward()
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)
    with torch.no_grad():
        z = torch.randn(10)
        assert cls(inplace=True)(z) is z


def test_relu6_kinks_and_nan_match_torch():
    # The gradient is 0 at both kinks (0 and 6) and NaN passes through, as in hardtanh.
    values = [float("nan"), -1.0, 0.0, 3.0, 6.0, 7.0]
    ours = torch.tensor(values, requires_grad=True)
    theirs = torch.tensor(values, requires_grad=True)
    y_ours, y_theirs = L.ReLU6()(ours), nn.ReLU6()(theirs)
    torch.testing.assert_close(y_ours, y_theirs, equal_nan=True)
    y_ours.sum().backward()
    y_theirs.sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_prelu_wrong_channels():
    expected = r"PReLU expected input of shape \(N, 6, \*\), got \(2, 3\)"
    with pytest.raises(ValueError, match=expected):
        L.PReLU(6)(torch.randn(2, 3))


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="'none' or 'tanh', got 'fast'"):
        L.GELU(approximate="fast")


# ----------------------------------------------------------------------------- factory


@pytest.mark.parametrize("name", sorted(L.ACTIVATIONS))
def test_get_activation_by_every_name(name):
    assert type(L.get_activation(name)) is L.ACTIVATIONS[name]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("ReLU", L.ReLU),
        ("LeakyReLU", L.LeakyReLU),
        ("leaky-relu", L.LeakyReLU),
        ("GELU", L.GELU),
        ("linear", L.Identity),
        (None, L.Identity),
        (L.Tanh, L.Tanh),
        (nn.ReLU, nn.ReLU),  # torch classes are accepted as they are
    ],
)
def test_get_activation_specs(spec, expected):
    assert type(L.get_activation(spec)) is expected


def test_get_activation_kwargs_and_instances():
    act = L.get_activation("leaky_relu", negative_slope=0.2)
    assert act.negative_slope == 0.2
    assert L.get_activation("gelu", approximate="tanh").approximate == "tanh"
    assert L.get_activation(L.PReLU, num_parameters=4).weight.shape == (4,)
    module = L.ELU(alpha=2.0)
    assert L.get_activation(module) is module


def test_get_activation_wraps_callables():
    act = L.get_activation(torch.sin)
    assert isinstance(act, nn.Module)
    x = torch.randn(5)
    torch.testing.assert_close(act(x), torch.sin(x))
    clamp = L.get_activation(torch.clamp, min=0.0, max=1.0)
    torch.testing.assert_close(clamp(torch.tensor([-1.0, 0.5, 2.0])), torch.tensor([0.0, 0.5, 1.0]))


def test_get_activation_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"Unknown activation 'relux'.*'gelu'.*'relu'"):
        L.get_activation("relux")


def test_get_activation_rejects_other_types():
    with pytest.raises(TypeError, match="got int"):
        L.get_activation(3)


def test_written_without_the_functions_it_reimplements():
    import inspect

    from dlkit.layers import activations

    source = inspect.getsource(activations)
    forbidden = (
        "nn.functional", "F.", "torch.sigmoid", "torch.tanh", "torch.relu", "torch.softmax",
        "torch.log_softmax", ".sigmoid(", ".softmax(", "torch.clamp(", "nn.GELU(",
    )  # fmt: skip
    for name in forbidden:
        assert name not in source, name


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize(
    "ours_cls, theirs_cls", [(L.ReLU, nn.ReLU), (L.ReLU6, nn.ReLU6)], ids=["relu", "relu6"]
)
def test_relu_family_edge_values_match_torch(ours_cls, theirs_cls, inplace):
    # Kinks, NaN (its gradient passes, as in threshold/hardtanh backward), infinities and
    # a subnormal, in both modes: the in-place path must keep the same gradients.
    values = [float("nan"), -1.0, 0.0, 1e-45, 3.0, 6.0, 7.0, float("inf"), float("-inf")]
    results = []
    for layer in (ours_cls(inplace=inplace), theirs_cls(inplace=inplace)):
        leaf = torch.tensor(values, requires_grad=True)
        y = layer(leaf * 1)  # a non-leaf, so the in-place form is allowed
        y.backward(torch.arange(1.0, len(values) + 1))
        results.append((y.detach(), leaf.grad))
    (y_ours, g_ours), (y_theirs, g_theirs) = results
    torch.testing.assert_close(y_ours, y_theirs, equal_nan=True)
    assert torch.equal(y_ours.signbit(), y_theirs.signbit())  # +0.0, never -0.0
    torch.testing.assert_close(g_ours, g_theirs)


@pytest.mark.parametrize("fn, scale", [(L.relu, 1.0), (L.relu6, 4.0)], ids=["relu", "relu6"])
def test_relu_family_double_backward(fn, scale):
    x = (scale * torch.randn(20, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_relu_backward_leaves_incoming_gradient_untouched():
    # The backward builds its mask in place; it must not write into the gradient it gets.
    x = torch.randn(50, requires_grad=True)
    grad = torch.randn(50)
    kept = grad.clone()
    L.relu(x).backward(grad)
    L.relu6(x).backward(grad)
    assert torch.equal(grad, kept)


@pytest.mark.parametrize("spec", ["identity", "linear", None])
def test_identity_activations_return_the_input(spec):
    x = torch.randn(3, requires_grad=True)
    assert L.get_activation(spec)(x) is x


@pytest.mark.parametrize(
    "make", [lambda: (L.LeakyReLU(0.1), nn.LeakyReLU(0.1)),
             lambda: (L.LeakyReLU(0.1, inplace=True), nn.LeakyReLU(0.1, inplace=True)),
             lambda: (L.PReLU(), nn.PReLU())], ids=["leaky_relu", "leaky_relu_inplace", "prelu"],
)  # fmt: skip
def test_leaky_family_edge_values_match_torch(make):
    # Written in float arithmetic (no boolean masks): the value, the sign of zero and the
    # gradient must still be torch's at the kink, at NaN, at the infinities, for subnormals.
    values = [float("nan"), -1.0, -0.0, 0.0, 1e-45, -1e-45, 3.0, float("inf"), float("-inf")]
    results = []
    for layer in make():
        leaf = torch.tensor(values, requires_grad=True)
        y = layer(leaf * 1)  # a non-leaf, so the in-place form is allowed
        y.backward(torch.arange(1.0, len(values) + 1))
        results.append((y.detach(), leaf.grad, [p.grad for p in layer.parameters()]))
    (y_ours, g_ours, p_ours), (y_theirs, g_theirs, p_theirs) = results
    torch.testing.assert_close(y_ours, y_theirs, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(y_ours.signbit(), y_theirs.signbit())
    torch.testing.assert_close(g_ours, g_theirs, equal_nan=True, rtol=0, atol=0)
    for a, b in zip(p_ours, p_theirs):
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("layer", [L.LeakyReLU(0.2), L.PReLU(3, init=0.3)], ids=["leaky_relu", "prelu"])
def test_leaky_family_double_backward(layer):
    layer = layer.double()
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradgradcheck(layer, (x,))
