"""GradientHealth: the vanishing gradients of a deep sigmoid MLP are seen, and named."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from dlkit import Classifier, create_model
from dlkit.callbacks import GradientHealth
from dlkit.callbacks.gradient_health import layer_groups_for_health
from dlkit.data import DigitsDataModule
from dlkit.train import train
from tests.conftest import FAST

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"verbose": False, "enable_model_summary": False}
# Ten Linear layers: nine hidden ones of 32 units and the head.
DEEP = {"in_features": 64, "hidden_sizes": [32] * 9, "num_classes": 10}
FIRST, LAST = "features.0", "head"


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    return DigitsDataModule(flatten=True, resize=None, batch_size=64)


def _run(digits: DigitsDataModule, **model: object) -> tuple[GradientHealth, list[str]]:
    torch.manual_seed(0)
    clf = Classifier(create_model("mlp", **DEEP, **model))
    clf.compile(optimizer="sgd", lr=0.1)
    health = GradientHealth(every_n_steps=2, patience=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(digits, epochs=1, callbacks=[health], limit_train_batches=8, limit_val_batches=0, **QUIET)
    return health, [str(w.message) for w in caught if "GradientHealth" in str(w.message)]


def test_a_deep_sigmoid_mlp_is_flagged_in_its_first_layers(digits) -> None:
    health, messages = _run(digits, act_layer="sigmoid")
    assert [entry["step"] for entry in health.history] == [0, 2, 4, 6]
    grad, ratio = health.latest["grad_norm"], health.latest["update_ratio"]
    assert list(grad) == [f"features.{i}" for i in range(0, 18, 2)] + [LAST]
    # Each sigmoid layer shrinks the gradient about 4-10 times: 1e-8 at the input, 0.3 at the head.
    assert grad[FIRST] < 1e-6 and grad[LAST] > 1e-2 and grad[FIRST] / grad[LAST] < 1e-4
    assert ratio[FIRST] < 1e-6 and ratio[LAST] > 1e-3  # plain SGD: the first layer barely moves
    assert FIRST in health.vanishing and LAST not in health.vanishing and not health.exploding
    assert health.vanishing == list(grad)[: len(health.vanishing)]  # the input side, in order
    (message,) = messages  # once per streak, naming the layers
    assert "vanishing" in message and FIRST in message and f"{LAST} " not in message


@pytest.mark.parametrize("model", [{"act_layer": "relu", "init": "he_normal"},
                                   {"act_layer": "relu", "norm_layer": "batchnorm"}], ids=["he_init", "batchnorm"])
def test_relu_with_he_init_or_batchnorm_is_not_flagged(digits, model: dict) -> None:
    health, messages = _run(digits, **model)
    grad = health.latest["grad_norm"]
    assert grad[FIRST] / grad[LAST] > 0.1 and min(grad.values()) > 1e-2
    assert health.vanishing == [] and health.exploding == [] and messages == []


def test_scalars_are_one_tag_per_layer_and_histograms_reach_tensorboard(digits, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    clf = Classifier(create_model("mlp", in_features=64, hidden_sizes=[16, 16], num_classes=10))
    health = GradientHealth(every_n_steps=3)
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    clf.fit(digits, epochs=1, callbacks=[health], logger=logger, limit_train_batches=4, limit_val_batches=0,
            **QUIET)
    (events,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    layers = ["features.0", "features.2", "head"]
    health_tags = sorted(t for t in acc.Tags()["scalars"] if t.startswith("health/"))
    assert health_tags == sorted(f"health/{kind}/{layer}" for kind in ("grad_norm", "update_ratio") for layer in layers)
    assert [e.step for e in acc.Scalars("health/grad_norm/head")] == [0, 3]
    assert acc.Scalars("health/grad_norm/head")[-1].value == pytest.approx(health.latest["grad_norm"]["head"])
    assert sorted(acc.Tags()["histograms"]) == sorted(
        f"health/{kind}/{layer}" for kind in ("grad_hist", "weight_hist") for layer in layers
    )


def test_big_networks_are_measured_per_block() -> None:
    net = create_model("resnet18", num_classes=10)
    groups = layer_groups_for_health(net, max_layers=32)
    assert list(groups) == ["conv1", "bn1", *(f"layer{i}.{j}" for i in range(1, 5) for j in range(2)), "fc"]
    assert sum(p.numel() for ps in groups.values() for p in ps) == sum(p.numel() for p in net.parameters())
    assert list(layer_groups_for_health(net, max_layers=3)) == ["conv1", "bn1", "layer1", "layer2", "layer3",
                                                                "layer4", "fc"]  # the coarsest level there is
    net.layer1.requires_grad_(False)  # frozen layers are left out
    assert not any(k.startswith("layer1") for k in layer_groups_for_health(net))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"every_n_steps": 0}, "every_n_steps"), ({"patience": -1}, "patience"), ({"max_layers": 0}, "max_layers"),
     ({"vanish_threshold": 0.0}, "vanish_threshold"), ({"explode_threshold": -1.0}, "explode_threshold"),
     ({"vanish_threshold": 1.0, "explode_threshold": 0.5}, "explode_threshold")],
)
def test_bad_values_name_the_argument(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        GradientHealth(**kwargs)


def test_the_config_composes_and_runs_a_fast_dev_run(compose_train) -> None:
    # debug=fdr drops all callbacks (callbacks: null), so the fast_dev_run is asked of the trainer.
    cfg = compose_train("callbacks=[default,gradient_health]", "+trainer.fast_dev_run=true",
                        "callbacks.gradient_health.every_n_steps=1", *FAST)
    assert cfg.callbacks.gradient_health.every_n_steps == 1
    _, objects = train(cfg)
    (health,) = [c for c in objects["trainer"].callbacks if isinstance(c, GradientHealth)]
    assert [e["step"] for e in health.history] == [0]
    assert list(health.latest["grad_norm"])[0] == "features.0"  # LeNet-5's first convolution


def test_docstring_example_runs(docstring_examples) -> None:
    docstring_examples(layer_groups_for_health)
