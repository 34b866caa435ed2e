"""SLURM through Hydra's Submitit launcher: the configs compose here; submitit_local runs a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import FAST

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs dlkit[cluster] (hydra-submitit-launcher)")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hydra_compose() -> Iterator:
    GlobalHydra.instance().clear()
    with initialize_config_module("dlkit.conf", version_base="1.3"):
        yield lambda *o: compose("train", list(o), return_hydra_config=True)
    GlobalHydra.instance().clear()


def test_the_slurm_launcher_takes_its_shape_from_the_trainer(hydra_compose) -> None:
    cfg = hydra_compose("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                        "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == ("gpu", 2, 4, 4)
    assert launcher.timeout_min == 60 and launcher.max_num_timeout == 3


def test_submitit_local_runs_a_job(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dlkit.train", "-m", "hydra/launcher=submitit_local", f"paths.log_dir={tmp_path}",
           "task_name=local", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
           "test=false", *FAST]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sweep,) = (tmp_path / "local" / "multiruns").iterdir()
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "ok"
    assert (sweep / "summary.csv").is_file()


def test_a_requeued_slurm_job_resumes_from_its_own_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from dlkit.resume import resume_checkpoint

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert resume_checkpoint(None, tmp_path, tmp_path.parent) is None  # a first start: a new run
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_checkpoint(None, tmp_path, tmp_path.parent) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resume_checkpoint(None, tmp_path / "empty", tmp_path.parent) is None  # requeued before any checkpoint
