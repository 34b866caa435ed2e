"""A run killed with SIGKILL anywhere resumes bit for bit; runs never share a folder.

Every case trains the default experiment (LeNet-5 on digits, random shifts, dropout,
cosine schedule) for 3 epochs of 10 steps with a step checkpoint every 4 steps, on CPU,
one thread, ``trainer.deterministic=true``. A test-only callback (:class:`KillAt`,
enabled in every run so their configs are equal, armed by ``DLKIT_TEST_KILL``) sends
SIGKILL to its own process at a chosen point; ``dlkit-train ckpt_path=last`` then
continues the run, and its final weights and ``metrics.json`` must equal those of an
uninterrupted run. Subprocesses run two at a time (two cores): the two reference runs
are started together with the same ``task_name``, so they also show that concurrent
runs get their own folders and that one seed gives one result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from dlkit.checkpoint import CONFIG_KEY
from dlkit.config import ConfigError
from dlkit.models import create_model
from dlkit.resume import RunFolderInUseError, RunFolderLock, check_resume
from dlkit.tasks.epoch_means import EpochMeanLogging
from dlkit.train import resume_overrides, train
from tests.conftest import FAST

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and /proc/self/fd")

REPO = Path(__file__).resolve().parents[1]
KILL_ENV = "DLKIT_TEST_KILL"
ARGS = [
    "task_name=resume",
    "trainer.max_epochs=3",
    "+trainer.limit_train_batches=10",
    "trainer.deterministic=true",
    "checkpoint.every_n_steps=4",
    *FAST,
    "+trainer.enable_progress_bar=false",
    "+callbacks.kill._target_=tests.test_resume.KillAt",
]
# Where each case is killed. Step checkpoints come at steps 4, 8, 12, 16, 24, 28 (not at
# an epoch's last batch, 10/20/30), epoch checkpoints after steps 10, 20 and 30.
CASES = {
    "before_first_checkpoint": "step:3",  # nothing saved: the run starts again in its folder
    "mid_epoch": "step:14",  # resumes from step 12, inside epoch 1
    "during_checkpoint_write": "write:3",  # the write after epoch 0 is cut: resumes from step 8
    "between_epochs": "epoch:2",  # resumes from the end of epoch 1
    "mid_final_epoch": "step:27",  # resumes from step 24: the last epoch's means must continue
    "during_test": "test",  # training is over: only the test runs again
}
# The task keeps the means of the epoch so far in its checkpoints (EpochMeanLogging.epoch_state).
TASK_SAVES_EPOCH = hasattr(EpochMeanLogging, "epoch_state")


class KillAt(L.Callback):
    """Test-only: SIGKILL this process where ``DLKIT_TEST_KILL`` says; inert without it.

    ``step:N`` after training step N, ``epoch:E`` when epoch E starts, ``test`` at the
    first test batch, ``write:N`` half way through writing the N-th ``last.ckpt`` (the
    temporary file is left behind).
    """

    def __init__(self) -> None:
        kind, _, arg = os.environ.get(KILL_ENV, "").partition(":")
        self.kind, self.arg = kind, int(arg or 0)
        if kind == "write":
            self._cut_write(self.arg)

    @staticmethod
    def _die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def _cut_write(self, nth: int) -> None:
        # The N-th sync of a temporary last.ckpt: cut the file to half its bytes, and die.
        real_fsync, count = os.fsync, [0]

        def fsync(fd: int) -> None:
            if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".last.ckpt."):
                count[0] += 1
                if count[0] == nth:
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                    real_fsync(fd)
                    self._die()
            real_fsync(fd)

        os.fsync = fsync

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.kind == "step" and trainer.global_step == self.arg:
            self._die()

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.kind == "epoch" and trainer.current_epoch == self.arg:
            self._die()

    def on_test_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.kind == "test":
            self._die()


# ----------------------------------------------------------------------------- running
def _start(log_dir: Path, *extra: str, kill: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", KILL_ENV: kill}
    cmd = [sys.executable, "-m", "dlkit.train", *ARGS, f"paths.log_dir={log_dir}", *extra]
    return subprocess.Popen(cmd, cwd=log_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _run_two_at_a_time(jobs: list[tuple[Path, tuple[str, ...], str]]) -> list[tuple[int, str]]:
    """Run ``(log_dir, extra overrides, kill spec)`` jobs, two processes at a time: ``(returncode, output)``."""
    results: list[tuple[int, str]] = []
    for i in range(0, len(jobs), 2):
        procs = [_start(log_dir, *extra, kill=kill) for log_dir, extra, kill in jobs[i : i + 2]]
        for p in procs:
            out, _ = p.communicate(timeout=600)
            results.append((p.returncode, out))
    return results


def _runs(log_dir: Path) -> list[Path]:
    runs = log_dir / "resume" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


def _outcome(run: Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("wall_time_s")
    weights = {
        f.name: torch.load(f, map_location="cpu", weights_only=True)["state_dict"]
        for f in sorted((run / "checkpoints").glob("*.ckpt"))
    }
    return metrics, weights


def _assert_same(a: Path, b: Path) -> None:
    (metrics_a, weights_a), (metrics_b, weights_b) = _outcome(a), _outcome(b)
    assert metrics_a == metrics_b, {k: (metrics_a.get(k), metrics_b.get(k)) for k in metrics_a.keys() | metrics_b.keys()
                                    if metrics_a.get(k) != metrics_b.get(k)}
    assert weights_a.keys() == weights_b.keys()
    for name, state in weights_a.items():
        different = [k for k, t in state.items() if not torch.equal(t, weights_b[name][k])]
        assert not different, f"{name}: {different} differ"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two uninterrupted runs started at the same moment with the same task_name and seed."""
    log_dir = tmp_path_factory.mktemp("reference") / "logs"
    log_dir.mkdir()
    results = _run_two_at_a_time([(log_dir, (), ""), (log_dir, (), "")])
    for code, out in results:
        assert code == 0, out[-3000:]
    return _runs(log_dir)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each case killed, what it left, and its resumed run."""
    root = tmp_path_factory.mktemp("killed")
    dirs = {case: root / case / "logs" for case in CASES}
    for d in dirs.values():
        d.mkdir(parents=True)
    killed = _run_two_at_a_time([(dirs[c], (), spec) for c, spec in CASES.items()])
    left = {}
    for case, d in dirs.items():
        ckpts = d / "resume" / "runs"
        left[case] = sorted(p.name for p in ckpts.glob("*/checkpoints/*")) if ckpts.is_dir() else []
        last = list(ckpts.glob("*/checkpoints/last.ckpt"))
        left[case + ":step"] = torch.load(last[0], weights_only=True)["global_step"] if last else None
    resumed = _run_two_at_a_time([(dirs[c], ("ckpt_path=last",), "") for c in CASES])
    return {
        case: {"killed": killed[i], "left": left[case], "last_step": left[case + ":step"], "resumed": resumed[i],
               "runs": _runs(dirs[case])}
        for i, case in enumerate(CASES)
    }


# ----------------------------------------------------------------------------- tests
def test_two_runs_at_once_get_two_folders_and_the_same_seed_gives_the_same_run(reference: list[Path]) -> None:
    assert len(reference) == 2, reference
    for run in reference:
        assert (run / "metrics.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    _assert_same(*reference)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            marks=pytest.mark.xfail(
                c == "mid_final_epoch" and not TASK_SAVES_EPOCH, strict=True,
                reason="weights are bit-equal, but the task does not yet checkpoint its epoch means (train/*)",
            ),
        )
        for c in CASES
    ],
)
def test_a_killed_run_resumes_bit_for_bit(case: str, killed_and_resumed: dict[str, Any], reference: list[Path]) -> None:
    result = killed_and_resumed[case]
    code, out = result["killed"]
    assert code == -signal.SIGKILL, out[-3000:]
    code, out = result["resumed"]
    assert code == 0, out[-3000:]
    assert len(result["runs"]) == 1, result["runs"]  # the same run folder, continued
    run = result["runs"][0]
    assert not list((run / "checkpoints").glob(".*.tmp"))
    _assert_same(reference[0], run)


def test_a_write_cut_short_leaves_the_previous_checkpoint(killed_and_resumed: dict[str, Any]) -> None:
    result = killed_and_resumed["during_checkpoint_write"]
    assert [n for n in result["left"] if n.startswith(".last.ckpt.") and n.endswith(".tmp")], result["left"]
    assert result["last_step"] == 8  # the last complete file, not the half-written one
    assert "a checkpoint write cut short" in result["resumed"][1]  # the temporary file was removed


def test_a_run_killed_before_its_first_checkpoint_starts_again_in_its_folder(killed_and_resumed: dict) -> None:
    result = killed_and_resumed["before_first_checkpoint"]
    assert result["left"] == [] and "starts again from its first step" in result["resumed"][1]


def test_the_last_checkpoint_is_the_end_of_training(reference: list[Path]) -> None:
    last = torch.load(reference[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (3, 30)


# Gradual unfreezing (LayerFreezing): epoch 0 trains the head, epoch 1 fc2 too, epoch 2 all.
PLAN = ("callbacks=[default,freezing]", "callbacks.freezing.unfreeze_at={1: [fc2], 2: all}")


@pytest.fixture(scope="module")
def unfreezing_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run with the plan, and one killed inside epoch 1 (step 14) and resumed."""
    whole, cut = (tmp_path_factory.mktemp(name) / "logs" for name in ("plan_whole", "plan_cut"))
    whole.mkdir()
    cut.mkdir()
    first = _run_two_at_a_time([(whole, PLAN, ""), (cut, PLAN, "step:14")])
    resumed = _run_two_at_a_time([(cut, (*PLAN, "ckpt_path=last"), "")])
    return {"whole": first[0], "killed": first[1], "resumed": resumed[0], "runs": (_runs(whole), _runs(cut))}


def test_a_run_killed_mid_plan_resumes_the_plan_bit_for_bit(unfreezing_runs: dict[str, Any]) -> None:
    for key, expected in (("whole", 0), ("killed", -signal.SIGKILL), ("resumed", 0)):
        code, out = unfreezing_runs[key]
        assert code == expected, out[-3000:]
    (whole,), (cut,) = unfreezing_runs["runs"]
    _assert_same(whole, cut)
    stored = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert [v for k, v in stored.items() if k.startswith("LayerFreezing")] == [{"trainable": [0, 1, 2, 3, 4]}]
    metrics = json.loads((cut / "metrics.json").read_text())
    assert metrics["train/trainable_params"] == sum(p.numel() for p in create_model("lenet5").parameters())


# ----------------------------------------------------------------------------- in-process
def test_a_changed_setting_is_refused_before_training(reference: list[Path], compose_train, tmp_path: Path) -> None:
    cfg = compose_train(*ARGS, f"ckpt_path={reference[0]}", "optimizer.lr=0.01", "data.batch_size=32")
    with pytest.raises(ConfigError, match=r"data\.batch_size: 64 -> 32; optimizer\.lr: 0\.003 -> 0\.01") as err:
        train(cfg)
    assert "trainer.max_epochs" in str(err.value)  # names what may change
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_extending_a_finished_cosine_run_warns(reference: list[Path]) -> None:
    path = reference[0] / "checkpoints" / "last.ckpt"
    stored = torch.load(path, weights_only=True)[CONFIG_KEY]
    longer = {**stored, "trainer": {**stored["trainer"], "max_epochs": 5}, "ckpt_path": "last"}
    with pytest.warns(UserWarning, match="schedule had reached its end"):
        check_resume(path, longer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_resume(path, {**stored, "ckpt_path": "last"})  # same length: nothing to say


def test_ckpt_path_last_continues_the_newest_run_in_its_folder(reference: list[Path]) -> None:
    args = [*ARGS, f"paths.log_dir={reference[0].parents[2]}", "ckpt_path=last"]
    planned = resume_overrides(args)
    assert planned[-1] == f"hydra.run.dir='{reference[-1]}'" and f"ckpt_path='{reference[-1]}'" in planned
    with RunFolderLock(reference[-1]), pytest.raises(RunFolderInUseError, match=f"pid={os.getpid()}"):
        resume_overrides(args)
    assert resume_overrides([*ARGS, "ckpt_path=last", "train=false"])[-1] == "train=false"  # testing only


def test_last_ckpt_does_not_wait_for_the_monitored_metric(compose_train, tmp_path: Path) -> None:
    # The monitor only ever "improves" at epoch 0 (highest validation loss): the best file
    # stays there, and last.ckpt still follows every epoch.
    cfg = compose_train("trainer.max_epochs=2", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
                        "task.monitor=val/loss", "task.monitor_mode=max", "test=false", "~logger", *FAST)
    train(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 4)


@pytest.fixture(autouse=True)
def _no_kill_in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(KILL_ENV, raising=False)
    yield
