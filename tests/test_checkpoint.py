"""Checkpoints are written atomically (a crash mid-write never corrupts the previous file); run folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from dlkit.checkpoint import TEMP_SUFFIX, AtomicCheckpointIO, atomic_torch_save, remove_stale_temp_files
from dlkit.config import ConfigError
from dlkit.resume import RunFolderInUseError, RunFolderLock, config_changes, latest_run_folder, run_folder_of


def test_a_crash_during_save_leaves_the_old_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 1, "w": torch.ones(3)}, path)

    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"partial bytes of a checkpoint")  # some bytes reach the disk
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)

    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp files left


def test_lightning_plugin_writes_and_reads(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.arange(4)}}, tmp_path / "sub" / "x.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "sub" / "x.ckpt")["state_dict"]["w"], torch.arange(4))


def test_atomic_save_syncs_the_file_and_its_folder(tmp_path: Path, monkeypatch) -> None:
    synced = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "last.ckpt")
    assert synced == ["file", "dir"]


def test_stale_temp_files_of_a_killed_write_are_removed(tmp_path: Path) -> None:
    atomic_torch_save({"epoch": 1}, tmp_path / "last.ckpt")
    (tmp_path / f".last.ckpt.abc123{TEMP_SUFFIX}").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("not ours")  # not a hidden atomic-write temp file
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [f".last.ckpt.abc123{TEMP_SUFFIX}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "notes.tmp"]
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_plugin_writes_in_order_beside_training_and_waits_at_teardown(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    for step in range(3):
        io.save_checkpoint({"step": step, "w": torch.full((2,), float(step))}, tmp_path / "last.ckpt")
    io.save_checkpoint({"step": 0}, tmp_path / "old.ckpt")
    io.remove_checkpoint(tmp_path / "old.ckpt")  # queued after its own write
    io.teardown()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["step"] == 2


def test_plugin_survives_pickling_as_ddp_spawn_does(tmp_path: Path) -> None:
    import pickle

    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.ones(2)}, tmp_path / "a.ckpt")  # its writer thread is running now
    copy = pickle.loads(pickle.dumps(io))
    assert type(copy) is AtomicCheckpointIO
    copy.save_checkpoint({"w": torch.zeros(2)}, tmp_path / "b.ckpt")
    copy.teardown()
    io.teardown()
    assert torch.equal(io.load_checkpoint(tmp_path / "b.ckpt")["w"], torch.zeros(2))


def test_plugin_raises_a_failed_write(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    (tmp_path / "file").write_text("x")
    io.save_checkpoint({"step": 1}, tmp_path / "file" / "last.ckpt")  # its folder is a file
    with pytest.raises(OSError):
        io.teardown()


def test_a_run_folder_has_one_owner(tmp_path: Path) -> None:
    with RunFolderLock(tmp_path / "run"):
        with pytest.raises(RunFolderInUseError, match=rf"in use by another dlkit run \(pid={os.getpid()} "):
            RunFolderLock(tmp_path / "run").acquire()
        with pytest.raises(RunFolderInUseError):
            RunFolderLock(tmp_path / "run").check()
    RunFolderLock(tmp_path / "run").check()  # released
    with RunFolderLock(tmp_path / "run"):  # and taken again
        pass


def test_ckpt_path_names_a_run_folder(tmp_path: Path) -> None:
    runs = tmp_path / "logs" / "task" / "runs"
    for name in ("2026-01-01_10-00-00_000001", "2026-01-01_10-00-00_000002"):
        (runs / name / ".hydra").mkdir(parents=True)
    (runs / "not-a-run").mkdir()
    newest = runs / "2026-01-01_10-00-00_000002"
    assert latest_run_folder(runs) == newest
    assert latest_run_folder(runs, exclude=newest) == runs / "2026-01-01_10-00-00_000001"
    (newest / "checkpoints").mkdir()
    atomic_torch_save({}, newest / "checkpoints" / "last.ckpt")
    assert run_folder_of("last", runs) == newest
    assert run_folder_of(newest / "checkpoints" / "last.ckpt", runs) == newest
    assert run_folder_of(newest / "checkpoints", runs) == newest
    atomic_torch_save({}, tmp_path / "elsewhere.ckpt")
    assert run_folder_of(tmp_path / "elsewhere.ckpt", runs) is None  # a new run starts from it
    with pytest.raises(ConfigError, match="no run to resume"):
        latest_run_folder(tmp_path / "empty")


def test_config_changes_outside_the_resumable_keys() -> None:
    stored = {"optimizer": {"lr": 0.1}, "trainer": {"max_epochs": 5, "default_root_dir": "/a/run"},
              "paths": {"output_dir": "/a/run"}, "callbacks": {"ckpt": {"dirpath": "/a/run/checkpoints"}},
              "logger": {"tb": {"save_dir": "/a/run"}}, "seed": 1}
    moved = {"optimizer": {"lr": 0.1}, "trainer": {"max_epochs": 9, "default_root_dir": "/b/run"},
             "paths": {"output_dir": "/b/run"}, "callbacks": {"ckpt": {"dirpath": "/b/run/checkpoints"}},
             "logger": {}, "seed": 1}
    assert config_changes(stored, moved) == []  # longer, elsewhere, other logger: allowed
    changed = {**moved, "optimizer": {"lr": 0.01}, "data": {"batch_size": 8}}
    assert config_changes(stored, changed) == [("data.batch_size", "<absent>", 8), ("optimizer.lr", 0.1, 0.01)]
