"""The perceptron rule converges on separable data, never on XOR; the layout is nn.Linear's."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from dlkit.layers import Perceptron
from dlkit.layers import perceptron as perceptron_module

pytestmark = pytest.mark.usefixtures("one_thread")

XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = torch.tensor([0, 1, 1, 0])


def separable_set(n: int = 80, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian blobs on either side of the line x0 + 2 x1 = 1, with a margin."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen) * 2
    score = x[:, 0] + 2 * x[:, 1] - 1
    keep = score.abs() > 0.5  # a margin, so convergence is quick
    return x[keep], (score[keep] > 0).long()


@pytest.mark.parametrize("shuffle_seed", [None, 3])
def test_rule_converges_on_a_separable_set_and_separates_it(shuffle_seed: int | None) -> None:
    x, y = separable_set()
    p = Perceptron(2)
    mistakes = p.fit_rule(x, y, epochs=200, shuffle_seed=shuffle_seed)
    assert mistakes[-1] == 0 and len(mistakes) < 200 and mistakes[0] > 0
    assert torch.equal(p(x), y.float())
    score = p.decision_function(x)
    assert (score[y == 1] >= 0).all() and (score[y == 0] < 0).all()


def test_rule_never_converges_on_xor() -> None:
    p = Perceptron(2)
    mistakes = p.fit_rule(XOR_X, XOR_Y, epochs=100, shuffle_seed=0)
    assert len(mistakes) == 100 and min(mistakes) > 0
    assert not torch.equal(p(XOR_X), XOR_Y.float())


def test_one_update_is_the_documented_step() -> None:
    p = Perceptron(3)
    with torch.no_grad():
        p.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        p.bias.fill_(0.25)
    x = torch.tensor([[1.0, 2.0, -1.0]])  # score 0.5 - 2 - 2 + 0.25 = -3.25 -> y_hat = 0
    y = torch.tensor([1])
    lr = 0.1
    w0, b0 = p.weight.detach().clone(), p.bias.detach().clone()
    mistakes = p.fit_rule(x, y, epochs=1, lr=lr)
    assert mistakes == [1]
    # w <- w + lr (y - y_hat) x,  b <- b + lr (y - y_hat), with y - y_hat = 1
    assert_close(p.weight.detach(), w0 + lr * 1 * x)
    assert_close(p.bias.detach(), b0 + lr * 1)
    # A correct sample changes nothing.
    w1 = p.weight.detach().clone()
    p.fit_rule(torch.tensor([[0.0, 0.0, -10.0]]), torch.tensor([0]), epochs=1)
    assert torch.equal(p.weight.detach(), w1)


def test_without_bias_the_bias_stays_none_and_only_w_moves() -> None:
    p = Perceptron(2, bias=False)
    assert p.bias is None and list(dict(p.named_parameters())) == ["weight"]
    p.fit_rule(torch.tensor([[1.0, 1.0]]), torch.tensor([0]), epochs=1)
    assert_close(p.weight.detach(), torch.tensor([[-1.0, -1.0]]))
    linear = nn.Linear(2, 1, bias=False)
    linear.load_state_dict(p.state_dict(), strict=True)


@pytest.mark.parametrize("bias", [True, False])
def test_decision_function_equals_nn_linear_with_the_same_state_dict(bias: bool) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(5, 1, bias=bias).double()
    p = Perceptron(5, bias=bias, dtype=torch.float64)
    p.load_state_dict(linear.state_dict(), strict=True)
    x = torch.randn(7, 5, dtype=torch.float64)
    assert_close(p.decision_function(x), linear(x).squeeze(-1), atol=1e-12, rtol=1e-12)
    assert torch.equal(p(x), (linear(x).squeeze(-1) >= 0).double())
    # And back: the perceptron's trained weights load into nn.Linear.
    p.fit_rule(x, (x[:, 0] > 0).long(), epochs=5)
    back = nn.Linear(5, 1, bias=bias).double()
    back.load_state_dict(p.state_dict(), strict=True)
    assert_close(back(x).squeeze(-1), p.decision_function(x))


def test_forward_is_a_float_step_without_gradient() -> None:
    p = Perceptron(2)
    out = p(XOR_X)
    assert out.dtype == torch.float32 and out.shape == (4,) and out.grad_fn is None
    assert set(out.tolist()) <= {0.0, 1.0}
    assert p.decision_function(XOR_X).requires_grad  # the raw score is differentiable


@pytest.mark.parametrize("labels", [[-1, 1, 1, -1], [0, 1, 2, 0], [0.0, 0.5, 1.0, 1.0]])
def test_labels_outside_0_1_are_refused_with_the_fix(labels: list) -> None:
    with pytest.raises(ValueError, match=r"labels y in \{0, 1\}.*\(y > 0\)\.long\(\)"):
        Perceptron(2).fit_rule(XOR_X, torch.tensor(labels), epochs=1)


def test_bool_and_float_labels_are_accepted() -> None:
    as_bool = Perceptron(2).fit_rule(XOR_X, XOR_Y.bool(), epochs=2)
    assert as_bool == Perceptron(2).fit_rule(XOR_X, XOR_Y.float(), epochs=2)


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(4, 3), r"expected x of shape \(B, 2\).*got \(4, 3\)"),
        (torch.zeros(2), r"expected x of shape \(B, 2\).*got \(2,\).*unsqueeze\(0\)"),
        (torch.zeros(4, 2, 1), r"expected x of shape \(B, 2\).*got \(4, 2, 1\)"),
    ],
)
def test_wrong_x_shape_says_expected_and_got(x: torch.Tensor, message: str) -> None:
    p = Perceptron(2)
    for call in (p, p.decision_function, lambda v: p.fit_rule(v, torch.zeros(len(v)), epochs=1)):
        with pytest.raises(ValueError, match=message):
            call(x)


def test_other_bad_arguments() -> None:
    p = Perceptron(2)
    with pytest.raises(ValueError, match=r"expected y of shape \(4,\).*got \(3,\)"):
        p.fit_rule(XOR_X, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="epochs"):
        p.fit_rule(XOR_X, XOR_Y, epochs=0)
    with pytest.raises(ValueError, match="lr"):
        p.fit_rule(XOR_X, XOR_Y, lr=0.0)
    with pytest.raises(ValueError, match="in_features"):
        Perceptron(0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        p([[0.0, 1.0]])


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(perceptron_module.Perceptron)
