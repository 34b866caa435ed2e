"""LayerFreezing: freeze, unfreeze by plan, every scheduler through an unfreeze, resume mid-plan."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn

from dlkit import Classifier, create_model
from dlkit.callbacks import LayerFreezing, LearningRateLogger, ResumeState
from dlkit.config import group_options, instantiate_option
from dlkit.data.tensor import arrays_to_datamodule
from dlkit.models.freezing import Freezable
from dlkit.train import train
from tests.conftest import FAST

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}
STATS = ("running_mean", "running_var", "num_batches_tracked")


class TinyCNN(Freezable):
    """Four layer groups, BatchNorm in the lower two: small enough for a dozen fits a test."""

    group_layout = {"stem": ("stem",), "block": ("block",), "neck": ("neck",), "head": ("head",)}

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.block(self.stem(x))))


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return x, y


def _fit(data, epochs: int, freezing: LayerFreezing, scheduler: str | None = None, lr=1e-2, **trainer):
    L.seed_everything(0, verbose=False)
    net = TinyCNN()
    task = Classifier(net).compile(optimizer="adam", lr=lr, scheduler=scheduler)
    lrs = LearningRateLogger(logging_interval="step")
    seen: list[dict] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            opt = trainer.optimizers[0]
            seen.append({"epoch": trainer.current_epoch, "lrs": [g["lr"] for g in opt.param_groups],
                         "groups": len(opt.param_groups),
                         "trainable": [n for n, s in zip(net.group_names(), net.group_status()) if s.trainable]})

    dm = arrays_to_datamodule(*data, batch_size=32, validation_split=0.25)
    t = L.Trainer(max_epochs=epochs, callbacks=[freezing, lrs, Record()], **{**QUIET, **trainer})
    t.fit(task, datamodule=dm)
    return task, t, seen


def test_the_plan_freezes_then_unfreezes_by_epoch(data) -> None:
    task, trainer, seen = _fit(data, 4, LayerFreezing(train_from=-1, unfreeze_at={1: "neck", 3: "all"}))
    by_epoch = {s["epoch"]: s["trainable"] for s in seen}
    assert by_epoch == {0: ["head"], 1: ["neck", "head"], 2: ["neck", "head"], 3: ["stem", "block", "neck", "head"]}
    assert {s["groups"] for s in seen} == {1}  # one rate, one group, never added to
    assert trainer.callback_metrics["train/trainable_params"] == sum(p.numel() for p in task.parameters())


def test_unfreeze_every_opens_one_more_group_from_the_head_down(data) -> None:
    _, _, seen = _fit(data, 4, LayerFreezing(train_from=-1, unfreeze_every=1))
    by_epoch = {s["epoch"]: s["trainable"] for s in seen}
    assert by_epoch[0] == ["head"] and by_epoch[1] == ["neck", "head"] and by_epoch[3] == ["stem", "block", "neck", "head"]


def test_frozen_parameters_and_batchnorm_statistics_do_not_change(data) -> None:
    L.seed_everything(0, verbose=False)
    net = TinyCNN()
    before = copy.deepcopy(net.state_dict())
    task = Classifier(net).compile(optimizer="adamw", lr=1e-2, weight_decay=0.1)
    dm = arrays_to_datamodule(*data, batch_size=32, validation_split=0.25)
    L.Trainer(max_epochs=2, callbacks=[LayerFreezing(train_from=2)], **QUIET).fit(task, datamodule=dm)
    after = net.state_dict()
    for key, value in before.items():
        frozen = key.startswith(("stem.", "block."))
        if frozen:  # weight decay included: no gradient, no update; BN statistics fixed
            assert torch.equal(after[key], value), key
        elif key.endswith("weight"):
            assert not torch.equal(after[key], value), key
    assert not net.stem[1].training and not net.block[1].training  # still in inference mode after fit's train()


def test_batchnorm_frozen_affine_still_updates_its_statistics(data) -> None:
    L.seed_everything(0, verbose=False)
    net = TinyCNN()
    stats = net.stem[1].running_mean.clone()
    task = Classifier(net).compile(optimizer="sgd", lr=0.1)
    dm = arrays_to_datamodule(*data, batch_size=32, validation_split=0.25)
    L.Trainer(max_epochs=1, callbacks=[LayerFreezing(train_from=-1, bn="frozen_affine")], **QUIET).fit(task, datamodule=dm)
    assert not torch.equal(net.stem[1].running_mean, stats)
    assert not net.stem[1].weight.requires_grad


SCHEDULERS = [None, *group_options("scheduler")]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_keeps_stepping_through_an_unfreeze_with_the_planned_rates(data, scheduler) -> None:
    lr = {"min": 1e-4, "max": 1e-2}
    L.seed_everything(0, verbose=False)
    net = TinyCNN()
    # Horizons inside the 4 epochs (plateau: any epoch short of a 99 % gain is a plateau,
    # so it cuts the rates after the unfreezes); noam needs a width.
    options = {"plateau": {"patience": 0, "threshold": 0.99}, "noam": {"d_model": 16}, "step": {"step_size": 1},
               "multistep": {"milestones": [1, 3]}}.get(scheduler, {})
    factory = instantiate_option("scheduler", scheduler, **options) if scheduler else None
    task = Classifier(net).compile(optimizer="adam", lr=lr, scheduler=factory, metrics=["accuracy"])
    seen: list[tuple[int, list[float]]] = []

    class Record(L.Callback):  # the rates each step trains with
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append((trainer.current_epoch, [g["lr"] for g in trainer.optimizers[0].param_groups]))

    dm = arrays_to_datamodule(*data, batch_size=32, validation_split=0.25)
    trainer = L.Trainer(max_epochs=4, callbacks=[LayerFreezing(train_from=-1, unfreeze_at={1: "neck", 2: "all"}),
                                                 LearningRateLogger(), Record()], **QUIET)
    trainer.fit(task, datamodule=dm)
    assert trainer.current_epoch == 4 and len(seen) == 4 * 3
    planned = [1e-4 * 100 ** (i / 3) for i in range(4)]
    first = seen[0][1]
    # Every group at its geometric share of the range, through the schedule: ratios kept.
    for _, rates in seen:
        assert all(math.isclose(r * planned[-1], p * rates[-1], rel_tol=1e-6, abs_tol=1e-15)
                   for r, p in zip(rates, planned)), rates
    if scheduler is None:
        assert all(math.isclose(a, b) for a, b in zip(first, planned))
    else:  # the schedule moved the rates after the unfreezes too
        assert len({tuple(rates) for epoch, rates in seen if epoch >= 2}) > 1 or seen[-1][1] != first, scheduler
    # The group rates as logged: 0 while a group is frozen, its own rate when unfrozen.
    metrics = trainer.callback_metrics
    assert float(metrics["train/lr_stem"]) == pytest.approx(seen[-1][1][0]) and float(metrics["train/lr_stem"]) > 0
    assert float(metrics["train/lr"]) == pytest.approx(seen[-1][1][-1])


def test_group_rates_are_zero_in_the_log_while_frozen(data) -> None:
    _, trainer, _ = _fit(data, 1, LayerFreezing(train_from=-1), lr={"min": 1e-4, "max": 1e-2})
    assert float(trainer.callback_metrics["train/lr_stem"]) == 0.0
    assert float(trainer.callback_metrics["train/lr_head"]) == pytest.approx(1e-2)


def test_a_run_stopped_mid_plan_and_resumed_ends_with_the_same_weights(data, tmp_path: Path) -> None:
    plan = {"train_from": -1, "unfreeze_at": {1: "neck", 3: "all"}}
    whole, _, _ = _fit(data, 5, LayerFreezing(**plan), scheduler="cosine")

    class StopAt(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 1:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
                trainer.should_stop = True

    L.seed_everything(0, verbose=False)
    first = Classifier(TinyCNN()).compile(optimizer="adam", lr=1e-2, scheduler="cosine")
    dm = arrays_to_datamodule(*data, batch_size=32, validation_split=0.25)
    L.Trainer(max_epochs=5, callbacks=[LayerFreezing(**plan), ResumeState(), StopAt()], **QUIET).fit(first, datamodule=dm)

    L.seed_everything(123, verbose=False)  # the checkpoint's state must win over this seed
    resumed = Classifier(TinyCNN()).compile(optimizer="adam", lr=1e-2, scheduler="cosine")
    freezing = LayerFreezing(**plan)
    dm = arrays_to_datamodule(*data, batch_size=32, validation_split=0.25)
    trainer = L.Trainer(max_epochs=5, callbacks=[freezing, ResumeState()], **QUIET)
    trainer.fit(resumed, datamodule=dm, ckpt_path=tmp_path / "mid.ckpt")
    for (key, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


def test_bad_plans_are_refused_before_training(data) -> None:
    with pytest.raises(ValueError, match=r"layer group 'layer9'.*groups are 0 'stem', 1 'block', 2 'neck', 3 'head'"):
        _fit(data, 2, LayerFreezing(unfreeze_at={1: "layer9"}))
    with pytest.raises(ValueError, match=r"epoch\(s\) \[5\].*trainer\.max_epochs=2 never starts"):
        _fit(data, 2, LayerFreezing(unfreeze_at={5: "all"}))
    with pytest.raises(ValueError, match=r"bn must be one of 'inference', 'frozen_affine', 'train', got 'eval'"):
        LayerFreezing(bn="eval")
    with pytest.raises(ValueError, match="not both"):
        LayerFreezing(unfreeze_at={1: "all"}, unfreeze_every=1)
    with pytest.raises(ValueError, match=r"unfreeze_every must be an integer >= 1"):
        LayerFreezing(unfreeze_every=0)


def test_a_network_without_layer_groups_is_named() -> None:
    task = Classifier(nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"needs a dlkit model with layer groups .*got Linear"):
        LayerFreezing().setup(L.Trainer(**QUIET), task, "fit")


def test_registered_cnn_fine_tunes_with_the_plan() -> None:
    # A registered family end to end: resnet18's groups, BN in inference mode in frozen stages.
    net = create_model("resnet18", num_classes=3, in_chans=1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 32, 32, generator=g), torch.randint(0, 3, (16,), generator=g)
    stem_stats = net.bn1.running_mean.clone()
    layer4 = net.layer4[0].conv1.weight.detach().clone()
    task = Classifier(net).compile(optimizer="adam", lr=slice(1e-3))
    dm = arrays_to_datamodule(x, y, batch_size=8)
    L.Trainer(max_epochs=2, callbacks=[LayerFreezing(train_from=-1, unfreeze_at={1: "layer4"})], **QUIET).fit(
        task, datamodule=dm)
    assert torch.equal(net.bn1.running_mean, stem_stats)
    assert not torch.equal(net.layer4[0].conv1.weight, layer4)
    assert net.trainable_groups() == ["layer4", "head"]


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(LayerFreezing.trainable_at)


def test_dlkit_train_with_a_plan_and_spread_rates(compose_train) -> None:
    cfg = compose_train("callbacks=[default,freezing]", "callbacks.freezing.unfreeze_at={1: [fc2, fc1]}",
                        "optimizer.lr={min: 1.0e-4, max: 1.0e-2}", "trainer.max_epochs=2", "scheduler=one_cycle",
                        "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2", "test=false", *FAST)
    metrics, objects = train(cfg)
    net = objects["task"].net
    assert net.trainable_groups() == ["fc1", "fc2", "head"]
    groups = objects["trainer"].optimizers[0].param_groups
    assert [g["name"] for g in groups] == ["conv1", "conv2", "fc1", "fc2", "head"]
    assert [g["max_lr"] for g in groups] == pytest.approx([1e-4 * 100 ** (i / 4) for i in range(5)])
    assert metrics["train/lr_conv1"] == 0.0 and metrics["train/lr_fc1"] > 0  # frozen: logged at 0
