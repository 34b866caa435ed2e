"""Save and load like Keras and Lightning: ``save``/``load_model``, ``load_from_checkpoint`` without ``net=``,
``fit(ckpt_path=)``; and Keras' habits: float labels, evaluate's keys, summary printed once."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.datasets import load_digits

import dlkit
from dlkit import Classifier, Regressor, Seq2Seq, create_model
from dlkit.config import ConfigError
from dlkit.data.checks import DataError
from dlkit.tasks.checks import as_class_indices
from dlkit.tasks.saving import MODEL_KEY, TASK_KEY, model_spec, plain_compile_settings
from tests.tasks.seq2seq_standins import date_data

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"verbose": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32)[:400], y[:400]


def _clf(**compile_kwargs) -> Classifier:
    torch.manual_seed(0)
    net = create_model("mlp", in_features=64, hidden_sizes=(16,), num_classes=10)
    return Classifier(net).compile(**compile_kwargs) if compile_kwargs else Classifier(net)


def _checkpointing(tmp_path: Path) -> dict:
    return {"callbacks": [ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)],
            "enable_checkpointing": True}


# ----------------------------------------------------------------------------- load_from_checkpoint
def test_load_from_checkpoint_rebuilds_the_network_of_a_python_fit(digits, tmp_path) -> None:
    x, y = digits
    clf = _clf(optimizer="adam", lr=3e-3, metrics=["accuracy", "f1"])
    clf.fit(x, y, epochs=1, batch_size=64, validation_split=0.25, **_checkpointing(tmp_path), **QUIET)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)[MODEL_KEY]["_target_"] == "dlkit.models.mlp.MLP"

    loaded = Classifier.load_from_checkpoint(last)  # no net=
    np.testing.assert_allclose(loaded.predict(x[:16]), clf.predict(x[:16]), rtol=0, atol=0)
    assert set(loaded.evaluate(x[:64], y[:64])) == {"loss", "acc", "f1"}  # compile's metrics came back
    assert loaded.compile_settings["lr"] == 3e-3

    other = create_model("mlp", in_features=64, hidden_sizes=(16,), num_classes=10)
    given = Classifier.load_from_checkpoint(last, net=other)  # an explicit net wins, and gets the weights
    assert given.net is other and torch.equal(other.head.weight, clf.net.head.weight)


def test_a_network_dlkit_cannot_describe_needs_net(tmp_path) -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    assert model_spec(net) is None
    clf = Classifier(net, num_classes=3)
    path = clf.save(tmp_path / "plain.ckpt")
    assert MODEL_KEY not in torch.load(path, weights_only=True)  # weights and settings only
    with pytest.raises(ConfigError, match=r"neither 'dlkit_config'.*nor 'dlkit_model'.*Classifier\.load_from_checkpoint\(path, net="):
        Classifier.load_from_checkpoint(path)
    with pytest.raises(ConfigError, match="net="):
        dlkit.load_model(path)
    same = dlkit.load_model(path, net=nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    x = torch.randn(5, 4)
    torch.testing.assert_close(same.predict(x), clf.predict(x))


def test_a_changed_head_is_described_by_the_network_not_its_config() -> None:
    net = create_model("lenet5", num_classes=10)
    net.reset_classifier(3)
    assert model_spec(net)["num_classes"] == 3


# ----------------------------------------------------------------------------- save / load_model
def test_save_and_load_model_round_trip_a_classifier(digits, tmp_path) -> None:
    x, y = digits
    clf = _clf(optimizer="Adam", lr=3e-3, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clf.fit(x, y, epochs=2, batch_size=64, **QUIET)
    clf.class_names = [f"digit {i}" for i in range(10)]
    path = clf.save(tmp_path / "sub" / "digits.ckpt")
    stored = torch.load(path, weights_only=True)
    assert stored[TASK_KEY]["task"] == "dlkit.tasks.classifier.Classifier"
    assert stored[TASK_KEY]["compile"]["loss"] == "sparse_categorical_crossentropy"
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left beside it

    loaded = dlkit.load_model(path)
    assert type(loaded) is Classifier and not loaded.training
    assert loaded.class_names == clf.class_names and loaded.hparams.monitor == "val/acc"
    np.testing.assert_array_equal(loaded.predict(x), clf.predict(x))
    assert loaded.evaluate(x, y) == clf.evaluate(x, y)


def test_save_and_load_model_round_trip_a_regressor(tmp_path) -> None:
    torch.manual_seed(0)
    reg = Regressor(create_model("mlp", in_features=3, hidden_sizes=(4,), num_classes=1)).compile(loss="mean_squared_error")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    loaded = dlkit.load_model(reg.save(tmp_path / "reg.ckpt"))
    assert type(loaded) is Regressor and loaded.compile_settings["loss"] == "mean_squared_error"
    np.testing.assert_array_equal(loaded.predict(x), reg.predict(x))


def test_save_and_load_model_round_trip_a_seq2seq_with_its_vocabularies(tmp_path) -> None:
    dates = date_data(num_train=128, num_val=32, num_test=32, batch_size=32, seed=0)
    torch.manual_seed(0)
    net = create_model("seq2seq_bahdanau", **dates.model_hints(), embed_dim=8, hidden_size=16, attention_size=8)
    task = Seq2Seq(net, metrics=["token_acc"]).compile(optimizer="adam", lr=3e-3)
    task.fit(dates, epochs=1, limit_train_batches=2, limit_val_batches=1, **QUIET)
    loaded = dlkit.load_model(task.save(tmp_path / "dates.ckpt"))
    assert type(loaded) is Seq2Seq and loaded.src_vocab == dates.src_vocab and loaded.tgt_vocab == dates.tgt_vocab
    assert loaded.max_decode_len == task.max_decode_len
    sources = [s for s, _ in dates.examples("test")[:8]]
    assert loaded.predict(sources) == task.predict(sources)


# ----------------------------------------------------------------------------- fit(ckpt_path=)
class _EpochsRun(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(trainer.current_epoch)


def test_fit_with_ckpt_path_continues_the_epoch_counter(digits, tmp_path) -> None:
    x, y = digits
    L.seed_everything(0, verbose=False)
    first = _clf(optimizer="adam", lr=3e-3)
    history = first.fit(x, y, epochs=2, batch_size=64, validation_split=0.25, **_checkpointing(tmp_path), **QUIET)
    assert history.epoch == [0, 1]

    resumed, ran = _clf(optimizer="adam", lr=3e-3), _EpochsRun()
    history = resumed.fit(x, y, epochs=4, batch_size=64, validation_split=0.25, ckpt_path=tmp_path,
                          callbacks=[ran], **QUIET)
    assert ran.epochs == [2, 3]  # Keras' initial_epoch=2
    assert history.epoch == [0, 1, 2, 3]  # the History travels in the checkpoint, as in dlkit-train
    assert resumed.trainer.current_epoch == 4
    with pytest.raises(ConfigError, match="does not exist"):
        resumed.fit(x, y, epochs=4, ckpt_path=tmp_path / "nope.ckpt", **QUIET)


# ----------------------------------------------------------------------------- Keras' habits
def test_whole_number_float_labels_are_class_indices(digits) -> None:
    x, y = digits
    clf = _clf(optimizer="adam", lr=3e-3)
    history = clf.fit(x, y.astype(np.float64), epochs=1, batch_size=64, validation_split=0.25, **QUIET)
    assert np.isfinite(history.history["val/acc"][0])
    assert set(clf.evaluate(x, y.astype(np.float32))) == {"loss", "acc"}
    with pytest.raises(DataError, match=r"train y\[0\] = 0\.5: .*floats \(torch\.float32\) that are not whole .*y\.astype\('int64'\)"):
        clf.fit(x, y + 0.5, epochs=1, **QUIET)


def test_evaluate_keys_are_the_history_names_without_the_stage(digits) -> None:
    x, y = digits
    clf = _clf(optimizer="adam", metrics=["accuracy", "f1"])
    history = clf.fit(x, y, epochs=1, batch_size=64, validation_split=0.25, **QUIET)
    result = clf.evaluate(x, y)
    assert {f"val/{k}" for k in result} <= set(history.history)
    assert {f"train/{k}" for k in result} <= set(history.history)


def test_summary_prints_once_and_its_repr_is_one_line(capsys) -> None:
    clf = _clf()
    summary = clf.summary()
    printed = capsys.readouterr().out
    assert printed.count("Total params") == 1
    assert "\n" not in repr(summary) and "Total params" not in repr(summary)
    assert repr(summary) == "ModelSummary('MLP': 3 layers, 1,210 params, 1,210 trainable)"
    assert str(summary) in printed  # the table itself is str()


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(plain_compile_settings)
    docstring_examples(as_class_indices)
