"""What the benchmarks share: the machine line every table carries, composing an experiment
as ``dlkit-train`` would, and training it with a console callback in place of the progress bar.

The ``scripts/bench_*.py`` scripts import it (run as scripts, their folder is on
``sys.path``); each keeps its own callback, record and table.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Instruction-set extensions that change which kernels torch runs, widest first.
_ISA_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx2", "fma")


def cpu_description() -> str:
    """The CPU a figure was measured on: model, family/model numbers, cores and the ISA
    extensions that matter to torch's kernels (read from ``/proc/cpuinfo`` on Linux).

    Speed ratios change with the CPU, so every benchmark prints this line with its table.

    Example:
        >>> cpu_description()  # doctest: +SKIP
        'AMD EPYC (family 25, model 17), 2 cores; ISA: avx512f avx512_bf16 avx512_vnni avx2 fma'
    """
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    flags = set(info.get("flags", "").split())
    isa = " ".join(f for f in _ISA_FLAGS if f in flags) or "none of " + "/".join(_ISA_FLAGS)
    model = info.get("model name", platform.machine())
    return f"{model} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}), {os.cpu_count()} cores; ISA: {isa}"


def onednn_version() -> str:
    """The oneDNN version torch was built with (its CPU convolution and matmul kernels).

    Example:
        >>> onednn_version()  # doctest: +SKIP
        'oneDNN v3.12.0'
    """
    import torch

    found = re.search(r"(?:oneDNN|MKL-DNN) (v[\d.]+)", torch.__config__.show())
    return f"oneDNN {found.group(1)}" if found else "oneDNN: not reported"


def compose_quiet(
    experiment: str,
    overrides: list[str],
    output_dir: Path,
    callbacks: dict[str, dict[str, Any]],
    drop: Sequence[str] = (),
) -> Any:
    """Compose ``experiment`` as ``dlkit-train`` would (``dlkit.config.compose_config``), with
    the progress bar swapped for the benchmark's own callbacks.

    Args:
        experiment: Name of a file in ``conf/experiment``.
        overrides: Hydra overrides.
        output_dir: The run folder.
        callbacks: ``{key: {"_target_": ..., **kwargs}}`` added to ``cfg.callbacks``
            (see :func:`target`).
        drop: Further callbacks of the experiment to remove, e.g. ``("model_summary",)``.

    Returns:
        The composed ``DictConfig``.

    Example:
        >>> cfg = compose_quiet("lenet5_fashion", [], Path("/tmp/run"), {"timer": {"_target_": target(Timer)}})
    """
    from omegaconf import open_dict

    from dlkit.config import compose_config

    cfg = compose_config("train", [f"experiment={experiment}", *overrides], output_dir)
    with open_dict(cfg):
        if cfg.get("callbacks") is None:
            cfg.callbacks = {}
        # One console line per epoch replaces the progress bar, which floods log files.
        for key in ("rich_progress_bar", *drop):
            cfg.callbacks.pop(key, None)
        cfg.trainer.enable_progress_bar = False
        for key, spec in callbacks.items():
            cfg.callbacks[key] = spec
    return cfg


def timed_train(cfg: Any) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Run :func:`dlkit.train.train` on ``cfg``.

    Args:
        cfg: A config from :func:`compose_quiet`.

    Returns:
        ``(metrics, objects, wall_seconds)``: ``train``'s two results and its wall time.

    Example:
        >>> metrics, objects, wall = timed_train(cfg)
    """
    from dlkit.train import train

    started = time.perf_counter()
    metrics, objects = train(cfg)
    return metrics, objects, time.perf_counter() - started


def target(cls: type) -> str:
    """The ``_target_`` Hydra instantiates ``cls`` from (``__main__.X`` when run as a script).

    Example:
        >>> from collections import OrderedDict
        >>> target(OrderedDict)
        'collections.OrderedDict'
    """
    return f"{cls.__module__}.{cls.__qualname__}"
