"""What the training benchmarks share: compose an experiment as ``dlkit-train`` would, and
train it with a console callback in place of the progress bar.

``scripts/bench_cnn.py`` and ``scripts/bench_seq2seq.py`` import it (run as scripts, their
folder is on ``sys.path``); each keeps its own callback, record and table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def compose(experiment: str, overrides: list[str], output_dir: Path) -> Any:
    """Compose ``train.yaml`` for ``experiment`` as ``dlkit-train`` would, writing to ``output_dir``.

    Args:
        experiment: Name of a file in ``dlkit/conf/experiment``.
        overrides: Hydra overrides, e.g. ``["trainer.max_epochs=1"]``.
        output_dir: The run folder.

    Returns:
        The composed ``DictConfig`` (with ``HydraConfig`` set, so ``${hydra:...}`` resolves).

    Example:
        >>> cfg = compose("lenet5_fashion", ["trainer.max_epochs=1"], Path("/tmp/run"))
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="dlkit.conf", version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"experiment={experiment}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def compose_quiet(
    experiment: str,
    overrides: list[str],
    output_dir: Path,
    callbacks: dict[str, dict[str, Any]],
    drop: Sequence[str] = (),
) -> Any:
    """:func:`compose`, then swap the progress bar for the benchmark's own callbacks.

    Args:
        experiment: Name of a file in ``dlkit/conf/experiment``.
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

    cfg = compose(experiment, overrides, output_dir)
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
