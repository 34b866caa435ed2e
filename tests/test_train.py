"""dlkit-train end to end: fast_dev_run, a short real run, resume, eval, bad input, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from dlkit.config import ConfigError, group_options
from dlkit.eval import evaluate
from dlkit.train import train
from tests.conftest import FAST, have_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


def test_fast_dev_run_of_the_default_experiment(compose_train, tmp_path: Path) -> None:
    cfg = compose_train("debug=fdr")
    assert cfg.model.name == "lenet5" and cfg.data._target_.endswith("DigitsDataModule")
    metrics, objects = train(cfg)
    assert objects["trainer"].fast_dev_run
    assert {"train/loss", "test/loss", "test/acc"} <= metrics.keys()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test/acc"] == pytest.approx(metrics["test/acc"]) and saved["wall_time_s"] > 0


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_fast_dev_runs(experiment: str, compose_train) -> None:
    cfg = compose_train(f"experiment={experiment}", "debug=fdr")
    if cfg.get("pretrain"):  # its pretraining is a run of its own: keep it to a few batches
        cfg = compose_train(f"experiment={experiment}", "debug=fdr", "pretrain.overrides=['trainer.max_epochs=1',"
                            "'+trainer.limit_train_batches=2','+trainer.limit_val_batches=2','test=false']")
    if "FashionMNIST" in cfg.data._target_ and not have_fashion_mnist():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    metrics, objects = train(cfg)
    assert objects["trainer"].fast_dev_run
    assert "train/loss" in metrics and "test/loss" in metrics


def test_null_model_keys_are_filled_from_the_data(compose_train) -> None:
    cfg = compose_train("debug=fdr", "model.num_classes=null", "model.in_chans=null")
    _, objects = train(cfg)
    net = objects["task"].net
    assert net.num_classes == 10 and net.in_chans == 1
    assert cfg.model.num_classes == 10  # the filled value is part of the stored config


def _scalars(event_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[float]] = {}
    for f in sorted(event_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return values


@pytest.mark.slow
def test_short_real_run_learns_digits_and_logs_to_tensorboard(compose_train, tmp_path: Path) -> None:
    cfg = compose_train("trainer.max_epochs=6", "model.variant=modern", *FAST)
    metrics, objects = train(cfg)
    assert metrics["val/acc_best"] >= 0.90, metrics
    assert metrics["test/acc"] >= 0.90, metrics
    run = tmp_path / "run"
    ckpts = {p.name for p in (run / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in ckpts and len(ckpts) == 2  # last + best
    scalars = _scalars(run / "tensorboard")
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc", "train/lr"):
        assert tag in scalars, f"{tag} not logged; logged: {sorted(scalars)}"
    assert len(scalars["val/acc"]) == 6
    # The HPARAMS tab reads these curves themselves (tests/callbacks/test_hparams.py): no hp/* copies.
    assert not any(t.startswith("hp/") for t in scalars), sorted(scalars)
    assert "epoch" not in scalars  # Lightning's staircase stays in the CSV, out of the first page
    assert (run / "tensorboard" / "hparams.yaml").is_file()


def _epochs_logged(metrics_csv: Path) -> set[int]:
    with metrics_csv.open() as f:
        return {int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/acc")}


def test_resume_continues_the_epoch_counter(compose_train, tmp_path: Path) -> None:
    first = compose_train("trainer.max_epochs=1", "logger=csv", "test=false", *FAST, output_dir=tmp_path / "a")
    _, objects = train(first)
    assert objects["trainer"].current_epoch == 1
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").is_file()

    # A run directory is enough: ckpt_path resolves to its checkpoints/last.ckpt.
    second = compose_train(
        f"ckpt_path={tmp_path / 'a'}", "trainer.max_epochs=2", "logger=csv", "test=false", *FAST,
        output_dir=tmp_path / "b",
    )
    _, objects = train(second)
    assert objects["trainer"].current_epoch == 2
    assert _epochs_logged(tmp_path / "a" / "csv" / "metrics.csv") == {0}
    assert _epochs_logged(tmp_path / "b" / "csv" / "metrics.csv") == {1}  # the 2nd epoch, 0-based


def test_eval_reproduces_the_test_accuracy(compose_train, compose_eval, tmp_path: Path) -> None:
    cfg = compose_train("trainer.max_epochs=2", "model.variant=modern", "~logger", *FAST)
    metrics, _ = train(cfg)
    result = evaluate(compose_eval(f"ckpt_path={tmp_path / 'run'}", "+trainer.enable_progress_bar=false"))
    assert abs(result["test/acc"] - metrics["test/acc"]) <= 1e-3
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["ckpt_path"].endswith(".ckpt") and saved["ckpt_path"] != "last.ckpt"


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("group", ["model", "optimizer", "loss", "scheduler", "data"])
def test_unknown_group_option_lists_the_allowed_values(compose_train, group: str) -> None:
    with pytest.raises(MissingConfigException) as info:
        compose_train(f"{group}=no_such_thing")
    message = str(info.value)
    assert f"'{group}/no_such_thing'" in message and "Available options" in message
    allowed = {"model": "lenet5", "optimizer": "adamw", "loss": "cross_entropy", "scheduler": "cosine",
               "data": "digits"}[group]
    assert allowed in message


def test_unknown_model_name_lists_registered_models(compose_train) -> None:
    with pytest.raises(ConfigError, match=r"(?s)`model`.*Unknown model 'lenet6'.*Did you mean: lenet5.*mlp"):
        train(compose_train("model.name=lenet6"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("trainer.max_epochs=-3", "trainer.max_epochs"),
        ("data.batch_size=0", "data.batch_size"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=-0.1", "optimizer.lr"),
    ],
)
def test_non_positive_values_name_the_key(compose_train, tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key} must be (an integer )?> 0"):
        train(compose_train(override))
    assert not (tmp_path / "run" / "checkpoints").exists()  # raised before anything ran


def test_missing_ckpt_path_fails_before_training(compose_train, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ckpt_path=.*does not exist"):
        train(compose_train(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    # Nothing ran: the run folder holds only the record of the failure.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json", "train.log"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_eval_without_a_checkpoint_is_a_clear_error(compose_eval, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate(compose_eval(f"ckpt_path={tmp_path / 'missing'}"))


# ----------------------------------------------------------------------------- the CLI
_NO_TORCH_PROBE = """
import atexit, sys
atexit.register(lambda: print("HEAVY:", sorted(m for m in ("torch", "lightning") if m in sys.modules)))
sys.argv = ["dlkit-train", *sys.argv[1:]]
from dlkit.train import main
main()
"""


@pytest.mark.parametrize("flag", ["--help", "--cfg=job"])
def test_help_and_cfg_do_not_import_torch(flag: str, tmp_path: Path) -> None:
    args = [flag] if flag == "--help" else ["--cfg", "job"]
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_PROBE, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY: []" in out.stdout
    assert ("model:" in out.stdout) if flag != "--help" else ("dlkit" in out.stdout or "Powered by Hydra" in out.stdout)


@pytest.mark.slow
def test_console_script_writes_the_run_folder(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("dlkit-train")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dlkit.train"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([*cmd, "debug=fdr", "task_name=cli"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((tmp_path / "logs" / "cli" / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / ".hydra" / "config.yaml").is_file()
    assert json.loads((runs[0] / "metrics.json").read_text())["test/acc"] >= 0.0
