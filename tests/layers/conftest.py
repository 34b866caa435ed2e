"""Shared checks for layers that must match their ``torch.nn`` namesakes."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype = torch.float64, msg: str = "") -> None:
    """``assert_close`` at the parity tolerance of ``dtype`` (1e-5 float32, 1e-10 float64)."""
    assert_close(a, b, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype], msg=msg or None)


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and float buffer random values, so a parity test is not
    passed by two layers that merely share their initial values (ones, zeros)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=gen, dtype=tensor.dtype)
                tensor.copy_(0.5 + noise)  # positive, so it is also a valid variance
    return module


def _named(name: str) -> Callable[[str], str]:
    return lambda message: f"{name}: {message}"


def check_parity(
    ours: nn.Module, theirs: nn.Module, x: torch.Tensor, steps: int = 1, seed: int = 0
) -> None:
    """Load ``theirs`` into ``ours`` strictly, then compare outputs, input and parameter
    gradients and buffers over ``steps`` forward/backward passes on ``x`` (perturbed
    per step)."""
    ours.load_state_dict(theirs.state_dict(), strict=True)
    tol = TOLERANCE[x.dtype]
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        xs = x + step * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        xa = xs.clone().requires_grad_(True)
        xb = xs.clone().requires_grad_(True)
        ya, yb = ours(xa), theirs(xb)
        assert_close(ya, yb, atol=tol, rtol=tol)
        grad_out = torch.randn(yb.shape, generator=gen, dtype=yb.dtype)
        ya.backward(grad_out)
        yb.backward(grad_out)
        assert_close(xa.grad, xb.grad, atol=tol, rtol=tol)
        ours_params = dict(ours.named_parameters())
        for name, p in theirs.named_parameters():
            assert_close(ours_params[name].grad, p.grad, atol=tol, rtol=tol, msg=_named(name))
        ours_buffers = dict(ours.named_buffers())
        for name, b in theirs.named_buffers():
            assert_close(ours_buffers[name], b, atol=tol, rtol=tol, msg=_named(name))


@pytest.fixture
def parity() -> Callable[..., None]:
    """``parity(ours, theirs, x, steps=1)``: assert the layers agree (see check_parity)."""
    return check_parity


@pytest.fixture
def randomize() -> Callable[..., nn.Module]:
    """``randomize(module)``: random positive parameters and buffers, in place."""
    return randomize_

