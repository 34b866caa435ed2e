"""The MaxNorm constraint and the L1/L2 weight penalties."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import dlkit.layers as L
from dlkit.layers import regularizers

# ----------------------------------------------------------------------------- MaxNorm


def test_maxnorm_rescales_only_large_units():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Conv2d(2, 5, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[3.0, 4, 0, 0], [0.1, 0, 0, 0], [0, 0, 6, 8]]))
        net[2].weight.mul_(100)
    bias_before = net[0].bias.clone()
    small_row = net[0].weight[1].clone()
    L.MaxNorm(max_value=2.0)(net)
    norms = net[0].weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.tensor([2.0, 0.1, 2.0]))
    torch.testing.assert_close(net[0].weight[0], torch.tensor([1.2, 1.6, 0, 0]))  # direction kept
    assert torch.equal(net[0].weight[1], small_row)
    torch.testing.assert_close(net[2].weight.flatten(1).norm(dim=1), torch.full((5,), 2.0))
    assert torch.equal(net[0].bias, bias_before)


def test_maxnorm_dim_and_param_names():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(10.0)
    L.MaxNorm(max_value=1.0, dim=1, param_names=["1.weight"])(net)
    torch.testing.assert_close(net[1].weight.norm(dim=0), torch.ones(3))  # per input column
    assert (net[0].weight == 10).all()
    with pytest.raises(ValueError, match="expected a parameter named 'nope'"):
        L.MaxNorm(param_names=["nope"])(net)
    with pytest.raises(ValueError, match="expected max_value > 0, got 0"):
        L.MaxNorm(max_value=0)


# ----------------------------------------------------------------------------- penalties


def test_weight_penalty_counts_weights_only():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.PReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(-2.0)
    n_weights = 3 * 2 + 2 * 1
    assert L.weight_penalty(net, l1=0.5).item() == pytest.approx(0.5 * 2 * n_weights)
    assert L.weight_penalty(net, l2=0.1).item() == pytest.approx(0.1 * 4 * n_weights)
    both = L.weight_penalty(net, l1=1.0, l2=1.0)
    assert both.item() == pytest.approx(6 * n_weights)
    both.backward()
    assert net[0].weight.grad is not None and net[0].bias.grad is None
    assert net[1].weight.grad is None


def test_weight_penalty_zero_skips_frozen_and_validates():
    net = nn.Linear(3, 2)
    assert L.weight_penalty(net).item() == 0.0
    net.weight.requires_grad_(False)
    assert L.weight_penalty(net, l1=1.0).item() == 0.0
    with pytest.raises(ValueError, match="l1=-1"):
        L.weight_penalty(net, l1=-1)


def test_written_without_torch_functional():
    source = inspect.getsource(regularizers)
    for forbidden in ("functional", "F.", "renorm", "clip_grad"):
        assert forbidden not in source


def test_docstring_examples(docstring_examples):
    docstring_examples(regularizers)
