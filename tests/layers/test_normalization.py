"""BatchNorm and LayerNorm must equal torch.nn's: outputs, gradients, running statistics."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
import torch.nn as nn

import dlkit.layers as L
from dlkit.layers import normalization

DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])

BATCHNORMS = {
    "1d-features": (L.BatchNorm1d, nn.BatchNorm1d, (16, 5)),
    "1d-sequence": (L.BatchNorm1d, nn.BatchNorm1d, (8, 5, 7)),
    "2d": (L.BatchNorm2d, nn.BatchNorm2d, (4, 5, 3, 6)),
    "3d": (L.BatchNorm3d, nn.BatchNorm3d, (2, 5, 3, 2, 4)),
}


@DTYPES
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
@pytest.mark.parametrize(
    "affine, bias", [(True, True), (True, False), (False, True)], ids=["affine", "nobias", "plain"]
)
@pytest.mark.parametrize("kind", list(BATCHNORMS))
def test_batchnorm_matches_torch(
    kind, affine, bias, track, momentum, training, dtype, parity, randomize
):
    ours_cls, theirs_cls, shape = BATCHNORMS[kind]
    kwargs = dict(
        affine=affine, bias=bias, track_running_stats=track, momentum=momentum, dtype=dtype
    )
    theirs = randomize(theirs_cls(5, **kwargs)).train(training)
    ours = ours_cls(5, **kwargs).train(training)
    x = 2.0 + 3.0 * torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    # Several steps, so running statistics accumulate (and momentum=None averages).
    parity(ours, theirs, x, steps=4)
    if track:
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)


@pytest.mark.parametrize("kind", list(BATCHNORMS))
def test_batchnorm_state_dict_keys(kind):
    ours_cls, theirs_cls, _ = BATCHNORMS[kind]
    for kwargs in [{}, {"affine": False}, {"track_running_stats": False}, {"bias": False}]:
        ours, theirs = ours_cls(7, **kwargs), theirs_cls(7, **kwargs)
        assert {k: (v.shape, v.dtype) for k, v in ours.state_dict().items()} == {
            k: (v.shape, v.dtype) for k, v in theirs.state_dict().items()
        }
        assert ours.extra_repr() == theirs.extra_repr()


def test_batchnorm_running_stats_are_unbiased_and_eval_uses_them():
    bn = L.BatchNorm1d(3, momentum=1.0)  # running stats = last batch's
    x = torch.randn(10, 3)
    bn(x)
    torch.testing.assert_close(bn.running_mean, x.mean(0))
    torch.testing.assert_close(bn.running_var, x.var(0, unbiased=True))
    bn.eval()
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=True) + bn.eps)
    torch.testing.assert_close(bn(x), expected)


def test_batchnorm_reset_parameters():
    bn = L.BatchNorm2d(3)
    bn(torch.randn(4, 3, 2, 2))
    bn.reset_parameters()
    assert bn.running_mean.tolist() == [0.0] * 3 and bn.running_var.tolist() == [1.0] * 3
    assert int(bn.num_batches_tracked) == 0


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (L.BatchNorm2d(16), (8, 16, 32), r"BatchNorm2d expected input of shape \(N, 16, H, W\), got \(8, 16, 32\)"),  # noqa: E501
        (L.BatchNorm2d(16), (8, 3, 32, 32), r"BatchNorm2d expected input of shape \(N, 16, H, W\), got \(8, 3, 32, 32\)"),  # noqa: E501
        (L.BatchNorm1d(4), (8, 3), r"expected input of shape \(N, 4\) or \(N, 4, L\), got \(8, 3\)"),  # noqa: E501
        (L.BatchNorm1d(4), (8, 4, 2, 2), r"got \(8, 4, 2, 2\)"),
        (L.BatchNorm3d(2), (8, 2, 3, 3), r"\(N, 2, D, H, W\), got \(8, 2, 3, 3\)"),
        (L.BatchNorm1d(4), (1, 4), r"more than 1 value per channel"),
        (L.LayerNorm(16), (8, 3), r"LayerNorm expected input of shape \(\*, 16\), got \(8, 3\)"),
        (L.LayerNorm((4, 5)), (2, 5, 4), r"\(\*, 4, 5\), got \(2, 5, 4\)"),
        (L.LayerNorm((2, 4, 5)), (4, 5), r"\(\*, 2, 4, 5\), got \(4, 5\)"),
    ],
)
def test_bad_input_shapes(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))


# ----------------------------------------------------------------------------- LayerNorm

LAYERNORM_CASES = [
    ((8, 16), 16),
    ((2, 7, 16), 16),
    ((2, 3, 4, 5), (4, 5)),
    ((2, 3, 4, 5), [3, 4, 5]),
]


@DTYPES
@pytest.mark.parametrize(
    "affine, bias", [(True, True), (True, False), (False, True)], ids=["affine", "nobias", "plain"]
)
@pytest.mark.parametrize("shape, normalized_shape", LAYERNORM_CASES)
def test_layernorm_matches_torch(shape, normalized_shape, affine, bias, dtype, parity, randomize):
    kwargs = dict(elementwise_affine=affine, bias=bias, dtype=dtype)
    theirs = randomize(nn.LayerNorm(normalized_shape, **kwargs))
    ours = L.LayerNorm(normalized_shape, **kwargs)
    x = 1.0 + 2.0 * torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    parity(ours, theirs, x)
    parity(ours.eval(), theirs.eval(), x)


def test_layernorm_eps_and_repr():
    ours, theirs = L.LayerNorm(8, eps=1e-3), nn.LayerNorm(8, eps=1e-3)
    x = 1e-3 * torch.randn(4, 8)  # tiny variance, so eps matters
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours.extra_repr() == theirs.extra_repr()


# ----------------------------------------------------------------------------- factory


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("batchnorm", L.BatchNorm2d),
        ("bn", L.BatchNorm2d),
        ("BatchNorm1d", L.BatchNorm1d),
        ("bn2d", L.BatchNorm2d),
        ("layernorm", L.LayerNorm),
        ("LN", L.LayerNorm),
        ("layer_norm", L.LayerNorm),
        ("none", L.Identity),
        ("identity", L.Identity),
        (None, L.Identity),
        (L.BatchNorm1d, L.BatchNorm1d),
    ],
)
def test_get_norm_layer_specs(spec, expected):
    layer = L.get_norm_layer(spec, 12)
    assert type(layer) is expected
    if expected is not L.Identity:
        assert sum(p.numel() for p in layer.parameters()) == 24


def test_get_norm_layer_callables_kwargs_and_instances():
    layer = L.get_norm_layer(functools.partial(nn.GroupNorm, 4), 12)
    assert isinstance(layer, nn.GroupNorm) and layer.num_channels == 12
    assert L.get_norm_layer("bn", 8, eps=1e-3).eps == 1e-3
    assert L.get_norm_layer("ln", 8, elementwise_affine=False).weight is None
    built = nn.BatchNorm2d(3)
    assert L.get_norm_layer(built, 99) is built


def test_get_norm_layer_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"Unknown norm layer 'groupnorm'.*'batchnorm'.*'ln'"):
        L.get_norm_layer("groupnorm", 8)
    with pytest.raises(TypeError, match="got float"):
        L.get_norm_layer(1.5, 8)


def test_written_without_torch_functional():
    source = inspect.getsource(normalization)
    for forbidden in ("functional", "F.", "batch_norm", "layer_norm", "torch.var", ".var("):
        assert forbidden not in source


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_channels_last_matches_torch(training, parity, randomize):
    # Channels-last activations (dlkit's channels_last switch) take the same path.
    theirs = randomize(nn.BatchNorm2d(5, dtype=torch.float64)).train(training)
    ours = L.BatchNorm2d(5, dtype=torch.float64).train(training)
    x = torch.randn(4, 5, 3, 6, dtype=torch.float64).to(memory_format=torch.channels_last)
    parity(ours, theirs, x, steps=2)


def test_batchnorm_training_gradients_of_gradients_raise():
    # The training backward is written out once (like LayerNorm's): a second derivative
    # through it must fail loudly, not come out silently wrong.
    bn = L.BatchNorm1d(3)
    x = torch.randn(8, 3, requires_grad=True)
    (g,) = torch.autograd.grad(bn(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
