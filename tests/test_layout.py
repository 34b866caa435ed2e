"""The house rules that keep dlkit navigable: imports point down, files stay one job each.

The dependency order, lowest first, is the README's architecture map:
``config``/``checkpoint``/``run_output`` -> ``layers``/``losses``/``schedulers`` ->
``models`` and ``data`` (neither imports the other) -> ``callbacks`` -> ``tasks`` ->
``train``/``eval``.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dlkit"

# Level of each top-level module or subpackage of dlkit; an import may only point to
# the same level (inside its own package, or to a sibling module of level 0/1) or lower.
LEVELS = {
    "dlkit": 0,
    "dlkit.config": 0,
    "dlkit.checkpoint": 0,
    "dlkit.run_output": 0,
    "dlkit.validation": 0,
    "dlkit.resume": 0,
    "dlkit.overrides": 0,
    "dlkit.layers": 1,
    "dlkit.losses": 1,
    "dlkit.schedulers": 1,
    "dlkit.models": 2,
    "dlkit.data": 2,
    "dlkit.callbacks": 3,
    "dlkit.loggers": 3,
    "dlkit.profilers": 3,
    "dlkit.tasks": 4,
    "dlkit.train": 5,
    "dlkit.sweep": 5,
    "dlkit.tuning": 5,
    "dlkit.distributed": 5,
    "dlkit.speed": 5,
    "dlkit.eval": 5,
}
# Same-level rooms that must not know each other.
APART = {frozenset({"dlkit.models", "dlkit.data"})}
# Files over MAX_LINES that are one concept each, and why.
MAX_LINES = 600
ONE_CONCEPT = {
    "dlkit/layers/recurrent.py": "the torch.nn-compatible cells and RNN/LSTM/GRU layers over one time loop",
    "dlkit/layers/recurrent_kernels.py": "the recurrence math: cell equations and their backpropagation through time",
    "dlkit/layers/activations.py": "the activation functions, their modules and the factory that names them",
    "dlkit/data/idx.py": "IDX data sets: finding, checking, downloading and reading the files, and their DataModule",
}

SOURCES = sorted(PACKAGE.rglob("*.py"))


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported dlkit module, line, at module level?) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_body: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_body or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, not in_body) for a in child.names if a.name.startswith("dlkit"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                if module.startswith("dlkit"):
                    found.append((module, child.lineno, not in_body))
            visit(child, nested)

    visit(tree, False)
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_dependency_order(path: Path) -> None:
    source = _room(_module_name(path))
    assert source in LEVELS, f"{source} has no place in the dependency order: add it to LEVELS and the README map."
    for module, line, _ in _imports(path):
        target = _room(module)
        assert target in LEVELS, f"{path.name}:{line} imports {module}, which has no place in LEVELS."
        where = f"{path.relative_to(ROOT)}:{line} imports {module}"
        assert LEVELS[target] <= LEVELS[source], f"{where}, which sits above {source} in the dependency order."
        assert frozenset({source, target}) not in APART, f"{where}: {source} and {target} must not know each other."


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dlkit_imports_are_at_the_top_of_the_file(path: Path) -> None:
    inside = [(m, line) for m, line, top in _imports(path) if not top]
    assert not inside, f"{path.relative_to(ROOT)} imports dlkit modules inside a function or class: {inside}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_one_job(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    lines = len(path.read_text().splitlines())
    if rel in ONE_CONCEPT:
        return
    assert lines <= MAX_LINES, f"{rel} has {lines} lines (> {MAX_LINES}): split it by concept."


def test_no_private_names_cross_files() -> None:
    offenders = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlkit"):
                offenders += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not offenders, f"private names imported across files: {offenders}"


def test_configs_live_at_the_top_and_ship_as_dlkit_conf() -> None:
    assert (ROOT / "conf" / "train.yaml").is_file()
    # A leftover folder would be a namespace package shadowing the package-dir mapping.
    assert not (PACKAGE / "conf").exists()
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"dlkit.conf": "conf"}
    # hydra_plugins is a namespace package other plugins install into too: only its subpackages are ours.
    plugins = ROOT / "hydra_plugins"
    assert not (plugins / "__init__.py").exists(), "hydra_plugins must stay a namespace package (no __init__.py)"
    on_disk = {_module_name(p) for p in [*PACKAGE.rglob("__init__.py"), *plugins.rglob("__init__.py")]}
    listed = set(setuptools["packages"])
    assert on_disk | {"dlkit.conf"} == listed, (
        f"pyproject.toml's packages miss {on_disk - listed} or list ones not on disk {listed - on_disk - {'dlkit.conf'}}")


def test_config_module_finds_the_installed_configs() -> None:
    from dlkit.config import CONF_DIR, group_options

    assert (CONF_DIR / "train.yaml").is_file()
    assert "adam" in group_options("optimizer")
