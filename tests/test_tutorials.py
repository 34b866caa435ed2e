"""The tutorials run as written: the course chapters in their small budget, the guides with fewer epochs.

A chapter (``tutorials/NN_slug.py``) is a percent-format script: it reads
``DLKIT_TUTORIAL_BUDGET`` (``small`` here, ``full`` by default, where the numbers its text
quotes come from) and saves its figures into ``DLKIT_TUTORIAL_FIGURES`` (default
``tutorials/figures``; a temporary folder here, so a test never overwrites the committed
full-budget figures). Each chapter must write at least one figure named after it, print
numbers that are all finite, and convert to a notebook with jupytext.
"""

from __future__ import annotations

import math
import re
import runpy
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import needs_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_thread")  # restores the thread count a chapter may set

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
CHAPTERS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
GUIDES = sorted(TUTORIALS.glob("guide_*.py"))

# A number as a chapter prints it: 0.95, 97.3 %, 1e-3, -2, nan, inf.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|nan|inf)(?![\w.])", re.IGNORECASE)


def printed_numbers(text: str) -> list[float]:
    """Every number in ``text``, NaN and infinity included.

    Example:
        >>> printed_numbers("acc: 0.97, loss nan; lr 1e-3 at epoch 4")
        [0.97, nan, 0.001, 4.0]
    """
    return [float(m) for m in _NUMBER.findall(text)]


def _run(path: Path) -> None:
    GlobalHydra.instance().clear()
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()


def _runnable(path: Path) -> object:
    # Chapters on Fashion-MNIST need the data set installed (CI installs it).
    marks = [needs_fashion_mnist] if "fashion" in path.read_text().lower() else []
    return pytest.param(path, marks=marks, id=path.stem)


@pytest.mark.parametrize("path", [_runnable(p) for p in CHAPTERS])
def test_chapter_runs_in_its_small_budget(path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DLKIT_TUTORIAL_BUDGET", "small")
    monkeypatch.setenv("DLKIT_TUTORIAL_FIGURES", str(tmp_path / "figures"))
    monkeypatch.chdir(tmp_path)  # runs and logs a chapter writes land here
    _run(path)
    out = capsys.readouterr().out
    numbers = printed_numbers(out)
    assert numbers, f"{path.name} printed no numbers"
    assert all(math.isfinite(v) for v in numbers), f"{path.name} printed a NaN or infinity:\n{out}"
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    prefix = path.stem.split("_")[0]
    assert figures and all(f.startswith(f"{prefix}_") for f in figures), figures


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_pairs_with_a_notebook(path: Path) -> None:
    jupytext = pytest.importorskip("jupytext", reason="jupytext is in the dev extra")
    notebook = jupytext.read(path, fmt="py:percent")
    kinds = [cell.cell_type for cell in notebook.cells]
    assert "markdown" in kinds and kinds.count("code") >= 2, kinds
    assert jupytext.writes(notebook, fmt="ipynb")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_figures_are_committed_and_linked(path: Path) -> None:
    # The full-budget figures are part of the course: the README shows one per chapter.
    prefix = path.stem.split("_")[0]
    committed = sorted((TUTORIALS / "figures").glob(f"{prefix}_*.png"))
    assert committed, f"no tutorials/figures/{prefix}_*.png for {path.name}"
    readme = (TUTORIALS.parent / "README.md").read_text()
    assert f"tutorials/{path.name}" in readme and any(f"tutorials/figures/{p.name}" in readme for p in committed)


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: p.stem)
def test_guide_runs(path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DLKIT_TUTORIAL_EPOCHS", "2")
    _run(path)
    assert capsys.readouterr().out.strip()


def test_printed_numbers(docstring_examples) -> None:
    docstring_examples(printed_numbers)
