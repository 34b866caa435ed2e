"""trainer=ddp_cpu: two gloo processes train one run, in one folder, close to one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="multi-process runs are tested on Linux")

REPO = Path(__file__).resolve().parents[1]
SHORT = ["trainer.max_epochs=4", "test=true", *FAST]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dlkit.train", *args, f"paths.log_dir={tmp_path / 'logs'}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("metrics.json"))]


def test_two_processes_train_one_run_and_match_one_process(tmp_path: Path) -> None:
    # The same global batch: 64 in one process, 2 x 32 under DDP.
    _run(tmp_path, "task_name=single", *SHORT)
    done = _run(tmp_path, "task_name=ddp", "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=32", *SHORT)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr
    (single,), ddp = _metrics(tmp_path / "logs" / "single"), _metrics(tmp_path / "logs" / "ddp")
    assert len(ddp) == 1, ddp  # rank 0 alone writes metrics.json
    assert len(list((tmp_path / "logs" / "ddp" / "runs").iterdir())) == 1
    assert ddp[0]["status"] == "ok"
    # Other batches (each rank shuffles its own shard), same data and steps: close, not equal.
    assert abs(ddp[0]["val/acc"] - single["val/acc"]) < 0.05, (ddp[0]["val/acc"], single["val/acc"])
    assert abs(ddp[0]["test/acc"] - single["test/acc"]) < 0.05, (ddp[0]["test/acc"], single["test/acc"])
