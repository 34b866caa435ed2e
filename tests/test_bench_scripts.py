"""Every ``scripts/bench_*.py`` runs end to end with a tiny budget, so none of them rots.

Each script's ``main(argv)`` runs in this process (a fresh interpreter would pay ~5 s for
torch and Lightning before the first step), with the arguments its own docstring gives
for a smoke run: a round, a batch or two, an epoch. ``bench_optuna`` and ``bench_scale
--what ddp`` start training processes themselves: they cost the most (~10 s and ~15 s). Its numbers are meaningless at
that size; what is checked is that it gets through every part and prints what it is
for: the machine line (:func:`_bench_common.cpu_description`) and its table, with a row
per contender whose figures are finite numbers (and, where the script writes one, its
``bench.json``).

One script has its smoke test elsewhere: ``bench_models.py``
(``tests/test_bench_models.py``, which also checks every twin). A new ``bench_*.py`` must be
added to :data:`SMOKES` (``test_every_bench_script_has_a_smoke_run`` fails until it is).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import SCRIPTS, load_script, needs_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
# Smoke-tested elsewhere: bench_models.py by tests/test_bench_models.py.
ELSEWHERE = {"bench_models.py"}

# Hydra overrides that shrink any training run to one epoch of two batches, one batch each
# of validation and test.
TINY_RUN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1"]

# As tests/test_distributed.py: dlkit refuses more CPU processes than cores.
needs_two_cores = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="multi-process runs are tested on Linux"),
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
                       reason="two training processes need two cores"),
]

pytestmark = pytest.mark.usefixtures("one_thread")  # restores torch's thread count too


# ----------------------------------------------------------------------------- helpers




def table(out: str, header: str) -> dict[str, list[str]]:
    """The markdown table whose header line starts with ``header``: first cell -> the other cells.

    Example:
        >>> table("x\\n| a | b |\\n|---|---|\\n| r | 1.5 |\\nlog\\n| s | 2 |\\n\\n| c | d |\\n|---|---|\\n", "| a")
        {'r': ['1.5'], 's': ['2']}
    """
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, f"no table starting {header!r} in:\n{out}"
    width = len(_cells(lines[start]))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2:]:  # past the header and the |---| line
        if not line.startswith("|"):
            continue  # a table printed row by row, as runs finish, has their log lines in between
        if set(line.strip()) <= set("|-: "):
            rows.popitem()  # the next table's |---| line: the row before it was that table's header
            break
        cells = _cells(line)
        if len(cells) != width:
            break
        rows[cells[0]] = cells[1:]
    assert rows, f"table {header!r} has no rows:\n{out}"
    return rows


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def number(cell: str) -> float:
    """The first number in a table cell (``"2.170 (2.1-2.2)"`` -> 2.17, ``"+38.8%"`` -> 38.8), finite.

    Example:
        >>> number("| 1,234.5 ms")
        1234.5
    """
    found = re.search(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?", cell)
    assert found, f"no number in {cell!r}"
    value = float(found.group().replace(",", ""))
    assert math.isfinite(value), cell
    return value


def positive(*cells: str) -> None:
    """Every cell holds a finite number above zero (a time, a rate)."""
    for cell in cells:
        assert number(cell) > 0, cells


def fraction(value: Any) -> None:
    """An accuracy-like figure: a finite number in [0, 1]."""
    assert isinstance(value, (int, float)) and 0.0 <= value <= 1.0, value


# ----------------------------------------------------------------------------- the smoke runs


@dataclass(frozen=True)
class Smoke:
    """One script's smoke run.

    Args:
        script: File name in ``scripts/``, without ``.py``.
        argv: ``argv(tmp_path)``: the tiny-budget command line, writing under ``tmp_path``.
        check: ``check(stdout, tmp_path, module, returned)``: asserts on what the run printed
            and wrote (``returned`` is what ``main`` returned).
        patches: ``patches()`` -> a context manager held around the run (default: none).
    """

    script: str
    argv: Callable[[Path], list[str]]
    check: Callable[[str, Path, ModuleType, Any], None]
    patches: Callable[[], Any] | None = None


def _check_activations(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    step = table(out, "| model | dlkit (ms)")
    assert list(step) == ["lenet5"]
    positive(*step["lenet5"])
    activations = table(out, "| activation |")
    assert list(activations) == ["ReLU", "ReLU6"]
    for cells in activations.values():
        positive(*cells)


def _check_checkpoint(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    rows = table(out, "| checkpointing")
    assert list(rows) == list(module.contenders(1))
    for epoch, _spread, _vs_off, saving, _share in rows.values():
        positive(epoch)
        assert number(saving) >= 0
    # Off saves nothing; the default (atomic, every epoch) saves at every epoch's end.
    assert number(rows["off"][3]) == 0 and number(rows["epoch, atomic"][3]) > 0
    assert "(2 steps + validation)" in out  # --quick's two training batches
    # timed_saves() puts Lightning's own method back.
    assert L.Trainer.save_checkpoint.__name__ == "save_checkpoint"


def _check_cnn(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    record = json.loads((tmp / "run" / "bench.json").read_text())
    assert record["experiment"] == "lenet_digits" and record["epochs"] == 1
    fraction(record["test_acc"])
    assert math.isfinite(record["train_images_per_s"]) and record["train_images_per_s"] > 0
    row = table(out, "| experiment | epochs")["lenet_digits"]
    assert row[0] == "1" and row[3].endswith("%")
    positive(row[5])  # train img/s


def _check_finetune_digits(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    rows = table(out, "| seed |")
    tuned, scratch, _diff = rows["1"]
    assert 0 <= number(tuned) <= 100 and 0 <= number(scratch) <= 100
    assert "mean ± std" in rows
    # --quick shortens the pretraining too, and it ran here, into --log-dir.
    assert re.search(r"Pretraining \(digits 0-4\): [\d.]+ s once, 1 epochs", out), out
    assert (tmp / "logs" / "pretrained" / "lenet5_digits_0to4.ckpt").is_file()


def _check_finetune_efficientnet(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    record = json.loads((tmp / "run" / "bench.json").read_text())
    assert [p["phase"] for p in record["phases"]] == ["head only", "after unfreezing"]
    # The probe tests one batch (trainer.limit_test_batches=1), not the 10,000 images.
    assert all(p["test_images"] == 16 for p in record["phases"])
    assert record["phases"][0]["trainable_params"] < record["phases"][1]["trainable_params"]
    for p in record["phases"]:
        fraction(p["test_acc"])
    fraction(record["test_acc"])
    rows = table(out, "| phase |")
    assert list(rows) == ["head only", "after unfreezing"]
    assert "test: 16 of 10,000" in out


def _check_layers(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    rows = table(out, "| case |")
    assert list(rows) == [c.name for c in module.CASES]
    floors = {c.name for c in module.CASES if c.floor}
    assert floors == {"lstm-1layer-gemms-only"}
    for name, (device, dlkit_ms, torch_ms, ratio, target, met) in rows.items():
        assert device == "cpu" and met in (("floor",) if name in floors else ("yes", "NO"))
        assert (target == "floor") == (name in floors)
        positive(dlkit_ms, torch_ms, ratio)
    assert returned in (0, 1)  # 1: a target missed, which one repeat cannot tell


def _check_optuna(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    rows = table(out, "| search |")
    assert list(rows) == ["pruning (median)"]
    best_val, test, wall, epochs, pruned = rows["pruning (median)"]
    fraction(number(best_val))
    fraction(number(test))
    positive(wall)
    assert number(epochs) == 1 and number(pruned) == 0


def _check_scale_ddp(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    rows = table(out, "| run |")
    assert list(rows) == ["ddp_cpu, 2 processes x 1 thread"]
    step, from_step, over_epoch, wall, val_acc = rows["ddp_cpu, 2 processes x 1 thread"]
    positive(step, from_step, over_epoch, wall)
    fraction(number(val_acc))


def _check_scale_compile(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    row = table(out, "| experiment | first step")["lenet_digits"]
    first, step, speedup, _payback, wall = row
    for cell in (first, step, wall):
        eager, compiled = cell.split(" / ")
        positive(eager, compiled)
    positive(speedup)


def _check_seq2seq(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    (record,) = returned
    assert record["experiment"] == "seq2seq_rnn_dates" and record["epochs"] == 1
    for key in ("exact_match", "token_acc", "bleu"):
        fraction(record[key])
    assert len(record["val_curve"]) == 1
    assert json.loads((tmp / "runs" / "bench.json").read_text()) == returned
    row = table(out, "| experiment | model")["seq2seq_rnn_dates"]
    assert row[1].endswith("%") and row[5] == "1"
    # The default list runs every experiment it names.
    assert all((REPO / "conf" / "experiment" / f"{e}.yaml").is_file() for e in module.EXPERIMENTS)


def _check_overhead(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    rows = table(out, "| loop | median epoch")
    assert list(rows) == [module.LABELS[name] for name in module.CONTENDERS]
    for label, (epoch, step, ratio) in rows.items():
        positive(epoch, step)
        if label != module.LABELS["dlkit"]:
            positive(ratio)  # dlkit / this contender, median (min-max) of rounds
    assert "128 training images 32x32, 2 steps/epoch; 1 rounds x 1 timed epochs" in out


def _check_startup(out: str, tmp: Path, module: ModuleType, returned: Any) -> None:
    rows = table(out, "| command | median")
    assert list(rows) == ["`import dlkit`", "`dlkit-train --cfg job`"]
    for median, spread, _ratio in rows.values():
        positive(median)
        assert "-" in spread


@contextlib.contextmanager
def _no_dynamo() -> Iterator[None]:
    # torch.compile's inductor takes ~20 s to compile LeNet-5 on two cores, more than the
    # whole smoke budget. With dynamo disabled, compile=true still goes through dlkit's
    # compile_network and every line of the script, and the compiled network runs eagerly;
    # tests/test_speed.py is where compiling itself is tested.
    import torch._dynamo

    try:
        with torch._dynamo.config.patch(disable=True):
            yield
    finally:
        # A compiled module called while dynamo is disabled marks its forward's code "run
        # eagerly" for the rest of the process; without the reset every later torch.compile
        # of the same class silently stays eager.
        torch._dynamo.reset()


SMOKES = [
    pytest.param(Smoke("bench_activations", lambda tmp: ["--rounds", "1", "--warmup", "0", "--steps", "1",
                                                         "--batch-size", "8", "--threads", "1"],
                       _check_activations), id="bench_activations"),
    pytest.param(Smoke("bench_checkpoint", lambda tmp: ["--quick", "--threads", "1", "--root", str(tmp / "runs")],
                       _check_checkpoint), id="bench_checkpoint"),
    # lenet_digits rather than the default resnet18_fashion: the digits ship with scikit-learn.
    pytest.param(Smoke("bench_cnn", lambda tmp: ["--experiment", "lenet_digits", "--epochs", "1", "--threads", "1",
                                                 "--warmup", "0", "--output-dir", str(tmp / "run"), *TINY_RUN[1:]],
                       _check_cnn), id="bench_cnn"),
    pytest.param(Smoke("bench_finetune_digits", lambda tmp: ["--quick", "--log-dir", str(tmp / "logs")],
                       _check_finetune_digits), id="bench_finetune_digits"),
    # As tests/test_finetune_efficientnet.py: 32 px, 64 training images in batches of 16, the
    # experiment's four epochs (head alone, then stage6 and stage7 too) of two batches.
    pytest.param(Smoke("bench_finetune_efficientnet",
                       lambda tmp: ["--threads", "1", "--output-dir", str(tmp / "run"), "data.resize=32",
                                    "data.num_train=64", "data.val_size=20", "data.batch_size=16", *TINY_RUN[1:]],
                       _check_finetune_efficientnet), id="bench_finetune_efficientnet", marks=needs_fashion_mnist),
    pytest.param(Smoke("bench_layers", lambda tmp: ["--repeats", "1", "--warmup", "0", "--threads", "1",
                                                    "--device", "cpu"],
                       _check_layers), id="bench_layers"),
    # Every search is a fresh dlkit-train -m process (~10 s): one contender, one trial of one epoch.
    pytest.param(Smoke("bench_optuna", lambda tmp: ["--trials", "1", "--epochs", "1", "--only", "pruning"],
                       _check_optuna), id="bench_optuna"),
    # DDP alone (the single-process run is the same command without trainer=ddp_cpu): two
    # fresh processes, one after the other, 13-20 s (most of it importing torch and Lightning
    # twice); lenet5_fashion is the experiment the table is about.
    pytest.param(Smoke("bench_scale", lambda tmp: ["--what", "ddp", "--rounds", "1", "--devices", "2", "--batch", "8",
                                                   "--batches", "6", "--epochs", "1"],
                       _check_scale_ddp), id="bench_scale-ddp", marks=[needs_fashion_mnist, *needs_two_cores]),
    pytest.param(Smoke("bench_scale", lambda tmp: ["--what", "compile", "--steps", "6", "--experiments", "lenet_digits"],
                       _check_scale_compile, patches=_no_dynamo), id="bench_scale-compile"),
    # All four loops (dlkit, plain, plain with fused Adam, minimal Lightning) for 2 epochs of 2 batches.
    pytest.param(Smoke("bench_overhead", lambda tmp: ["--rounds", "1", "--epochs", "2", "--warmup", "1",
                                                      "--train-size", "128", "--threads", "1"],
                       _check_overhead), id="bench_overhead"),
    # Fresh processes: only the two that do not import torch (about 0.6 s together).
    pytest.param(Smoke("bench_startup", lambda tmp: ["--rounds", "1", "--only", "import dlkit", "cfg job"],
                       _check_startup), id="bench_startup"),
    pytest.param(Smoke("bench_seq2seq", lambda tmp: ["--experiments", "seq2seq_rnn_dates", "--threads", "1",
                                                     "--output-dir", str(tmp / "runs"), *TINY_RUN],
                       _check_seq2seq), id="bench_seq2seq"),
]


@pytest.fixture
def restored_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what the scripts change in the process: logger levels, warning filters, torch's
    RNG and oneDNN switch, Hydra's global state; run them from ``tmp_path``, their temporary
    folders inside it. (Torch's thread count: the ``one_thread`` fixture.)"""
    monkeypatch.chdir(tmp_path)  # anything relative (./logs) lands here, not in the repo
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # tempfile.mkdtemp() & co.
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root_level = logging.root.level
    rng = torch.random.get_rng_state()
    mkldnn = torch.backends.mkldnn.enabled
    with warnings.catch_warnings():
        yield
    for name, lg in logging.root.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))
    logging.root.setLevel(root_level)
    torch.random.set_rng_state(rng)
    torch.backends.mkldnn.enabled = mkldnn
    GlobalHydra.instance().clear()


def _repo_runs() -> set[Path]:
    # Run folders are at most three levels down: logs/<task>/runs/<stamp>, logs/bench_cnn/<exp>/<stamp>.
    return {p for depth in ("*", "*/*", "*/*/*") for p in (REPO / "logs").glob(depth)}


@pytest.mark.parametrize("smoke", SMOKES)
def test_bench_script_smoke_run(smoke: Smoke, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                restored_state: None) -> None:
    module = load_script(smoke.script)
    before = _repo_runs()
    with smoke.patches() if smoke.patches else contextlib.nullcontext():
        returned = module.main(smoke.argv(tmp_path))
    out = capsys.readouterr().out
    assert load_script("_bench_common").cpu_description() in out  # the machine line
    smoke.check(out, tmp_path, module, returned)
    assert _repo_runs() == before, "a smoke run wrote into the repository's logs/"


def test_every_bench_script_has_a_smoke_run() -> None:
    covered = {f"{p.values[0].script}.py" for p in SMOKES}
    present = {p.name for p in sorted(SCRIPTS.glob("bench_*.py"))} - ELSEWHERE
    assert covered == present, f"without a smoke run: {sorted(present - covered)}; gone: {sorted(covered - present)}"


def test_helpers(docstring_examples) -> None:
    docstring_examples(table)
    docstring_examples(number)
