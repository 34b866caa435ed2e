"""``build_optimizer``: torch's fused optimiser kernel by default, the user's choice when made."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

from dlkit import Classifier, create_model
from dlkit.config import group_options, instantiate_option
from dlkit.tasks.optim import build_optimizer

# conf/optimizer entries whose torch class has a fused kernel for CPU float32 parameters.
FUSED = {"adam", "adamw", "sgd", "momentum", "nesterov", "adagrad"}


@pytest.fixture
def params() -> list[torch.Tensor]:
    return list(nn.Linear(4, 3).parameters())


@pytest.mark.parametrize("name", group_options("optimizer"))
def test_every_configured_optimizer_builds_fused_where_torch_can(name: str, params) -> None:
    opt = build_optimizer(instantiate_option("optimizer", name), params)
    assert bool(opt.param_groups[0].get("fused")) == (name in FUSED)


@pytest.mark.parametrize("choice", [{"fused": False}, {"foreach": True}, {"fused": None}])
def test_an_explicit_implementation_choice_is_kept(choice: dict, params) -> None:
    opt = build_optimizer(functools.partial(torch.optim.Adam, lr=1e-3, **choice), params)
    assert not opt.param_groups[0]["fused"]
    assert opt.param_groups[0]["foreach"] == choice.get("foreach")


def test_falls_back_when_torch_has_no_fused_kernel(params) -> None:
    # differentiable=True has no fused kernel: torch refuses fused=True, dlkit falls back.
    opt = build_optimizer(functools.partial(torch.optim.Adam, differentiable=True), params)
    assert not opt.param_groups[0]["fused"] and opt.param_groups[0]["differentiable"]


def test_bare_class_and_plain_callables(params) -> None:
    assert build_optimizer(torch.optim.AdamW, params).param_groups[0]["fused"]
    # Any other callable is called as given.
    opt = build_optimizer(lambda params: torch.optim.RMSprop(params, lr=0.1), params)
    assert isinstance(opt, torch.optim.RMSprop) and opt.param_groups[0]["lr"] == 0.1


def test_an_empty_parameter_list_keeps_torchs_error() -> None:
    with pytest.raises(ValueError, match="empty parameter list"):
        build_optimizer(functools.partial(torch.optim.Adam), [])


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_updates_equal_the_default_loop(name: str) -> None:
    """Ten steps of the same gradients give the same weights, fused or not (float32 rounding)."""
    torch.manual_seed(0)
    a = nn.Linear(8, 4)
    b = nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    factory = instantiate_option("optimizer", name, lr=0.05)
    fused = build_optimizer(factory, list(a.parameters()))
    loop = factory(params=list(b.parameters()))
    assert fused.param_groups[0]["fused"] and not loop.param_groups[0]["fused"]
    for _ in range(10):
        x = torch.randn(16, 8)
        for net, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_task_builds_its_optimizer_fused_and_compile_can_opt_out() -> None:
    net = create_model("mlp", in_features=64, hidden_sizes=(8,), num_classes=10)
    clf = Classifier(net).compile(optimizer="adam", lr=1e-3)
    assert clf.configure_optimizers().param_groups[0]["fused"]
    clf.compile(optimizer="adam", lr=1e-3, fused=False)
    assert not clf.configure_optimizers().param_groups[0]["fused"]


def test_docstring_example_runs(docstring_examples) -> None:
    docstring_examples(build_optimizer)


@pytest.mark.parametrize(("overrides", "fused"), [((), True), (("+optimizer.fused=false",), False)])
def test_command_line_optimizer_is_fused_unless_told_otherwise(compose_train, overrides, fused: bool) -> None:
    from hydra.utils import instantiate

    cfg = compose_train(*overrides)
    net = nn.Linear(4, 3)
    assert build_optimizer(instantiate(cfg.optimizer), list(net.parameters())).param_groups[0]["fused"] is fused


def test_mixed_precision_keeps_the_unfused_optimizer_so_clipping_works() -> None:
    """Under "*-mixed" Lightning refuses to clip gradients for fused optimisers (they unscale themselves)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 64), dtype=np.float32), rng.integers(0, 10, 64)
    net = create_model("mlp", in_features=64, hidden_sizes=(8,), num_classes=10)
    clf = Classifier(net).compile(optimizer="adam", lr=1e-3)
    clf.fit(x, y, epochs=1, batch_size=32, verbose=False, precision="bf16-mixed", gradient_clip_val=1.0)
    assert not clf.trainer.optimizers[0].param_groups[0]["fused"]
    clf.fit(x, y, epochs=1, batch_size=32, verbose=False, gradient_clip_val=1.0)
    assert clf.trainer.optimizers[0].param_groups[0]["fused"]


def test_sparse_embeddings_keep_the_unfused_optimizer() -> None:
    """Fused SGD/Adagrad refuse sparse gradients, which their default loops accept."""
    net = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Flatten(), nn.Linear(8, 3))
    clf = Classifier(net, num_classes=3).compile(optimizer="sgd", lr=0.1)
    x, y = torch.randint(0, 10, (32, 2)), torch.randint(0, 3, (32,))
    clf.fit(x, y, epochs=1, batch_size=16, verbose=False)
    assert not clf.trainer.optimizers[0].param_groups[0]["fused"]
