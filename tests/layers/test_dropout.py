"""Dropout and Monte Carlo dropout."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn as nn

import dlkit.layers as L
from dlkit.layers import dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_rate_and_inverted_scaling(p):
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = L.Dropout(p)(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 0.02  # the expectation is preserved


def test_dropout_gradient_uses_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(50, 40, requires_grad=True)
    y = L.Dropout(0.3)(x)
    y.sum().backward()
    mask = y.detach() / x.detach()
    torch.testing.assert_close(x.grad, mask)


def test_dropout_matches_torch_statistics_and_state():
    ours, theirs = L.Dropout(0.3), nn.Dropout(0.3)
    assert ours.state_dict() == {} == theirs.state_dict()
    assert ours.extra_repr() == theirs.extra_repr()
    x = torch.randn(8, 9)
    assert ours.eval()(x) is x
    torch.testing.assert_close(ours(x), theirs.eval()(x))


def test_dropout_edge_probabilities():
    x = torch.randn(10, 10, requires_grad=True)
    assert L.Dropout(0.0)(x) is x
    y = L.Dropout(1.0)(x)
    assert torch.count_nonzero(y) == 0
    y.sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_dropout_inplace():
    torch.manual_seed(0)
    x = torch.ones(1000)
    y = L.Dropout(0.5, inplace=True)(x)
    assert y is x and (x == 0).any() and (x == 2).any()


def test_p_can_change_while_training():
    torch.manual_seed(0)
    layer = L.Dropout(0.5)
    layer.p = 0.9
    y = layer(torch.ones(100_000))
    assert abs((y == 0).float().mean().item() - 0.9) < 0.01
    layer.p = 0
    x = torch.ones(4)
    assert layer(x) is x


@pytest.mark.parametrize("p", [1.5, -0.1])
def test_p_out_of_range(p):
    with pytest.raises(ValueError, match=rf"expected p in \[0, 1\], got {p}"):
        L.Dropout(p)
    layer = L.Dropout()
    with pytest.raises(ValueError, match=rf"expected p in \[0, 1\], got {p}"):
        layer.p = p
    assert layer.p == 0.5


def test_dropout2d_drops_whole_channels():
    torch.manual_seed(0)
    y = L.Dropout2d(0.5)(torch.ones(16, 32, 3, 3))
    per_channel = y.flatten(2)
    # every channel is either all zero or all 2
    assert ((per_channel == 0).all(-1) | (per_channel == 2).all(-1)).all()
    assert 0.3 < (per_channel == 0).all(-1).float().mean() < 0.7
    with pytest.raises(ValueError, match=r"Dropout2d expected input of shape \(N, C, H, W\), got"):
        L.Dropout2d()(torch.ones(3, 4, 5))


# ----------------------------------------------------------------------------- MC dropout


def _mc_model(p: float, drop_cls: type = L.Dropout) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), drop_cls(p), nn.Linear(16, 3), nn.BatchNorm1d(3), nn.Dropout(p)
    )


@pytest.mark.parametrize("drop_cls", [L.Dropout, nn.Dropout])
def test_mc_mean_converges_to_deterministic_output(drop_cls):
    # Dropout followed by linear maps: inverted scaling makes the expectation equal to
    # the eval-mode output, so the Monte Carlo mean converges to it.
    model = _mc_model(0.2, drop_cls).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        expected = model(x)
    mean, std = L.mc_predict(model, x, samples=1000)
    assert mean.shape == std.shape == expected.shape
    assert (std > 0).all()
    # the standard error of the mean is std / sqrt(samples)
    assert ((mean - expected).abs() < 5 * std / 1000**0.5 + 1e-6).all()


def test_mc_std_is_zero_without_dropout():
    model = _mc_model(0.0)
    x = torch.randn(5, 6)
    mean, std = L.mc_predict(model, x, samples=10)
    assert torch.equal(std, torch.zeros_like(std))
    with torch.no_grad():
        torch.testing.assert_close(mean, model.eval()(x))


def test_mc_keeps_batchnorm_in_eval_and_restores_flags():
    model = _mc_model(0.5)
    model.train()
    model[2].eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    stats = model[3].running_mean.clone()
    seen = {}

    def record(name):
        def hook(module, _):
            seen[name] = module.training

        return hook

    model[3].register_forward_pre_hook(record("bn"))
    model[1].register_forward_pre_hook(record("drop"))
    mean, _ = L.mc_predict(model, torch.randn(4, 6), samples=3)
    assert seen == {"bn": False, "drop": True}
    assert torch.equal(model[3].running_mean, stats)  # BatchNorm did not update
    assert [m.training for m in model.modules()] == before
    assert not mean.requires_grad


def test_mc_restores_flags_after_an_error():
    model = _mc_model(0.5).eval()
    with pytest.raises(RuntimeError):
        L.mc_predict(model, torch.randn(4, 7), samples=2)  # wrong feature size
    assert not any(m.training for m in model.modules())


def test_mc_rejects_no_samples():
    with pytest.raises(ValueError, match="expected samples >= 1, got 0"):
        L.mc_predict(_mc_model(0.5), torch.randn(2, 6), samples=0)


def test_written_without_torch_functional():
    source = inspect.getsource(dropout)
    for forbidden in ("functional", "F.", "torch.dropout", "renorm", "clip_grad"):
        assert forbidden not in source


@pytest.mark.parametrize("cls", [L.Dropout, L.Dropout2d])
@pytest.mark.parametrize("inplace", [False, True])
def test_zero_rate_costs_nothing_in_training(cls, inplace):
    # p=0 (lenet5's default drop_rate) must return the very input: no kernel, no graph node.
    layer = cls(0.0, inplace=inplace).train()
    x = torch.randn(2, 3, 4, 4, requires_grad=True) * 1
    node = x.grad_fn
    y = layer(x)
    assert y is x and y.grad_fn is node
