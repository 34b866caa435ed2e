"""The tutorials run as written (with fewer epochs)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs(path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DLKIT_TUTORIAL_EPOCHS", "2")
    GlobalHydra.instance().clear()
    runpy.run_path(str(path), run_name="__main__")
    GlobalHydra.instance().clear()
    assert capsys.readouterr().out.strip()
