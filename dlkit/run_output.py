"""What a command-line run leaves behind and prints: ``metrics.json``, log routing.

Used by ``dlkit-train`` and ``dlkit-eval``; imports neither torch nor Lightning.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["route_lightning_logs", "write_metrics_json"]


def route_lightning_logs() -> None:
    """Send Lightning's log lines through the root logger only (once, to console and file).

    Lightning gives its loggers their own console handler; under Hydra, which logs the
    root logger to the console and to ``<run>/<job>.log``, every line would show twice.
    Lightning's version-mismatch ``LeafSpec`` deprecation warning is silenced too:
    it is about Lightning's internals, and users can do nothing about it.

    Example:
        >>> route_lightning_logs()  # before building the Trainer
    """
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]:
            logger.removeHandler(handler)
        logger.propagate = True


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics_json(path: Path, metrics: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Write ``metrics`` (tensors become numbers, NaN/inf ``null``) and ``extra`` fields as JSON.

    Args:
        path: The file, e.g. ``<run folder>/metrics.json``; its folder is created.
        metrics: Metric name -> value (number or 0-d tensor).
        **extra: Further top-level fields (``wall_time_s=12.3``).

    Returns:
        What was written.

    Example:
        >>> write_metrics_json(Path("run/metrics.json"), {"test/acc": 0.99}, wall_time_s=9.6)
        {'test/acc': 0.99, 'wall_time_s': 9.6}
    """
    data = {k: _plain(v) for k, v in sorted(metrics.items())}
    data.update({k: _plain(v) for k, v in extra.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data
