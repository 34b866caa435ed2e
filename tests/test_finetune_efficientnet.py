"""experiment=finetune_efficientnet_fashion: ImageNet weights, the head alone, then the last stages.

The experiment composes as ``dlkit-train`` would and trains a tiny version of itself:
32 px inputs, 64 training images in batches of 16, two batches an epoch, the plan and the
epochs of the real run (the head alone first, then stage6 and stage7 as well). Snapshots of the
network's state (parameters and BatchNorm statistics) at the start of training, at the
end of the frozen phase and at the end say which layer groups moved.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from dlkit.callbacks import LayerFreezing
from dlkit.models.pretrained import package_state_dict
from dlkit.models.registry import get_model_info
from dlkit.train import train
from tests.conftest import FAST, needs_fashion_mnist

pytestmark = [
    # 32 px batches of 16: a second intra-op thread only adds barriers (tests/conftest.py).
    pytest.mark.usefixtures("one_thread"),
    needs_fashion_mnist,
]

EXPERIMENT = "experiment=finetune_efficientnet_fashion"
TINY = [
    EXPERIMENT,
    "data.resize=32",
    "data.num_train=64",
    "data.val_size=20",
    "data.batch_size=16",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "test=false",
    "~logger",
    *FAST,
    "+callbacks.snapshots._target_=tests.test_finetune_efficientnet.Snapshots",
]
UNFROZEN_LATER = ("stage6", "stage7")


class Snapshots(L.Callback):
    """The network's state per layer group at the start, when the first unfreeze epoch starts
    (the frozen phase over), and at the end; and whether the frozen backbone's output needs a
    gradient (if not, autograd records nothing there and backward runs through the head only)."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        self.features_need_grad: bool | None = None

    @staticmethod
    def _grab(pl_module: L.LightningModule) -> dict[str, dict[str, torch.Tensor]]:
        net = pl_module.net
        owner = {path: group for group, paths in net.group_layout.items() for path in paths}
        by_group: dict[str, dict[str, torch.Tensor]] = {group: {} for group in net.group_layout}
        for key, value in net.state_dict().items():
            path = next(p for p in owner if key.startswith(p + "."))
            by_group[owner[path]][key] = value.detach().clone()
        return by_group

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.states["start"] = self._grab(pl_module)
        # Gradients on, training mode: as in a training step (frozen BatchNorm runs in inference mode).
        x = torch.zeros(2, 1, 32, 32, device=pl_module.device)
        self.features_need_grad = pl_module.net.forward_features(x).requires_grad

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        freezing = next(c for c in trainer.callbacks if isinstance(c, LayerFreezing))
        if trainer.current_epoch == min(freezing.unfreeze_at):
            self.states["frozen_phase"] = self._grab(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.states["end"] = self._grab(pl_module)


def moved(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> set[str]:
    """The groups with any tensor (parameter or BatchNorm buffer) that differs between two snapshots."""
    return {g for g in a if any(not torch.equal(a[g][k], b[g][k]) for k in a[g])}


def test_experiment_composes_with_the_pretrained_networks_input(compose_train) -> None:
    cfg = compose_train(EXPERIMENT)
    assert cfg.model.name == "efficientnet_lite0" and cfg.model.pretrained is True and cfg.model.in_chans == 1
    # (x * 255 - 127) / 128 written as a standardisation of [0, 1] pixels.
    assert math.isclose(cfg.data.mean, 127 / 255, abs_tol=1e-6) and math.isclose(cfg.data.std, 128 / 255, abs_tol=1e-6)
    freezing = cfg.callbacks.freezing
    assert freezing.train_from == -1 and list(freezing.unfreeze_at.values()) == [list(UNFROZEN_LATER)]
    assert 0 < min(freezing.unfreeze_at) < cfg.trainer.max_epochs
    # Frozen before the model summary counts the trainable parameters (both on_fit_start).
    order = list(cfg.callbacks)
    assert order.index("freezing") < order.index("model_summary")
    # Only the new head keeps the initialisation (zeros: the first loss is ln 10).
    assert cfg.model.init == "zeros"


def test_tiny_run_trains_the_head_then_the_last_stages(compose_train) -> None:
    cfg = compose_train(*TINY)
    _, objects = train(cfg)
    net, dm = objects["task"].net, objects["datamodule"]
    snaps = next(c for c in objects["trainer"].callbacks if isinstance(c, Snapshots))
    groups = net.group_names()
    assert groups[-3:] == ["stage6", "stage7", "head"]
    # The ImageNet weights, with the stem's RGB kernels summed for one grey channel.
    spec = get_model_info("efficientnet_lite0").pretrained
    stem = package_state_dict(spec, "efficientnet_lite0")["_conv_stem.weight"].sum(1, keepdim=True)
    assert torch.equal(snaps.states["start"]["stem"]["_conv_stem.weight"], stem)
    assert not snaps.states["start"]["head"]["_fc.weight"].any()
    # The frozen phase: the head alone moved, BatchNorm statistics included (inference mode),
    # and no autograd graph through the backbone (backward ran through the head only).
    assert moved(snaps.states["start"], snaps.states["frozen_phase"]) == {"head"}
    assert snaps.features_need_grad is False
    # After unfreezing: the last two stages moved as well; nothing below them.
    assert moved(snaps.states["frozen_phase"], snaps.states["end"]) == {"head", *UNFROZEN_LATER}
    assert net.trainable_groups() == ["stage6", "stage7", "head"]
    # The batches the network saw: one grey channel at the configured size, the weights' scale.
    x = dm.example_input()
    assert x.shape[1:] == (1, 32, 32) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0

