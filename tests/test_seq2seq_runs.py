"""Sequence experiments end to end: every config runs, a short run learns, checkpoints reload in a new process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlkit.eval import evaluate
from dlkit.train import train
from tests.conftest import FAST

# Small models: one intra-op thread avoids contention between threads.
pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
DATE_EXPERIMENTS = ["seq2seq_rnn_dates", "seq2seq_bahdanau_dates", "seq2seq_luong_dates", "transformer_dates"]
# Small date sets keep every run short.
SMALL_DATES = ["data.num_train=256", "data.num_val=64", "data.num_test=64", "data.batch_size=32"]
TINY_RNN = ["model.embed_dim=16", "model.hidden_size=32"]
TINY_TRANSFORMER = ["model.d_model=32", "model.nhead=2", "model.dim_feedforward=64",
                    "model.num_encoder_layers=1", "model.num_decoder_layers=1"]
QUERIES = ["3rd of March 1998", "Tue 03/03/98", "MARCH 3, 1998", "1 January 2000", "31.12.1999"]


def _tiny(experiment: str) -> list[str]:
    return TINY_TRANSFORMER if experiment.startswith("transformer") else TINY_RNN


@pytest.mark.parametrize("experiment", DATE_EXPERIMENTS)
def test_date_experiment_fast_dev_run_reports_the_seq2seq_metrics(compose_train, tmp_path: Path, experiment: str) -> None:
    cfg = compose_train(f"experiment={experiment}", "+trainer.fast_dev_run=true", *SMALL_DATES, *_tiny(experiment), *FAST)
    assert cfg.task._target_ == "dlkit.tasks.Seq2Seq" and cfg.model.src_vocab_size is None
    metrics, objects = train(cfg)
    # The vocabulary sizes came from the data.
    assert cfg.model.src_vocab_size == len(objects["datamodule"].src_vocab)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test/exact_match", "test/bleu", "test/token_acc", "test/loss", "train/loss"):
        assert key in saved and saved[key] == pytest.approx(metrics[key]), key


@pytest.mark.parametrize(("experiment", "data"), [("lstm_digits_rows", "digits"), ("lstm_fashion_rows", "fashion")])
def test_row_lstm_experiment_fast_dev_run(compose_train, experiment: str, data: str) -> None:
    if data == "fashion" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST files not installed (apt-get install dataset-fashion-mnist).")
    cfg = compose_train(f"experiment={experiment}", "+trainer.fast_dev_run=true", *FAST)
    metrics, objects = train(cfg)
    net = objects["task"].net
    side = 8 if data == "digits" else 28
    assert cfg.model.num_classes == 10 and cfg.model.img_size == side  # from the data
    assert {"test/acc", "test/loss"} <= metrics.keys()
    x = next(iter(objects["datamodule"].test_dataloader()))[0][:2]
    assert x.shape == (2, 1, side, side)  # read as `side` steps of `side` features
    assert net(torch.rand(2, 1, side, side)).shape == (2, 10)


def test_seq2seq_callbacks_config_adds_the_attention_logger(compose_train) -> None:
    cfg = compose_train("experiment=seq2seq_bahdanau_dates")
    assert cfg.callbacks.attention_logger._target_ == "dlkit.callbacks.AttentionHeatmapLogger"
    assert "model_checkpoint" in cfg.callbacks and cfg.task.monitor == "val/exact_match"
    assert "attention_logger" not in compose_train("experiment=seq2seq_rnn_dates").callbacks


@pytest.mark.slow
def test_bahdanau_learns_dates_within_a_few_epochs(compose_train, tmp_path: Path) -> None:
    # 2,000 training dates, a small model, 5 epochs: chance is ~0.
    cfg = compose_train(
        "experiment=seq2seq_bahdanau_dates", "data.num_train=2000", "data.num_val=200", "data.num_test=200",
        "data.batch_size=32", "model.embed_dim=32", "model.hidden_size=64", "model.dropout=0.0",
        "optimizer.lr=0.01", "trainer.max_epochs=5", "~logger", "~callbacks.attention_logger", *FAST,
    )
    metrics, _ = train(cfg)
    assert metrics["test/exact_match"] >= 0.5, metrics
    assert metrics["test/token_acc"] >= 0.9 and metrics["test/bleu"] >= 0.8, metrics


def test_reloaded_checkpoint_predicts_the_same_strings_in_a_new_process(
    compose_train, compose_eval, tmp_path: Path
) -> None:
    cfg = compose_train(
        "experiment=seq2seq_bahdanau_dates", *SMALL_DATES, *TINY_RNN, "trainer.max_epochs=2", "~logger", *FAST,
    )
    metrics, objects = train(cfg)
    task = objects["task"]  # holds the best checkpoint's weights after testing
    before = task.predict(QUERIES)
    run_dir = tmp_path / "run"

    script = (
        "import json, sys\n"
        "from dlkit.tasks import Seq2Seq\n"
        "task = Seq2Seq.from_checkpoint(sys.argv[1])\n"
        "print(json.dumps(task.predict(json.loads(sys.argv[2]))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(run_dir), json.dumps(QUERIES)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads(done.stdout.strip().splitlines()[-1])
    assert after == before

    # The run's DataModule is rebuilt (no data loaded) to encode strings as in training.
    from dlkit.data import DateTranslationDataModule
    from dlkit.tasks import Seq2Seq

    reloaded = Seq2Seq.from_checkpoint(run_dir)
    assert isinstance(reloaded.source_encoder, DateTranslationDataModule)
    assert reloaded.predict(QUERIES) == before

    # dlkit-eval rebuilds the same run from the checkpoint alone.
    result = evaluate(compose_eval(f"ckpt_path={run_dir}", "+trainer.enable_progress_bar=false"))
    assert result["test/exact_match"] == pytest.approx(metrics["test/exact_match"], abs=1e-6)


def test_from_checkpoint_refuses_a_classifier_checkpoint(compose_train, tmp_path: Path) -> None:
    from dlkit.tasks import Seq2Seq

    train(compose_train("trainer.max_epochs=1", "~logger", "test=false", *FAST))
    with pytest.raises(ValueError, match="not written by dlkit-train with a Seq2Seq task"):
        Seq2Seq.from_checkpoint(tmp_path / "run")
