"""Checkpoints are written atomically: a crash mid-write never corrupts the previous file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlkit.checkpoint import AtomicCheckpointIO, atomic_torch_save


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
