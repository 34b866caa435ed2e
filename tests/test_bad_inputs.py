"""Bad configs, bad data and bad files: each gets a clear error naming the key, file or index,
before training starts where it can, and every failed run is recorded and exits non-zero."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from dlkit import Classifier, Regressor, create_model
from dlkit.callbacks import NonFiniteLossError
from dlkit.config import ConfigError
from dlkit.data.checks import DataError
from dlkit.data.tensor import TensorDataModule
from dlkit.eval import evaluate
from dlkit.run_output import check_finite_metrics
from dlkit.train import train
from dlkit.validation import check_checkpoint_file

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
BEFORE = "before"  # the error must come before Trainer.fit is called
DURING = "during"  # found inside the loop (per-batch checks), at the first bad batch


@pytest.fixture
def no_fit(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """``no_fit()`` makes any ``Trainer.fit`` fail the test: the error must come first."""

    def forbid() -> None:
        def fit(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("Trainer.fit was called: the bad input was not caught before training")

        monkeypatch.setattr(L.Trainer, "fit", fit)

    return forbid


# ----------------------------------------------------------------------------- configs
# (overrides, error type, regex the message must match: it names the key and the value)
CONFIG_CASES = {
    "max_epochs float": ("trainer.max_epochs=1.5", ConfigError, r"trainer\.max_epochs must be an integer > 0.*got 1\.5"),
    "max_epochs zero": ("trainer.max_epochs=0", ConfigError, r"trainer\.max_epochs must be an integer > 0.*got 0"),
    "min_epochs negative": ("trainer.min_epochs=-1", ConfigError, r"trainer\.min_epochs must be an integer >= 0"),
    "batch_size float": ("data.batch_size=2.5", ConfigError, r"data\.batch_size must be an integer > 0, got 2\.5"),
    "batch_size bool": ("data.batch_size=true", ConfigError, r"data\.batch_size must be an integer > 0, got True"),
    "batch_size null": ("data.batch_size=null", ConfigError, r"data\.batch_size is required"),
    "lr inf": ("optimizer.lr=inf", ConfigError, r"optimizer\.lr must be > 0 and finite, got inf"),
    "lr nan": ("optimizer.lr=nan", ConfigError, r"optimizer\.lr must be > 0 and finite, got nan"),
    "lr negative": ("optimizer.lr=-0.1", ConfigError, r"optimizer\.lr must be > 0 and finite, got -0\.1"),
    "lr text": ("optimizer.lr=fast", ConfigError, r"optimizer\.lr must be > 0 and finite, got 'fast'"),
    "weight_decay negative": ("optimizer.weight_decay=-1", ConfigError, r"optimizer\.weight_decay must be >= 0"),
    "betas out of range": ("optimizer.betas=[0.9,1.5]", ConfigError, r"optimizer\.betas must be two numbers in \[0, 1\)"),
    "momentum 1.5": ("optimizer=sgd optimizer.momentum=1.5", ConfigError, r"optimizer\.momentum must be a number in \[0, 1\)"),
    "drop_rate 1.5": ("model.drop_rate=1.5", ConfigError, r"model\.drop_rate must be a number in \[0, 1\), got 1\.5"),
    "drop_rate negative": ("model.drop_rate=-0.1", ConfigError, r"model\.drop_rate must be a number in \[0, 1\)"),
    "dropout 1": ("experiment=lstm_digits_rows model.dropout=1.0", ConfigError, r"model\.dropout must be a number in \[0, 1\)"),
    "num_classes zero": ("model.num_classes=0", ConfigError, r"model\.num_classes must be an integer > 0, got 0"),
    "in_chans zero": ("model.in_chans=0", ConfigError, r"model\.in_chans must be an integer > 0"),
    "hidden_sizes zero": ("model=mlp model.hidden_sizes=[0]", ConfigError, r"model\.hidden_sizes must be a list of integers > 0"),
    "model name null": ("model.name=null", ConfigError, r"model\.name is required"),
    "precision 17": ("trainer.precision=17", ConfigError, r"trainer\.precision must be one of .*'bf16-mixed'.*got 17"),
    "devices zero": ("trainer.devices=0", ConfigError, r"trainer\.devices must be .*got 0"),
    # Before any process starts: the error comes before Trainer.fit, which launches them.
    "more CPU processes than cores": ("trainer=ddp_cpu trainer.devices=512", ConfigError,
                                      r"^trainer\.devices=512 asks for 512 processes on the CPU, but this machine has \d+ "
                                      r"cores for this run: use trainer\.devices=\d+ or fewer"),
    "checkpoint every_n_steps zero": ("checkpoint.every_n_steps=0", ConfigError, r"^checkpoint\.every_n_steps must be an integer > 0, got 0\.$"),
    "checkpoint every_n_steps float": ("checkpoint.every_n_steps=2.5", ConfigError, r"^checkpoint\.every_n_steps must be an integer > 0, got 2\.5\.$"),
    "log_every_n_steps negative": ("trainer.log_every_n_steps=-1", ConfigError, r"trainer\.log_every_n_steps must be"),
    "gradient_clip_val negative": ("+trainer.gradient_clip_val=-1", ConfigError, r"trainer\.gradient_clip_val must be >= 0"),
    "limit_train_batches 1.5": ("+trainer.limit_train_batches=1.5", ConfigError, r"trainer\.limit_train_batches must be"),
    "seed text": ("seed=abc", ConfigError, r"seed must be an integer in \[0, 4294967295\], got 'abc'"),
    "seed float": ("seed=1.5", ConfigError, r"seed must be an integer .*got 1\.5"),
    "seed negative": ("seed=-1", ConfigError, r"seed must be an integer .*got -1"),
    "val_fraction 1.2": ("data.val_fraction=1.2", ConfigError, r"data\.val_fraction must be a number in \[0, 1\), got 1\.2"),
    "test_fraction negative": ("data.test_fraction=-0.1", ConfigError, r"data\.test_fraction must be a number in \[0, 1\)"),
    "resize zero": ("data.resize=0", ConfigError, r"data\.resize must be an integer > 0"),
    "label_smoothing 1.5": ("loss.label_smoothing=1.5", ConfigError, r"loss\.label_smoothing must be a number in \[0, 1\)"),
    "gamma negative": ("scheduler=step scheduler.gamma=-1", ConfigError, r"scheduler\.gamma must be > 0"),
    "plateau factor 2": ("scheduler=plateau scheduler.factor=2", ConfigError, r"scheduler\.factor must be a number in \(0, 1\)"),
    "milestones text": ("scheduler=multistep scheduler.milestones=[a]", ConfigError, r"scheduler\.milestones must be a list of integers"),
    "l1 negative": ("task.l1=-1", ConfigError, r"task\.l1 must be >= 0"),
    "monitor_mode up": ("task.monitor_mode=up", ConfigError, r"task\.monitor_mode must be one of 'min', 'max', got 'up'"),
    "patience negative": ("callbacks.early_stopping.patience=-1", ConfigError, r"callbacks\.early_stopping\.patience must be an integer >= 0"),
    "train not bool": ("train=1", ConfigError, r"train must be true or false, got 1"),
    "optimizer argument Keras-named": ("+optimizer.learning_rate=0.01", ConfigError,
                                       r"^optimizer\.learning_rate is not an argument of torch\.optim\.Adam \(did you mean "
                                       r"lr\?\); its arguments: lr, betas, eps, weight_decay"),
    "scheduler argument misspelt": ("scheduler=step +scheduler.step=3", ConfigError,
                                    r"^scheduler\.step is not an argument of torch\.optim\.lr_scheduler\.StepLR \(did you "
                                    r"mean step_size\?\)"),
    "two errors at once": ("data.batch_size=0 optimizer.lr=0", ConfigError, r"(?s)2 config values are wrong.*data\.batch_size.*optimizer\.lr"),
    # model / data mismatches: both sides named
    "num_classes 5 on 10 classes": ("model.num_classes=5", ConfigError,
                                    r"model lenet5 does not fit data DigitsDataModule: model\.num_classes=5 but the data has num_classes=10"),
    "in_chans 3 on grey images": ("model.in_chans=3", ConfigError, r"model\.in_chans=3 but the data has in_chans=1"),
    "img_size 28 on 32x32": ("model.img_size=28", ConfigError, r"model\.img_size=28 but the data has img_size=32"),
    "lenet5 on dates": ("data=dates", ConfigError,
                        r"model lenet5 does not fit data DateTranslationDataModule: .*src_vocab_size=\d+"),
    "seq2seq model on digits": ("model=seq2seq_rnn", ConfigError, r"model seq2seq_rnn does not fit data DigitsDataModule"),
    "10-class mlp on diabetes": ("model=mlp data=diabetes", ConfigError,
                                 r"model mlp does not fit data DiabetesDataModule: model\.num_classes=10 but the data has num_classes=1"),
    "image model on flat vectors": ("data.flatten=true", ConfigError,
                                    r"model LeNet5 does not fit data DigitsDataModule: on an example batch of shape \(2, 1024\)"),
}


DEVICE_CASES = {  # (trainer node, CPU cores, CUDA devices, regex; None: it fits)
    "2 processes on 2 cores": ({"accelerator": "cpu", "devices": 2}, 2, 0, None),
    "4 processes on 2 cores": ({"accelerator": "cpu", "devices": 4}, 2, 0,
                               r"trainer\.devices=4 asks for 4 processes on the CPU, but this machine has 2 cores"),
    "auto, 3 devices, no GPU": ({"accelerator": "auto", "devices": 3}, 2, 0, r"asks for 3 processes on the CPU"),
    "GPU without one": ({"accelerator": "gpu", "devices": 1}, 2, 0,
                        r"trainer\.accelerator=gpu, but this machine has no CUDA device: train on the CPU with trainer=cpu"),
    "4 GPUs of 2": ({"accelerator": "gpu", "devices": 4}, 2, 2, r"asks for 4 GPUs, but this machine has 2: use trainer\.devices=2"),
    "GPU index 3 of 2": ({"accelerator": "cuda", "devices": [0, 3]}, 2, 2, r"names GPU 3, but this machine has GPUs 0-1"),
    "GPUs 0,1 of 4": ({"accelerator": "cuda", "devices": "0,1"}, 2, 4, None),
    "all there are": ({"accelerator": "cpu", "devices": -1}, 2, 0, None),
    "auto": ({"accelerator": "cpu", "devices": "auto"}, 2, 0, None),
}


@pytest.mark.parametrize("case", DEVICE_CASES, ids=str)
def test_devices_are_counted_before_any_process_starts(case: str) -> None:
    from dlkit.validation import check_devices

    trainer, cores, gpus, pattern = DEVICE_CASES[case]
    problem = check_devices(trainer, cores=cores, gpus=gpus)
    if pattern is None:
        assert problem is None
    else:
        assert problem is not None and re.search(pattern, problem), problem


def test_the_command_line_prints_a_config_error_without_a_traceback(monkeypatch, capsys, tmp_path: Path) -> None:
    from dlkit import train as dlkit_train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["dlkit-train", "optimizer.lr=-1", f"paths.log_dir={tmp_path}"])
    with pytest.raises(SystemExit):
        dlkit_train.main()
    err = capsys.readouterr().err
    assert "optimizer.lr must be > 0 and finite, got -1." in err and "Traceback" not in err
    (log,) = tmp_path.rglob("train.log")
    assert "Traceback" in log.read_text()  # the run folder keeps it


@pytest.mark.parametrize("case", CONFIG_CASES, ids=str)
def test_bad_config_is_refused_before_training(case: str, compose_train, tmp_path: Path, no_fit) -> None:
    overrides, error, pattern = CONFIG_CASES[case]
    no_fit()
    with pytest.raises(error, match=pattern):
        train(compose_train(*overrides.split()))
    run = tmp_path / "run"
    assert not (run / "checkpoints").exists()
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith(error.__name__)
    assert "Traceback" in (run / "train.log").read_text()


def test_a_regressor_on_class_labels_names_the_batch(compose_train) -> None:
    with pytest.raises(DataError, match=r"train batch 0: y has shape \(64,\).*10 output\(s\) per sample"):
        train(compose_train("task=regressor", "debug=fdr"))


# ----------------------------------------------------------------------------- checkpoint files
def _checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(256)}}, path)
    return path


def _empty(d: Path) -> Path:
    (d / "empty.ckpt").write_bytes(b"")
    return d / "empty.ckpt"


def _text(d: Path) -> Path:
    (d / "notes.ckpt").write_text("epoch 3: val/acc 0.98\n")
    return d / "notes.ckpt"


def _truncated(d: Path) -> Path:
    data = _checkpoint(d / "full.ckpt").read_bytes()
    (d / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return d / "cut.ckpt"


def _foreign_zip(d: Path) -> Path:
    with zipfile.ZipFile(d / "other.ckpt", "w") as z:
        z.writestr("readme.txt", "not a checkpoint")
    return d / "other.ckpt"


FILE_CASES = {
    "empty": (_empty, r"empty\.ckpt is empty \(0 bytes\)"),
    "text": (_text, r"notes\.ckpt is not a checkpoint: it holds text \('epoch 3"),
    "truncated": (_truncated, r"cut\.ckpt is truncated or damaged"),
    "foreign zip": (_foreign_zip, r"other\.ckpt is a zip archive but not a torch checkpoint"),
}


@pytest.mark.parametrize("case", FILE_CASES, ids=str)
def test_a_bad_checkpoint_file_is_named_before_training(case: str, compose_train, tmp_path: Path, no_fit) -> None:
    make, pattern = FILE_CASES[case]
    no_fit()
    with pytest.raises(ConfigError, match=pattern):
        train(compose_train(f"ckpt_path={make(tmp_path)}"))


@pytest.mark.parametrize("case", ["empty", "text"], ids=str)
def test_dlkit_eval_names_a_bad_checkpoint_file(case: str, compose_eval, tmp_path: Path) -> None:
    make, pattern = FILE_CASES[case]
    with pytest.raises(ConfigError, match=pattern):
        evaluate(compose_eval(f"ckpt_path={make(tmp_path)}"))
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert record["status"] == "failed" and "eval.log" in os.listdir(tmp_path / "eval")


def test_a_real_checkpoint_passes(tmp_path: Path) -> None:
    check_checkpoint_file(_checkpoint(tmp_path / "ok.ckpt"))


# ----------------------------------------------------------------------------- the Python face
RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype(np.float32)
Y = RNG.integers(0, 3, 64)


def _clf(num_classes: int = 3) -> Classifier:
    return Classifier(create_model("mlp", in_features=4, num_classes=num_classes, hidden_sizes=[8]))


def _reg() -> Regressor:
    return Regressor(create_model("mlp", in_features=4, num_classes=1, hidden_sizes=[8]))


def _with(a: np.ndarray, index: tuple[int, ...], value: Any) -> np.ndarray:
    a = a.copy()
    a[index] = value
    return a


def _fit(task: Any, *args: Any, **kwargs: Any) -> Any:
    return task.fit(*args, verbose=False, **kwargs)


class _BadLabels(TensorDataModule):
    """A DataModule (not arrays): its labels are only seen batch by batch."""

    def __init__(self) -> None:
        super().__init__(batch_size=16)

    def setup(self, stage: str | None = None) -> None:
        self.splits = {"train": (torch.from_numpy(X), torch.from_numpy(_with(Y, (37,), 9)))}


PYTHON_CASES: dict[str, tuple[Callable[[], Any], type, str, str]] = {
    "nan input": (lambda: _fit(_clf(), _with(X, (37, 2), np.nan), Y), DataError, r"train split x\[37\] holds nan", BEFORE),
    "inf input": (lambda: _fit(_clf(), _with(X, (5, 0), np.inf), Y), DataError, r"train split x\[5\] holds inf", BEFORE),
    "label = num_classes": (lambda: _fit(_clf(), X, _with(Y, (41,), 3)), DataError,
                            r"train y\[41\] = 3 is not a class index in \[0, 3\)", BEFORE),
    "negative label": (lambda: _fit(_clf(), X, _with(Y, (41,), -1)), DataError, r"train y\[41\] = -1 is not a class index", BEFORE),
    "all labels ignored": (lambda: _fit(_clf(), X, np.full(64, -100)), DataError, r"train y equals the loss' ignore_index -100", BEFORE),
    "non-integer float labels": (lambda: _fit(_clf(), X, Y + 0.5), DataError,
                                 r"train y\[0\] = \d\.5: train y holds floats \(torch\.float32\) that are not whole numbers.*y\.astype\('int64'\)", BEFORE),
    "labels of shape (N, 1)": (lambda: _fit(_clf(), X, Y[:, None]), DataError, r"train y has shape \(64, 1\).*y\.reshape\(-1\)", BEFORE),
    "binary label 2": (lambda: _fit(_clf(1), X, _with(Y, (0,), 2)), DataError, r"train y\[0\] = 2 is not a class index in \[0, 2\)", BEFORE),
    "empty arrays": (lambda: _fit(_clf(), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)), DataError,
                     r"train split: x is empty \(0 samples\)", BEFORE),
    "lengths differ": (lambda: _fit(_clf(), X, Y[:60]), DataError, r"train split: x has 64 samples but y has 60", BEFORE),
    "validation split leaves no training data": (lambda: _fit(_clf(), X[:1], Y[:1], validation_split=0.5), DataError,
                                                 r"train split: x is empty", BEFORE),
    "nan in validation_data": (lambda: _fit(_clf(), X, Y, validation_data=(_with(X, (3, 1), np.nan), Y)), DataError,
                               r"val split x\[3\] holds nan", BEFORE),
    "nan regression target": (lambda: _fit(_reg(), X, _with(np.ones(64, np.float32), (9,), np.nan)), DataError,
                              r"train split y\[9\] holds nan", BEFORE),
    "regression targets of the wrong width": (lambda: _fit(_reg(), X, np.zeros((64, 3), np.float32)), DataError,
                                              r"train y has shape \(64, 3\), 3 target\(s\) per sample", BEFORE),
    "strings as inputs": (lambda: _fit(_clf(), np.full((64, 4), "a"), Y), DataError, r"fit\(x, y\): x and y must hold numbers", BEFORE),
    "integer inputs to a float network": (lambda: _fit(_clf(), RNG.integers(0, 5, (64, 4)), Y), ConfigError,
                                          r"model MLP does not fit the train arrays: .*\(2, 4\), torch\.int64", BEFORE),
    "wrong feature count": (lambda: _fit(_clf(), np.zeros((64, 5), np.float32), Y), ConfigError,
                            r"model MLP does not fit the train arrays: on an example batch of shape \(2, 5\)", BEFORE),
    "fit epochs 1.5": (lambda: _fit(_clf(), X, Y, epochs=1.5), ValueError, r"epochs \(trainer\.max_epochs\) must be > 0 and an integer, got 1\.5", BEFORE),
    "fit batch_size 2.5": (lambda: _fit(_clf(), X, Y, batch_size=2.5), ValueError, r"batch_size must be a positive integer, got 2\.5", BEFORE),
    "compile lr inf": (lambda: _clf().compile(lr=float("inf")), ConfigError, r"optimizer\.lr must be > 0 and finite, got inf", BEFORE),
    "compile lr nan": (lambda: _clf().compile(lr=float("nan")), ConfigError, r"optimizer\.lr must be > 0 and finite, got nan", BEFORE),
    "compile lr text": (lambda: _clf().compile(lr="fast"), ConfigError, r"optimizer\.lr must be > 0 and finite, got 'fast'", BEFORE),
    "compile weight_decay -1": (lambda: _clf().compile(optimizer="adam", weight_decay=-1), ConfigError,
                                r"optimizer\.weight_decay must be >= 0", BEFORE),
    "compile momentum 2": (lambda: _clf().compile(optimizer="sgd", momentum=2.0), ConfigError,
                           r"optimizer\.momentum must be a number in \[0, 1\), got 2\.0", BEFORE),
    "compile unknown optimizer": (lambda: _clf().compile(optimizer="adamm"), ValueError, r"Unknown optimizer 'adamm'.*adam", BEFORE),
    "predict nan": (lambda: _clf().predict(_with(X, (37, 0), np.nan)), DataError, r"predict data x\[37\] holds nan", BEFORE),
    "evaluate label out of range": (lambda: _clf().evaluate(X, _with(Y, (41,), 7)), DataError,
                                    r"test batch 0: y\[41\] = 7 is not a class index in \[0, 3\)", DURING),
    "DataModule label out of range": (lambda: _fit(_clf(), _BadLabels()), DataError,
                                      r"train batch \d+: y\[\d+\] = 9 is not a class index in \[0, 3\)", DURING),
}


@pytest.mark.parametrize("case", PYTHON_CASES, ids=str)
def test_bad_python_input_is_named(case: str, no_fit) -> None:
    make, error, pattern, when = PYTHON_CASES[case]
    if when == BEFORE:
        no_fit()
    with pytest.raises(error, match=pattern):
        make()


def test_the_tables_hold_at_least_40_cases() -> None:
    total = len(CONFIG_CASES) + len(FILE_CASES) + len(PYTHON_CASES) + 1  # + the regressor on class labels
    assert total >= 40, total


# ----------------------------------------------------------------------------- NaN during training
class _NaNAtBatch(TensorDataModule):
    """Finite arrays; the 4th training batch is made NaN after loading (as a broken pipeline would)."""

    def __init__(self) -> None:
        super().__init__(train=(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=8)
        self.batches = 0

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        if self.trainer is not None and self.trainer.training:
            if self.batches == 3:
                x = x.clone()
                x[5, 1] = float("nan")
            self.batches += 1
        return x, y


def test_a_nan_loss_stops_training_at_its_step_with_the_weights_of_the_step_before() -> None:
    clf = _clf()
    with pytest.raises(NonFiniteLossError, match=r"train/loss is nan at step 3 \(epoch 0, batch 3\).*inputs hold NaN/inf at sample 5"):
        _fit(clf, _NaNAtBatch())
    assert all(torch.isfinite(p).all() for p in clf.parameters())


def test_a_diverging_run_fails_and_says_so(compose_train, tmp_path: Path) -> None:
    cfg = compose_train("debug=default", "+trainer.limit_train_batches=8", "+trainer.limit_val_batches=1", "test=false",
                        "optimizer.lr=1e6")
    with pytest.raises(NonFiniteLossError, match=r"train/loss is (nan|inf) at step \d+ .*lower optimizer\.lr \(now 1e\+06\)"):
        train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("NonFiniteLossError: train/loss is")
    assert "NonFiniteLossError" in (tmp_path / "run" / "train.log").read_text()


def test_nan_final_metrics_fail_the_run() -> None:
    with pytest.raises(NonFiniteLossError, match=r"test/loss=nan at the end of the run"):
        check_finite_metrics({"test/loss": float("nan"), "test/acc": 0.1}, ["test/loss"], "at the end of the run")
    check_finite_metrics({"test/loss": 0.3, "test/r2": float("nan")}, ["test/loss"], "at the end of the run")


def test_a_good_run_says_ok(compose_train, tmp_path: Path) -> None:
    train(compose_train("debug=fdr"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "ok"


def test_the_label_check_leaves_a_valid_batch_alone() -> None:
    clf = _clf()
    out = torch.zeros(4, 3)
    clf.validate_targets(out, torch.tensor([0, 2, 1, 0]), "y")
    clf.validate_targets(out, torch.tensor([0, -100, 1, 2]), "y")  # ignored labels are fine
    clf.validate_targets(out, torch.softmax(torch.randn(4, 3), -1), "y")  # soft labels
    clf.validate_targets(out, torch.tensor([0.0, 2.0, 1.0, 0.0]), "y")  # whole-number floats: class indices


# ----------------------------------------------------------------------------- the CLI
def test_the_cli_exits_non_zero_and_records_the_failure(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("dlkit-train")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dlkit.train"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([*cmd, "optimizer.lr=inf", "task_name=cli"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert out.returncode != 0
    assert "optimizer.lr must be > 0 and finite, got inf" in out.stderr
    (run,) = (tmp_path / "logs" / "cli" / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
    assert "Traceback" in (run / "train.log").read_text()
