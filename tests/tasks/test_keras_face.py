"""The Keras face of dlkit's tasks: compile / fit / evaluate / predict / summary."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

from dlkit import Classifier, Regressor, callbacks, create_model
from dlkit.config import group_options, instantiate_option
from dlkit.data import DiabetesDataModule, DigitsDataModule

QUIET = {"verbose": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def _mlp(**kw) -> nn.Module:
    return create_model("mlp", in_features=64, hidden_sizes=(32,), num_classes=10, **kw)


def test_fit_on_arrays_returns_history_and_learns(digits) -> None:
    x, y = digits
    L.seed_everything(0, verbose=False)
    clf = Classifier(_mlp()).compile(optimizer="adam", lr=3e-3, metrics=["accuracy"])
    history = clf.fit(x, y, epochs=4, batch_size=64, validation_split=0.2, **QUIET)
    assert history.epoch == [0, 1, 2, 3]
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "train/lr"):
        assert len(history.history[key]) == 4, key
    losses = history.history["train/loss"]
    assert losses[-1] < losses[0] * 0.5
    assert history.history["val/acc"][-1] > 0.8

    result = clf.evaluate(x[-300:], y[-300:])
    assert set(result) == {"loss", "acc"} and result["acc"] > 0.8
    clf.train()
    probs = clf.predict(x[:50])
    assert clf.training  # predict runs in eval mode and restores the mode it found
    assert isinstance(probs, np.ndarray) and probs.shape == (50, 10)  # NumPy in, NumPy out (Keras)
    np.testing.assert_allclose(probs.sum(1), np.ones(50), rtol=1e-5)
    assert isinstance(clf.predict(torch.from_numpy(x[:3])), torch.Tensor)  # a tensor in, a tensor out


@pytest.mark.parametrize(
    ("loss", "optimizer", "scheduler"),
    [("sparse_categorical_crossentropy", "Adam", None), ("categorical_crossentropy", "RMSprop", "ReduceLROnPlateau"),
     ("Cross-Entropy", "SGD", "OneCycleLR")],
)
def test_keras_spellings_are_accepted(loss: str, optimizer: str, scheduler: str | None) -> None:
    clf = Classifier(_mlp()).compile(optimizer=optimizer, loss=loss, scheduler=scheduler, lr=0.01)
    assert type(clf.loss_fns["_"]).__name__ == "CrossEntropyLoss"
    assert clf.optimizer_factory.func.__name__ in ("Adam", "RMSprop", "SGD")


def test_fit_with_explicit_validation_data_and_tuple_input(digits) -> None:
    x, y = digits
    clf = Classifier(_mlp())
    history = clf.fit((x[:1000], y[:1000]), epochs=1, validation_data=(x[1000:], y[1000:]), **QUIET)
    assert not math.isnan(history.history["val/acc"][0])


def test_fit_evaluate_predict_on_a_datamodule() -> None:
    L.seed_everything(0, verbose=False)
    dm = DigitsDataModule(resize=32)
    clf = Classifier(create_model("lenet5", variant="modern"))
    clf.compile(optimizer="adam", lr=3e-3)
    history = clf.fit(dm, epochs=3, **QUIET)
    assert history.history["val/acc"][-1] > 0.8
    result = clf.evaluate(dm)
    assert result["acc"] > 0.8
    probs = clf.predict(dm)
    assert probs.shape == (len(dm.splits["test"][0]), 10)


def test_summary_totals_split_by_requires_grad(capsys) -> None:
    net = create_model("lenet5", variant="modern")
    for p in net.features.parameters():  # freeze the convolutions
        p.requires_grad_(False)
    clf = Classifier(net)
    summary = clf.summary()
    params = list(net.parameters())
    assert summary.total_params == sum(p.numel() for p in params) == 61_706
    assert summary.trainable_params == sum(p.numel() for p in params if p.requires_grad)
    assert summary.non_trainable_params == sum(p.numel() for p in params if not p.requires_grad) > 0
    assert sum(row[3] for row in summary.rows) == summary.total_params
    printed = capsys.readouterr().out
    assert "Total params: 61,706" in printed and "Non-trainable params" in printed
    assert "[1,10]" in printed  # output shape of the last layer, from an example forward pass


def test_summary_of_a_vector_mlp_uses_its_input_size(capsys) -> None:
    # An MLP built with in_features (e.g. 2-D points) takes (B, in_features), not images.
    clf = Classifier(create_model("mlp", in_features=2, hidden_sizes=(4,), num_classes=2))
    summary = clf.summary()
    assert summary.total_params == (2 + 1) * 4 + (4 + 1) * 2
    assert "[1,2]" in capsys.readouterr().out


class TwoHeads(nn.Module):
    """A digits network with two outputs: the digit, and whether it is >= 5."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.digit = nn.Linear(64, 10)
        self.big = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"digit": self.digit(h), "big": self.big(h).squeeze(-1)}


def test_multi_output_losses_weights_and_metrics(digits) -> None:
    x, y = digits
    L.seed_everything(0, verbose=False)
    targets = {"digit": y, "big": (y >= 5).astype(np.float32)}
    clf = Classifier(TwoHeads(), num_classes={"digit": 10, "big": 1}, monitor="val/loss", monitor_mode="min")
    clf.compile(
        optimizer="adam",
        lr=3e-3,
        loss={"digit": "cross_entropy", "big": "bce"},
        loss_weights={"digit": 1.0, "big": 0.5},
        metrics={"digit": ["accuracy"], "big": ["accuracy"]},
    )
    history = clf.fit(x, targets, epochs=5, batch_size=64, validation_split=0.2, **QUIET)
    for key in ("train/loss", "train/digit_loss", "train/big_loss", "val/digit_acc", "val/big_acc"):
        assert key in history.history, sorted(history.history)
    h = {k: v[-1] for k, v in history.history.items()}
    assert h["train/loss"] == pytest.approx(h["train/digit_loss"] + 0.5 * h["train/big_loss"], rel=1e-4)
    assert h["val/big_acc"] > 0.85 and h["val/digit_acc"] > 0.85
    result = clf.evaluate(x[-300:], {k: v[-300:] for k, v in targets.items()})
    assert {"loss", "digit_loss", "big_loss", "digit_acc", "big_acc"} <= set(result)
    out = clf.predict(x[:7])
    assert out["digit"].shape == (7, 10) and out["big"].shape == (7,)
    assert ((out["big"] >= 0) & (out["big"] <= 1)).all()


def test_multi_output_needs_dict_targets(digits) -> None:
    x, y = digits
    clf = Classifier(TwoHeads(), num_classes={"digit": 10, "big": 1})
    clf.compile(loss={"digit": "cross_entropy", "big": "bce"})
    with pytest.raises(ValueError, match="targets as a dict"):
        clf.fit(x[:64], y[:64], epochs=1, **QUIET)


def test_regressor_on_diabetes_learns() -> None:
    L.seed_everything(0, verbose=False)
    net = create_model("mlp", in_features=10, num_classes=1, hidden_sizes=(32,))
    reg = Regressor(net).compile(optimizer="adam", lr=1e-2)
    dm = DiabetesDataModule()
    history = reg.fit(dm, epochs=10, **QUIET)
    assert {"val/mae", "val/rmse", "val/r2"} <= set(history.history)
    result = reg.evaluate(dm)
    assert result["r2"] > 0.25, result  # val R² ~0.48, the 66-patient test split is noisy
    assert reg.predict(dm).shape == (len(dm.splits["test"][0]), 1)


@pytest.mark.parametrize("loss", group_options("loss"))
def test_every_loss_config_trains_a_classifier(loss: str, digits) -> None:
    x, y = digits
    L.seed_everything(0, verbose=False)
    clf = Classifier(_mlp()).compile(optimizer="adam", lr=3e-3, loss=loss)
    history = clf.fit(x[:512], y[:512], epochs=2, batch_size=64, **QUIET)
    first, last = history.history["train/loss"]
    assert math.isfinite(last) and last < first, (loss, first, last)


@pytest.mark.parametrize("optimizer", group_options("optimizer"))
def test_every_optimizer_config_updates_the_weights(optimizer: str, digits) -> None:
    x, y = digits
    clf = Classifier(_mlp()).compile(optimizer=optimizer)
    before = [p.detach().clone() for p in clf.parameters()]
    clf.fit(x[:128], y[:128], epochs=1, batch_size=64, **QUIET)
    assert any(not torch.equal(a, b) for a, b in zip(before, clf.parameters()))


@pytest.mark.parametrize("scheduler", group_options("scheduler"))
def test_every_scheduler_config_runs(scheduler: str, digits) -> None:
    x, y = digits
    if scheduler == "noam":  # an MLP has no d_model to fill scheduler.d_model from
        scheduler = instantiate_option("scheduler", "noam", d_model=32)
    clf = Classifier(_mlp()).compile(optimizer="sgd", lr=0.1, scheduler=scheduler)
    history = clf.fit(x[:256], y[:256], epochs=3, batch_size=64, validation_split=0.25, **QUIET)
    lrs = history.history["train/lr"]
    assert len(lrs) == 3 and all(lr <= 0.1 + 1e-6 for lr in lrs)
    if scheduler == "cosine":  # T_max: null spans the run
        assert lrs[0] > lrs[1] > lrs[2]


def test_early_stopping_restores_the_best_weights(digits) -> None:
    x, y = digits
    L.seed_everything(0, verbose=False)

    class Sabotage(L.Callback):
        """Ruin the weights from epoch 2 on, so the best epoch is known to be 0 or 1."""

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch >= 2:
                with torch.no_grad():
                    for p in pl_module.parameters():
                        p.zero_()

    clf = Classifier(_mlp()).compile(optimizer="adam", lr=3e-3)
    stopper = callbacks.EarlyStopping(monitor="val/acc", mode="max", patience=2, restore_best_weights=True)
    history = clf.fit(x, y, epochs=20, validation_split=0.2, callbacks=[stopper, Sabotage()], **QUIET)
    assert len(history.epoch) < 20  # stopped early
    assert stopper.best_epoch in (0, 1)
    best = max(history.history["val/acc"])
    cut = len(x) - round(len(x) * 0.2)  # fit holds out the last 20 %
    assert clf.evaluate(x[cut:], y[cut:])["acc"] == pytest.approx(best, abs=1e-6)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0}, "optimizer.lr must be > 0"),
        ({"lr": -1e-3}, "optimizer.lr must be > 0"),
        ({"optimizer": "adamm"}, "Unknown optimizer 'adamm'. Allowed values: .*adam"),
        ({"loss": "cross_entropi"}, "Unknown loss 'cross_entropi'. Allowed values: .*cross_entropy.*Keras' names"),
        ({"scheduler": "cosin"}, "Unknown scheduler 'cosin'. Allowed values: .*cosine"),
        ({"metrics": ["acuracy"]}, "Unknown metric 'acuracy'. Allowed: .*accuracy"),
        ({"metrics": ["r2"]}, "does not apply to classification"),
        ({"loss_weights": {"other": 1.0}}, "loss_weights names outputs"),
    ],
)
def test_compile_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Classifier(_mlp()).compile(**kwargs)


def test_fit_rejects_bad_arguments(digits) -> None:
    x, y = digits
    clf = Classifier(_mlp())
    with pytest.raises(ValueError, match="epochs .* must be > 0"):
        clf.fit(x, y, epochs=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        clf.fit(x, y, batch_size=0, **QUIET)
    with pytest.raises(ValueError, match="fit\\(x, y\\)"):
        clf.fit(x, **QUIET)


def test_wrong_input_shape_names_expected_and_got() -> None:
    with pytest.raises(ValueError, match=r"MLP expected input of shape \(B, 64\).*got \(2, 10\)"):
        _mlp()(torch.zeros(2, 10))
    net = create_model("lenet5")
    with pytest.raises(ValueError, match=r"in_chans = 1, got \(2, 3, 32, 32\)"):
        net(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"built for 32x32 images, got \(2, 1, 28, 28\)"):
        net(torch.zeros(2, 1, 28, 28))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_auxiliary_heads_add_weighted_losses_while_training() -> None:
    class WithAux(nn.Module):
        aux_loss_weight = 0.3

        def __init__(self) -> None:
            super().__init__()
            self.main, self.aux = nn.Linear(64, 10), nn.Linear(64, 10)
            self.num_classes = 10

        def forward(self, x):
            if self.training:
                return {"logits": self.main(x), "aux1": self.aux(x)}
            return self.main(x)

    torch.manual_seed(0)
    net = WithAux()
    clf = Classifier(net)
    x, y = torch.randn(8, 64), torch.randint(0, 10, (8,))
    ce = nn.functional.cross_entropy
    loss = clf.training_step((x, y), 0)
    expected = ce(net.main(x), y) + 0.3 * ce(net.aux(x), y)
    torch.testing.assert_close(loss, expected)
    clf.eval()
    assert clf.predict(x).shape == (8, 10)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_googlenet_with_aux_heads_trains() -> None:
    net = create_model("googlenet", num_classes=10, in_chans=1, aux_logits=True)
    clf = Classifier(net)
    x, y = torch.randn(2, 1, 32, 32), torch.tensor([1, 2])
    loss = clf.training_step((x, y), 0)
    loss.backward()
    assert torch.isfinite(loss) and net.aux1.fc2.weight.grad is not None


class _StepLosses(L.Callback):
    """Each training step's loss and batch size, to check the logged epoch means."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append((float(outputs["loss"]), len(batch[0])))


@pytest.mark.parametrize("max_steps", [-1, 5])
def test_train_epoch_means_are_weighted_by_batch_size(digits, max_steps: int) -> None:
    # 100 samples in batches of 32: the last batch has 4, so a plain mean of the step
    # losses would differ from the per-sample mean Lightning's on_epoch logging gives.
    # max_steps=5 stops inside epoch 2: its partial epoch is logged at epoch end.
    x, y = digits
    L.seed_everything(0, verbose=False)
    clf = Classifier(_mlp()).compile(optimizer="sgd", lr=0.05, metrics=["accuracy"])
    steps = _StepLosses()
    history = clf.fit(x[:100], y[:100], epochs=2, batch_size=32, callbacks=[steps],
                      max_steps=max_steps, limit_val_batches=0, **QUIET)
    per_epoch = [steps.steps[:4], steps.steps[4:]]
    assert len(steps.steps) == (8 if max_steps == -1 else 5)
    assert len(history.history["train/loss"]) == 2
    for logged, batches in zip(history.history["train/loss"], per_epoch):
        expected = sum(loss * n for loss, n in batches) / sum(n for _, n in batches)
        assert logged == pytest.approx(expected, rel=1e-6)
    assert all(0.0 <= acc <= 1.0 for acc in history.history["train/acc"])


@pytest.mark.parametrize("buffer", [Classifier.TRAIN_METRIC_BUFFER, 100])
def test_buffered_train_metrics_equal_the_epoch_accuracy(digits, buffer: int, monkeypatch) -> None:
    # lr=1e-12 keeps the weights (practically) fixed, so the accuracy is known in advance; a
    # buffer of 100 elements (10 samples of 10 logits) makes the updates go in chunks.
    x, y = digits
    monkeypatch.setattr(Classifier, "TRAIN_METRIC_BUFFER", buffer)
    L.seed_everything(0, verbose=False)
    clf = Classifier(_mlp()).compile(optimizer="sgd", lr=1e-12, metrics=["accuracy", "f1"])
    with torch.no_grad():
        logits = clf.net(torch.as_tensor(x[:150]))
    expected_acc = float((logits.argmax(1) == torch.as_tensor(y[:150])).float().mean())
    history = clf.fit(x[:150], y[:150], epochs=2, batch_size=32, limit_val_batches=0, **QUIET)
    assert history.history["train/acc"] == pytest.approx([expected_acc] * 2, abs=1e-6)
    assert all(0.0 <= f1 <= 1.0 for f1 in history.history["train/f1"])


@pytest.mark.parametrize("accelerator, checked", [(False, [0, 1, 2, 0, 1, 2]), (True, [0, 0])], ids=["cpu", "gpu"])
def test_label_check_reads_the_host_only_where_that_is_free(digits, monkeypatch, accelerator, checked) -> None:
    # The per-batch label check syncs with the device; on an accelerator it runs on the
    # first batch of each epoch only, on CPU (where reading a number is free) on every one.
    import dlkit.tasks.base as base

    monkeypatch.setattr(base, "_on_accelerator", lambda out: accelerator)
    x, y = digits
    clf = Classifier(_mlp()).compile(optimizer="adam", lr=1e-3)
    seen: list[int] = []
    original = clf.validate_targets
    monkeypatch.setattr(clf, "validate_targets", lambda out, t, where: (
        seen.append(int(where.split("batch ")[1].split(":")[0])) if "train batch" in where else None,
        original(out, t, where))[1])  # fmt: skip
    clf.fit(x[:96], y[:96], epochs=2, batch_size=32, **QUIET)
    assert seen == checked


def test_on_accelerator_reads_the_output_device() -> None:
    from dlkit.tasks.base import _on_accelerator

    assert not _on_accelerator(torch.zeros(2, 3))
    assert _on_accelerator(torch.zeros(2, 3, device="meta"))
    assert _on_accelerator({"logits": torch.zeros(2, device="meta")})
    assert not _on_accelerator({})


def test_compile_refuses_what_the_optimiser_does_not_take() -> None:
    # Both must fail here, naming the fix, not later inside fit as a bare TypeError from Adam.
    clf = Classifier(_mlp())
    with pytest.raises(ValueError, match=r"l2 are the task's weight penalties.*Classifier\(net, l2=0\.001\)"):
        clf.compile(optimizer="adam", l2=1e-3)
    with pytest.raises(ValueError, match=r"optimizer\.momentun is not an argument of torch\.optim\.SGD \(did you mean momentum\?\)"):
        clf.compile(optimizer="sgd", lr=0.1, momentun=0.9)
    clf.compile(optimizer="sgd", lr=0.1, momentum=0.9)  # the real names still pass
