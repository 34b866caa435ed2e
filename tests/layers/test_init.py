"""Initialisers: fans, gains, the variance of each scheme, and init_weights on a model."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn as nn

from dlkit.layers import init


# ----------------------------------------------------------------------------- fans and gains


@pytest.mark.parametrize(
    "layer, fans",
    [
        (nn.Linear(20, 7), (20, 7)),
        (nn.Conv2d(3, 16, 5), (3 * 25, 16 * 25)),
        (nn.Conv1d(4, 6, 3), (12, 18)),
        (nn.Conv2d(8, 4, (3, 2), groups=2), (4 * 6, 4 * 6)),
        (nn.LSTM(10, 32).weight_ih_l0, (10, 128)),
    ],
)
def test_fan_in_and_fan_out(layer, fans):
    weight = layer if isinstance(layer, torch.Tensor) else layer.weight
    assert init.calculate_fan_in_and_fan_out(weight) == fans
    assert init.calculate_fan_in_and_fan_out(weight) == nn.init._calculate_fan_in_and_fan_out(
        weight
    )


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*got shape \(5,\)"):
        init.calculate_fan_in_and_fan_out(torch.empty(5))


@pytest.mark.parametrize(
    "name, param",
    [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
     ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0), ("selu", None)],
)  # fmt: skip
def test_gains_match_torch(name, param):
    assert init.calculate_gain(name, param) == pytest.approx(nn.init.calculate_gain(name, param))


def test_unknown_gain_and_mode():
    with pytest.raises(ValueError, match=r"Unknown nonlinearity 'swish'.*'relu'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="expected a number"):
        init.calculate_gain("leaky_relu", "steep")
    with pytest.raises(ValueError, match="expected mode 'fan_in' or 'fan_out', got 'fan_avg'"):
        init.kaiming_normal_(torch.empty(3, 3), mode="fan_avg")


# ----------------------------------------------------------------------------- variances

FAN_IN, FAN_OUT = 2000, 500  # a (500, 2000) weight: 1e6 draws, and the two fans differ

VARIANCE_CASES = {
    "xavier_uniform": (init.xavier_uniform_, {}, 2 / (FAN_IN + FAN_OUT)),
    "xavier_uniform_gain": (init.xavier_uniform_, {"gain": 5 / 3}, (5 / 3) ** 2 * 2 / 2500),
    "xavier_normal": (init.xavier_normal_, {}, 2 / (FAN_IN + FAN_OUT)),
    "kaiming_uniform": (init.kaiming_uniform_, {}, 2 / FAN_IN),
    "kaiming_uniform_fan_out": (init.kaiming_uniform_, {"mode": "fan_out"}, 2 / FAN_OUT),
    "kaiming_normal_relu": (init.kaiming_normal_, {"nonlinearity": "relu"}, 2 / FAN_IN),
    "kaiming_normal_leaky": (init.kaiming_normal_, {"a": 0.2}, 2 / (1.04 * FAN_IN)),
    "kaiming_normal_tanh_out": (
        init.kaiming_normal_, {"nonlinearity": "tanh", "mode": "fan_out"}, (5 / 3) ** 2 / FAN_OUT
    ),
    "kaiming_uniform_linear": (init.kaiming_uniform_, {"nonlinearity": "linear"}, 1 / FAN_IN),
    "kaiming_normal_sigmoid": (init.kaiming_normal_, {"nonlinearity": "sigmoid"}, 1 / FAN_IN),
    "lecun_uniform": (init.lecun_uniform_, {}, 1 / FAN_IN),
    "lecun_normal": (init.lecun_normal_, {}, 1 / FAN_IN),
    "uniform_fan_in": (init.uniform_fan_in_, {}, 1 / (3 * FAN_IN)),
    "uniform": (init.uniform_, {"a": -0.5, "b": 0.5}, 1 / 12),
    "normal": (init.normal_, {"std": 0.02}, 0.02**2),
}


@pytest.fixture(scope="module")
def big_weight() -> torch.Tensor:
    return torch.empty(FAN_OUT, FAN_IN)


@pytest.mark.parametrize("case", list(VARIANCE_CASES))
def test_empirical_variance(case, big_weight):
    fn, kwargs, expected = VARIANCE_CASES[case]
    gen = torch.Generator().manual_seed(0)
    w = fn(big_weight, **kwargs, generator=gen)
    assert w is big_weight
    # The sample variance of 1e6 draws is within ~0.3% (3 standard errors) of the truth.
    assert w.var().item() == pytest.approx(expected, rel=0.01)
    assert abs(w.mean().item()) < 4 * math.sqrt(expected / w.numel())


@pytest.mark.parametrize(
    "fn, bound",
    [
        (init.xavier_uniform_, math.sqrt(6 / (FAN_IN + FAN_OUT))),
        (init.kaiming_uniform_, math.sqrt(6 / FAN_IN)),
        (init.lecun_uniform_, math.sqrt(3 / FAN_IN)),
        (init.uniform_fan_in_, 1 / math.sqrt(FAN_IN)),
    ],
)
def test_uniform_bounds(fn, bound, big_weight):
    w = fn(big_weight, generator=torch.Generator().manual_seed(1))
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.999 * bound  # the bound is reached, not just respected


def test_conv_variance_uses_receptive_field():
    w = init.kaiming_normal_(torch.empty(64, 32, 5, 5), mode="fan_out", nonlinearity="relu")
    assert w.var().item() == pytest.approx(2 / (64 * 25), rel=0.03)


def test_trunc_normal_stays_within_bounds():
    w = init.trunc_normal_(torch.empty(100_000), std=1.0, a=-1.0, b=1.5)
    assert w.min() >= -1.0 and w.max() <= 1.5
    assert w.min() < -0.99 and w.max() > 1.49
    # a wide window leaves the normal untouched
    w = init.trunc_normal_(torch.empty(200_000), mean=1.0, std=0.02, a=0.0, b=2.0)
    assert w.std().item() == pytest.approx(0.02, rel=0.01)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("shape", [(6, 6), (4, 10), (10, 4), (8, 3, 2, 2)])
def test_orthogonal(shape):
    w = init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=2.0).reshape(shape[0], -1)
    small = min(w.shape)
    gram = w @ w.T if w.shape[0] == small else w.T @ w
    torch.testing.assert_close(gram, 4.0 * torch.eye(small, dtype=torch.float64))


def test_constants():
    w = torch.empty(3, 4)
    assert (init.zeros_(w) == 0).all()
    assert (init.ones_(w) == 1).all()
    assert (init.constant_(w, 0.3) == 0.3).all()


# ----------------------------------------------------------------------------- same draws as torch

SAME_AS_TORCH = [
    ("xavier_uniform_", {"gain": 1.5}),
    ("xavier_normal_", {}),
    ("kaiming_uniform_", {}),
    ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("uniform_", {"a": -2.0, "b": 3.0}),
    ("normal_", {"mean": 1.0, "std": 0.5}),
    ("orthogonal_", {"gain": 0.5}),
]


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name, kwargs", SAME_AS_TORCH)
def test_same_draws_as_torch_with_the_same_seed(name, kwargs):
    shape = (12, 5, 3)
    ours = getattr(init, name)(torch.empty(shape), **kwargs, generator=_seeded(3))
    theirs = getattr(nn.init, name)(torch.empty(shape), **kwargs, generator=_seeded(3))
    torch.testing.assert_close(ours, theirs)


def test_uniform_fan_in_is_torch_linear_default():
    torch.manual_seed(4)
    reference = nn.Linear(30, 10)
    torch.manual_seed(4)
    weight, bias = torch.empty(10, 30), torch.empty(10)
    init.uniform_fan_in_(weight)
    init.uniform_fan_in_(bias, fan_in=30)
    torch.testing.assert_close(weight, reference.weight.detach())
    torch.testing.assert_close(bias, reference.bias.detach())


def test_initialisers_do_not_record_gradients():
    p = nn.Parameter(torch.empty(4, 4))
    for fn in (init.xavier_uniform_, init.kaiming_normal_, init.zeros_, init.orthogonal_):
        assert fn(p) is p and p.grad_fn is None and p.is_leaf


# ----------------------------------------------------------------------------- init_weights


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.PReLU()
        self.lstm = nn.LSTM(16, 32, num_layers=2)
        self.attn = nn.MultiheadAttention(32, 4)
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(400, 300)


def _randomised_net() -> _Net:
    torch.manual_seed(0)
    net = _Net()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(0.5, 1.5)  # nothing is 0 or 1 by chance
    return net


INITIALISED = [
    "conv.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1",
    "lstm.weight_hh_l1", "attn.in_proj_weight", "attn.out_proj.weight", "fc.weight",
]  # fmt: skip
ZEROED = [
    "conv.bias", "lstm.bias_ih_l0", "lstm.bias_hh_l0", "lstm.bias_ih_l1", "lstm.bias_hh_l1",
    "attn.in_proj_bias", "attn.out_proj.bias", "fc.bias", "bn.bias", "norm.bias",
]  # fmt: skip
ONES = ["bn.weight", "norm.weight"]
UNTOUCHED = ["embed.weight", "act.weight"]


def test_the_parameter_lists_cover_the_net():
    names = set(dict(_Net().named_parameters()))
    assert names == set(INITIALISED + ZEROED + ONES + UNTOUCHED)


def test_init_weights_touches_what_it_says():
    net = _randomised_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert init.init_weights(net, "xavier_normal") is net
    params = dict(net.named_parameters())
    for name in INITIALISED:
        assert not torch.equal(params[name], before[name]), name
        assert abs(params[name].mean().item()) < 0.05, name  # centred, unlike U(0.5, 1.5)
    for name in ZEROED:
        assert (params[name] == 0).all(), name
    for name in ONES:
        assert (params[name] == 1).all(), name
    for name in UNTOUCHED:
        assert torch.equal(params[name], before[name]), name
    # buffers (BatchNorm running statistics) are not parameters and are left alone
    assert torch.equal(net.bn.running_var, before["bn.running_var"])
    assert net.fc.weight.var().item() == pytest.approx(2 / 700, rel=0.02)


def test_init_weights_passes_options_to_the_initialiser():
    net = _randomised_net()
    init.init_weights(net, "kaiming_normal", mode="fan_out", nonlinearity="relu")
    assert net.fc.weight.var().item() == pytest.approx(2 / 300, rel=0.02)
    net = init.init_weights(_randomised_net(), "normal", std=0.02)
    assert net.fc.weight.std().item() == pytest.approx(0.02, rel=0.02)


def test_default_scheme_changes_nothing():
    net = _randomised_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    init.init_weights(net)
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("scheme", list(init.INIT_SCHEMES))
def test_every_scheme_runs_on_a_model(scheme):
    net = init.init_weights(_randomised_net(), scheme)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_init_weights_recognises_dlkit_layers():
    import dlkit.layers as L

    net = nn.Sequential(nn.Linear(8, 8), L.BatchNorm1d(8), L.LayerNorm(8), L.PReLU())
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.7)
    init.init_weights(net, "zeros")
    assert (net[0].weight == 0).all() and (net[1].weight == 1).all()
    assert (net[2].bias == 0).all() and (net[3].weight == 0.7).all()


def test_unknown_scheme_lists_choices():
    with pytest.raises(ValueError, match=r"Unknown init scheme 'glorot'.*'xavier_uniform'"):
        init.init_weights(nn.Linear(2, 2), "glorot")


def test_written_without_torch_nn():
    source = inspect.getsource(init)
    # Only docstring examples may mention torch.nn; the code must not use it.
    for forbidden in ("nn.init", "nn.Module", "nn.Parameter", "import torch.nn", "functional"):
        assert forbidden not in source, forbidden
