"""Shared fixtures: Hydra configs composed in-process, pointed at a temporary run folder."""

from __future__ import annotations

import doctest
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from dlkit.config import compose_config

# Two cores: more intra-op threads than cores only adds contention in tiny test models.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Every test leaves the root logger's handlers and level as it found them.

    A Hydra entry point run in-process (``dlkit.train.main()``) configures job logging: a
    console handler on that test's captured stream, closed when the test ends, and a file
    handler in its temporary run folder. Left behind, every later log line would go to both.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch intra-op thread during the test; the previous count is restored after.

    For tiny tensors and models, where waking a second thread costs more than it saves,
    and on cores shared with other processes each barrier may wait for a descheduled
    thread. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    with _one_intra_op_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_per_module() -> Iterator[None]:
    """:func:`one_thread` set once for a whole module (files of many tiny tests)."""
    with _one_intra_op_thread():
        yield


def check_docstring_examples(obj: Any) -> None:
    """Run the docstring examples of ``obj`` (a module, or one function or class of it)
    with its module's names and ``torch`` in scope, seed 0; assert some ran and all passed."""
    torch.manual_seed(0)
    module = obj if isinstance(obj, ModuleType) else inspect.getmodule(obj)
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(obj, globs={**vars(module), "torch": torch}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


@pytest.fixture
def docstring_examples() -> Callable[[Any], None]:
    """``docstring_examples(obj)``: its doctests pass (see check_docstring_examples)."""
    return check_docstring_examples


def _compose(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    cfg = compose_config(config_name, overrides, output_dir)
    with open_dict(cfg):  # nothing a test runs writes to ./logs
        cfg.paths.log_dir = str(output_dir / "logs")
    return cfg


ComposeFn = Callable[..., DictConfig]


@pytest.fixture
def compose_train(tmp_path: Path) -> ComposeFn:
    """``compose_train(*overrides, output_dir=None)`` -> a train.yaml config writing to tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return _compose("train", list(overrides), output_dir or tmp_path / "run")

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def compose_eval(tmp_path: Path) -> ComposeFn:
    """``compose_eval(*overrides)`` -> an eval.yaml config writing to tmp_path/eval."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return _compose("eval", list(overrides), output_dir or tmp_path / "eval")

    yield make
    GlobalHydra.instance().clear()


# Quiet and quick: no progress bars or model tables in test output.
def have_fashion_mnist() -> bool:
    """Whether Fashion-MNIST's IDX files are on this machine (the Debian package, DLKIT_DATA_DIR, the cache)."""
    from dlkit.data.idx import FASHION_MNIST, find_idx_files

    try:
        find_idx_files(FASHION_MNIST, None)
    except FileNotFoundError:
        return False
    return True


needs_fashion_mnist = pytest.mark.skipif(
    not have_fashion_mnist(),
    reason="Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or set DLKIT_DATA_DIR)",
)

FAST = ["~callbacks.rich_progress_bar", "~callbacks.model_summary"]


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as module ``name``, as it is when run from ``scripts/``.

    The module is registered in ``sys.modules`` so that Hydra finds the callbacks the
    script names by ``<name>.<Class>`` (``_bench_common.target``) as this very module,
    and the script's ``isinstance`` checks on them hold.
    """
    # The scripts import their siblings (_bench_common, bench_models) as top-level modules.
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    path = SCRIPTS / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")) == path:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module
