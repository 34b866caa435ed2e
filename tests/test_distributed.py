"""trainer=ddp_cpu: two gloo processes train one run, in one folder, close to one process;
in a -m sweep, every job once, with both ranks (dlkit.distributed)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="multi-process runs are tested on Linux"),
    # dlkit refuses more CPU processes than cores (dlkit.validation.check_devices).
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
                       reason="two training processes need two cores"),
]

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


def test_a_ddp_sweep_runs_each_job_once_with_both_ranks(tmp_path: Path) -> None:
    # Lightning #11300: a ddp child re-ran the whole sweep, and the second job found the
    # first job's LOCAL_RANK and process group and hung. dlkit.distributed fixes both.
    done = _run(tmp_path, "-m", "trainer=ddp_cpu", "trainer.devices=2", "optimizer.lr=0.001,0.002",
                "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
                "test=false", *FAST)
    logs = tmp_path / "logs"
    assert (done.stdout + done.stderr).count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    (sweep,) = (logs / "lenet_digits" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"], jobs
    for job in jobs:
        (metrics,) = _metrics(sweep / job)
        assert metrics["status"] == "ok", metrics
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1"] and {r["status"] for r in rows} == {"ok"}, rows
    # No second sweep, no run folder of a child, no .hydra/ or metrics.json outside the two jobs.
    found = [p.relative_to(logs) for p in logs.rglob("*") if p.name in ("multiruns", "runs", ".hydra", "metrics.json")]
    expected = [Path("lenet_digits/multiruns"), *(Path(f"lenet_digits/multiruns/{sweep.name}/{j}/{n}")
                                                   for j in jobs for n in (".hydra", "metrics.json"))]
    assert sorted(found) == sorted(expected), found


def test_a_ddp_child_gets_its_jobs_command(monkeypatch) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from omegaconf import read_write

    from dlkit.config import compose_config
    from dlkit.distributed import job_command

    hydra_state = Singleton.get_state()
    try:
        cfg = compose_config("train", ["hparams_search=lr_grid", "optimizer.lr=0.001"], output_dir="/tmp/sweep/it's/3")
        with read_write(cfg.hydra):
            cfg.hydra.job.num, cfg.hydra.job.id = 3, "3"
            cfg.hydra.overrides.hydra = ["hydra.mode=MULTIRUN", "hydra.sweep.dir=/tmp/sweep", "hydra/launcher=basic",
                                         "hydra.job.chdir=false"]
        HydraConfig.instance().set_config(cfg)
        monkeypatch.setattr(sys, "argv", ["dlkit-train", "-m", "-cd", "/my/conf", "optimizer.lr=0.001,0.002"])
        command, cwd = job_command(1)
    finally:
        Singleton.set_state(hydra_state)
    assert command[:3] == [sys.executable, "-m", "dlkit.train"]
    # The config flags, the job's overrides, its non-sweep Hydra overrides; then its folder,
    # RUN mode (lr_grid says MULTIRUN), its number and no .hydra/ of its own.
    assert command[3:] == ["-cd", "/my/conf", "hparams_search=lr_grid", "optimizer.lr=0.001", "hydra.job.chdir=false",
                           "hydra.run.dir='/tmp/sweep/it\\'s/3'", "hydra.mode=RUN",
                           "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null",
                           "hydra.job.num=3", "hydra.job.id='3'"]
    assert cwd == cfg.hydra.runtime.cwd


def test_a_sweep_job_leaves_no_rank_state_for_the_next(monkeypatch) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.types import RunMode
    from lightning.pytorch.strategies.launchers import subprocess_script
    from omegaconf import read_write

    from dlkit import distributed
    from dlkit.config import compose_config

    for key in distributed.LIGHTNING_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    lightning_cmd = subprocess_script._hydra_subprocess_cmd
    hydra_state = Singleton.get_state()
    try:
        cfg = compose_config("train", ["trainer=ddp_cpu"])
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.MULTIRUN
        HydraConfig.instance().set_config(cfg)
        with distributed.ddp_multirun_job(cfg):
            assert subprocess_script._hydra_subprocess_cmd is not lightning_cmd
            os.environ.update(LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="12345")
        assert subprocess_script._hydra_subprocess_cmd is lightning_cmd
        assert {k: os.environ.get(k) for k in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")} == {
            "LOCAL_RANK": None, "WORLD_SIZE": None, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": None}
        # A Lightning without the patched names: the sweep's ddp jobs run as ddp_spawn instead.
        monkeypatch.setattr(distributed, "_patchable", lambda *_: False)
        with distributed.ddp_multirun_job(cfg):
            assert cfg.trainer.strategy == "ddp_spawn"
    finally:
        Singleton.set_state(hydra_state)

