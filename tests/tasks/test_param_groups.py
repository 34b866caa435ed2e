"""One optimiser group per layer group, discriminative rates, and their errors."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from dlkit import Classifier, create_model
from dlkit.config import ConfigError, compose_config
from dlkit.tasks.param_groups import GroupRates, layer_param_groups, optimizer_groups, parse_lr
from dlkit.validation import validate_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("lr", "rates"),
    [
        (slice(1e-5, 1e-3), [1e-5 * 100 ** (i / 4) for i in range(5)]),
        ({"min": 1e-5, "max": 1e-3}, [1e-5 * 100 ** (i / 4) for i in range(5)]),
        (slice(1e-3), [1e-4] * 4 + [1e-3]),  # fastai: the head at hi, the rest at hi / 10
        ({"max": 1e-2, "factor": 2.6}, [1e-2 / 2.6 ** (4 - i) for i in range(5)]),  # ULMFiT
    ],
)
def test_rates_spread_over_the_layer_groups(lr, rates) -> None:
    net = create_model("lenet5")
    hi, spread = parse_lr(lr)
    groups = layer_param_groups(net, hi, spread)
    assert [g["name"] for g in groups] == net.group_names()
    assert all(math.isclose(g["lr"], r) for g, r in zip(groups, rates)), [g["lr"] for g in groups]
    # Every parameter once, frozen or not.
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_one_rate_puts_every_parameter_in_one_group() -> None:
    # Same-rate layer groups would each cost a fused optimiser kernel per step, for nothing.
    net = create_model("lenet5")
    (group,) = layer_param_groups(net, 1e-3, None)
    assert group["name"] == "all" and group["lr"] == 1e-3
    assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters()]


@pytest.mark.parametrize(
    ("lr", "message"),
    [
        (slice(1e-3, 1e-5), r"lowest rate \(0\.001\) is above the highest"),
        ({"min": 0, "max": 1e-3}, r"optimizer\.lr\.min must be a number > 0"),
        ({"max": 1e-3, "factor": 0.5}, r"optimizer\.lr\.factor must be >= 1"),
        ({"lo": 1e-3}, r"takes the keys min and max, or max and factor; got \['lo'\]"),
        (slice(1e-5, 1e-3, 2), "takes no step"),
        ("fast", r"optimizer\.lr must be a number, slice\(lo, hi\).*got 'fast'"),
        (float("inf"), r"optimizer\.lr must be a number, slice"),
    ],
)
def test_bad_rates_name_the_key_and_the_forms(lr, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_lr(lr)


def test_a_config_spread_reaches_the_optimizer_groups() -> None:
    cfg = compose_config("train", ["optimizer.lr={min: 1.0e-5, max: 1.0e-3}"])
    validate_config(cfg)
    factory = functools.partial(torch.optim.Adam, lr=cfg.optimizer.lr)
    factory, groups = optimizer_groups(factory, create_model("lenet5"), [])
    assert factory.keywords["lr"] == 1e-3
    assert math.isclose(groups[0]["lr"], 1e-5) and math.isclose(groups[-1]["lr"], 1e-3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr={min: 0, max: 1.0e-3}", r"optimizer\.lr\.min must be > 0"),
        ("optimizer.lr={max: 1.0e-3, factor: 0.5}", r"optimizer\.lr\.factor must be >= 1"),
    ],
)
def test_bad_config_spreads_are_refused_before_work(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config("train", [override]))


def test_the_task_optimizer_holds_every_layer_group_from_the_first_step() -> None:
    net = create_model("lenet5")
    net.freeze_to(-1)
    task = Classifier(net).compile(optimizer="adam", lr=slice(1e-4, 1e-2))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.strategy.connect(task)
    task.trainer = trainer
    optimizer = task.configure_optimizers()
    assert [g["name"] for g in optimizer.param_groups] == net.group_names()
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(net.parameters()))
    assert optimizer.param_groups[-1]["lr"] == 1e-2 and math.isclose(optimizer.param_groups[0]["lr"], 1e-4)
    assert optimizer.param_groups[0]["fused"] is True


def test_a_network_without_groups_gets_one_group_and_the_task_extras_their_own() -> None:
    net = torch.nn.Linear(3, 2)
    extra = [torch.nn.Parameter(torch.zeros(1))]
    groups = layer_param_groups(net, 0.1, None, extra)
    assert [(g["name"], len(g["params"]), g["lr"]) for g in groups] == [("all", 2, 0.1), ("other", 1, 0.1)]
    assert "lr" not in layer_param_groups(net, None)[0]  # the optimiser's own default then


def test_docstring_examples(docstring_examples) -> None:
    import dlkit.tasks.param_groups as module

    docstring_examples(module)
