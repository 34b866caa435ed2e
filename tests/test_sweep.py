"""``dlkit-train -m``: every job has a row in the sweep's summary.csv, a failed one too."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dlkit.run_output import write_metrics_json
from dlkit.sweep import SweepSummary, best_job, collect_jobs, summary_markdown, write_summary
from tests.conftest import FAST

REPO = Path(__file__).resolve().parents[1]
TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2", *FAST]


def test_a_two_job_sweep_has_both_rows_and_the_failed_job_does_not_stop_the_other(tmp_path: Path) -> None:
    # Job 1 fails validation (lr -1); job 0 runs all the same. Hydra then exits non-zero.
    cmd = [sys.executable, "-m", "dlkit.train", "-m", f"paths.log_dir={tmp_path}", "task_name=sweep",
           "optimizer.lr=-1,0.001", *TINY]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0, done.stdout[-2000:] + done.stderr[-2000:]
    (sweep,) = (tmp_path / "sweep" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "failed", "optimizer.lr=-1"), ("1", "ok", "optimizer.lr=0.001")]
    assert rows[0]["error"] == "ConfigError: optimizer.lr must be > 0 and finite, got -1."
    assert 0 <= float(rows[1]["val/acc"]) <= 1 and float(rows[1]["test/acc"]) >= 0 and float(rows[1]["wall_time_s"]) > 0
    assert "| 1 | ok | optimizer.lr=0.001 |" in (sweep / "summary.md").read_text()


def _job(sweep: Path, num: int, overrides: list[str], metrics: dict | None) -> None:
    folder = sweep / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        write_metrics_json(folder / "metrics.json", metrics, status="ok", wall_time_s=1.5)


def test_rows_follow_the_job_numbers_and_a_job_without_metrics_is_missing(tmp_path: Path) -> None:
    for num, lr in ((10, "0.1"), (2, "0.01")):
        _job(tmp_path, num, ["seed=1", f"optimizer.lr={lr}"], {"val/acc": 0.5, "train/loss": 1.0})
    _job(tmp_path, 3, ["seed=1", "optimizer.lr=1"], None)
    rows = collect_jobs(tmp_path)
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("2", "ok", "optimizer.lr=0.01"), ("3", "missing", "optimizer.lr=1"), ("10", "ok", "optimizer.lr=0.1")]
    assert "train/loss" not in rows[0] and rows[0]["val/acc"] == 0.5
    path = write_summary(tmp_path, "val/acc")
    assert path.read_text().splitlines()[0] == "job,status,overrides,wall_time_s,error,val/acc"
    table = summary_markdown(rows, "val/acc")
    assert table.splitlines()[0] == "| job | status | overrides | wall_time_s | val/acc | error |"


@pytest.mark.parametrize(("metric", "mode", "best"), [("val/acc", None, "1"), ("val/loss", None, "0"),
                                                     ("val/acc", "min", "0")])
def test_the_best_job_is_found_by_the_metrics_direction(metric: str, mode: str | None, best: str) -> None:
    rows = [{"job": "0", "status": "ok", "val/acc": 0.90, "val/loss": 0.2},
            {"job": "1", "status": "ok", "val/acc": 0.95, "val/loss": 0.3},
            {"job": "2", "status": "failed", "val/acc": 0.99, "val/loss": 0.1}]  # failed: never the best
    assert best_job(rows, metric, mode)["job"] == best


def test_a_finished_sweep_ends_with_its_verdict(tmp_path: Path, caplog) -> None:
    for num, (lr, acc) in enumerate((("0.001", 0.91), ("0.003", 0.97))):
        _job(tmp_path, num, ["seed=1", f"optimizer.lr={lr}", "data.name=a b"], {"val/acc": acc})
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "sweeper": {"_target_": "basic"}},
                               "optimized_metric": "val/acc", "task": {"monitor": "val/acc", "monitor_mode": "max"}})
    with caplog.at_level(logging.INFO, logger="dlkit.sweep"):
        SweepSummary().on_multirun_end(config)
    assert ("Best of 2 jobs by val/acc: job 1, val/acc=0.97\n  dlkit-train seed=1 optimizer.lr=0.003 'data.name=a b'"
            f"\n  folder: {tmp_path / '1'}") in caplog.text


def test_docstring_examples(docstring_examples) -> None:
    docstring_examples(summary_markdown)
    docstring_examples(best_job)
