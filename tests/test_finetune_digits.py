"""experiment=finetune_digits: the pretrain step, the new head, freezing, and the from-scratch flag."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from dlkit.callbacks import LayerFreezing
from dlkit.config import ConfigError
from dlkit.models import create_model
from dlkit.models.pretrained import load_pretrained, load_state_dict_file
from dlkit.train import train
from tests.conftest import FAST

pytestmark = pytest.mark.usefixtures("one_thread")

# The pretraining run, tiny: one epoch of two batches, validated on one.
TINY_PRETRAIN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                 "test=false", "~logger", *FAST]
HEAD = ("head.fc3.weight", "head.fc3.bias")


class StartWeights(L.Callback):
    """Keeps a copy of the network's weights as training starts (after freezing is applied)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


# ----------------------------------------------------------------------------- new head


@pytest.fixture
def lenet_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Lightning-style checkpoint (``net.``-prefixed keys) of a 5-class LeNet-5."""
    torch.manual_seed(1)
    weights = create_model("lenet5", num_classes=5).state_dict()
    path = tmp_path / "lenet5.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in weights.items()}, "epoch": 3}, path)
    return path, weights


def test_new_head_loads_every_layer_but_the_classifier(lenet_checkpoint) -> None:
    path, weights = lenet_checkpoint
    torch.manual_seed(0)
    fresh = create_model("lenet5", num_classes=5).state_dict()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for by name: no warning
        net = create_model("lenet5", num_classes=5, pretrained=path, new_head=True)
    for key, value in net.state_dict().items():
        if key in HEAD:
            assert not torch.equal(value, weights[key]) and torch.equal(value, fresh[key]), key
        else:
            assert torch.equal(value, weights[key]), key
    # Without the option, a head of the same shape is loaded like every other layer.
    loaded = create_model("lenet5", num_classes=5, pretrained=path)
    assert all(torch.equal(v, weights[k]) for k, v in loaded.state_dict().items())


def test_new_head_through_load_pretrained_and_other_class_counts(lenet_checkpoint) -> None:
    path, weights = lenet_checkpoint
    torch.manual_seed(0)
    net = create_model("lenet5", num_classes=5)
    head = net.get_classifier().weight.detach().clone()
    load_pretrained(net, weights, new_head=True)  # a state_dict mapping
    assert torch.equal(net.get_classifier().weight, head)
    assert torch.equal(net.features[0].weight, weights["features.0.weight"])
    # Another class count: new either way, and no warning when asked for.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        three = create_model("lenet5", num_classes=3, pretrained=path, new_head=True)
    assert three.get_classifier().out_features == 3
    with pytest.warns(UserWarning, match="classifier keeps its new initialisation"):
        create_model("lenet5", num_classes=3, pretrained=path)
    # Without weights every layer is new anyway.
    assert create_model("lenet5", num_classes=5, new_head=True).num_classes == 5


# ----------------------------------------------------------------------------- the experiment


def _finetune(compose_train, run: Path, *overrides: str) -> DictConfig:
    cfg = compose_train("experiment=finetune_digits", "trainer.max_epochs=2", "test=false", "~logger", *FAST,
                        "+callbacks.start._target_=tests.test_finetune_digits.StartWeights", *overrides,
                        output_dir=run)
    with open_dict(cfg):
        cfg.paths.log_dir = str(run.parent / "logs")  # one log folder for every run of a test
        if cfg.get("pretrain"):
            cfg.pretrain.overrides = TINY_PRETRAIN
    return cfg


def _callback(objects: dict, kind: type) -> L.Callback | None:
    return next((c for c in objects["trainer"].callbacks if isinstance(c, kind)), None)


def test_finetune_pretrains_once_then_freezes_and_unfreezes(compose_train, tmp_path: Path) -> None:
    # Conv features frozen at epoch 0, conv2 opens at epoch 1; conv1 stays frozen throughout.
    cfg = _finetune(compose_train, tmp_path / "first", "callbacks.freezing.unfreeze_every=1")
    ckpt = Path(cfg.pretrain.ckpt_path)
    assert ckpt == tmp_path / "logs" / "pretrained" / "lenet5_digits_0to4.ckpt" and not ckpt.exists()
    _, objects = train(cfg)

    assert ckpt.is_file(), "the pretraining did not write its checkpoint"
    pretrain_runs = list((tmp_path / "logs" / "pretrain_digits_0to4" / "runs").iterdir())
    assert len(pretrain_runs) == 1 and (pretrain_runs[0] / "metrics.json").is_file()
    # Hydra's state is this run's again (the pretraining composed its own config).
    assert HydraConfig.get().runtime.output_dir == str(tmp_path / "first")
    pretrained = load_state_dict_file(ckpt)
    start = _callback(objects, StartWeights).weights
    end = objects["task"].net.state_dict()
    for key in ("features.0.weight", "features.3.weight", "head.fc1.weight", "head.fc2.weight"):
        assert torch.equal(start[key], pretrained[key]), f"{key} did not start from the pretrained weights"
    assert not torch.equal(start["head.fc3.weight"], pretrained["head.fc3.weight"]), "the 0-4 head was kept"
    assert torch.equal(end["features.0.weight"], pretrained["features.0.weight"]), "frozen conv1 changed"
    assert not torch.equal(end["features.3.weight"], pretrained["features.3.weight"]), "conv2 never unfroze"
    assert not torch.equal(end["head.fc1.weight"], pretrained["head.fc1.weight"]), "fc1 did not train"
    assert objects["datamodule"].splits["train"][0].shape[0] == 50
    assert objects["task"].run_config["model"]["pretrained"] == str(ckpt)  # stored, for dlkit-eval

    stamp = ckpt.stat().st_mtime_ns
    again = _finetune(compose_train, tmp_path / "second")
    _, objects = train(again)
    assert ckpt.stat().st_mtime_ns == stamp
    assert len(list((tmp_path / "logs" / "pretrain_digits_0to4" / "runs").iterdir())) == 1, "pretrained again"
    start = _callback(objects, StartWeights).weights
    assert torch.equal(start["features.0.weight"], pretrained["features.0.weight"])


def test_from_scratch_flag_skips_pretraining_and_freezing(compose_train, tmp_path: Path) -> None:
    cfg = _finetune(compose_train, tmp_path / "scratch", "finetune=scratch", "trainer.max_epochs=1")
    assert cfg.get("pretrain") is None and cfg.model.pretrained is None
    _, objects = train(cfg)
    assert not (tmp_path / "logs" / "pretrained").exists()
    assert not (tmp_path / "logs" / "pretrain_digits_0to4").exists()
    assert _callback(objects, LayerFreezing) is None
    assert all(p.requires_grad for p in objects["task"].net.parameters())
    assert objects["datamodule"].splits["train"][0].shape[0] == 50


def test_weights_the_user_names_win_over_the_pretrain_step(compose_train, tmp_path: Path, lenet_checkpoint) -> None:
    path, weights = lenet_checkpoint
    cfg = _finetune(compose_train, tmp_path / "run", f"model.pretrained={path}", "trainer.max_epochs=1")
    _, objects = train(cfg)
    assert not (tmp_path / "logs" / "pretrain_digits_0to4").exists()
    assert not Path(cfg.pretrain.ckpt_path).exists()
    assert torch.equal(_callback(objects, StartWeights).weights["features.0.weight"], weights["features.0.weight"])


def test_a_pretraining_without_a_best_checkpoint_is_refused(compose_train, tmp_path: Path) -> None:
    cfg = _finetune(compose_train, tmp_path / "run")
    with open_dict(cfg):
        cfg.pretrain.overrides = [*TINY_PRETRAIN, "~callbacks.model_checkpoint"]
    with pytest.raises(ConfigError, match="saved no best checkpoint"):
        train(cfg)
    assert not Path(cfg.pretrain.ckpt_path).exists()
