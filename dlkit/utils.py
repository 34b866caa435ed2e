"""Helpers shared by ``dlkit-train`` and ``dlkit-eval``: validation, instantiation, results.

This module imports neither torch nor Lightning at import time, so the command-line
entry points answer ``--help`` and ``--cfg job`` at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "ConfigError",
    "validate_config",
    "resolve_ckpt_path",
    "instantiate_node",
    "instantiate_dict",
    "fill_model_from_data",
    "write_metrics_json",
    "route_lightning_logs",
]


class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the value and what is allowed."""


def _positive(cfg: DictConfig, key: str, allow: tuple[Any, ...] = ()) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or value in allow:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        extra = f" (or {', '.join(map(str, allow))})" if allow else ""
        raise ConfigError(f"{key} must be a number > 0{extra}, got {value!r}.")


def validate_config(cfg: DictConfig) -> None:
    """Check the values a run cannot start without, before anything heavy is built.

    Raises:
        ConfigError: Naming the key, the bad value and what is allowed.
    """
    _positive(cfg, "trainer.max_epochs", allow=(-1,))
    _positive(cfg, "data.batch_size")
    _positive(cfg, "optimizer.lr")
    for key in ("train", "test"):
        value = cfg.get(key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")
    if cfg.get("ckpt_path") is not None:
        resolve_ckpt_path(cfg.ckpt_path)


def resolve_ckpt_path(path: str, prefer: str = "last") -> str:
    """Turn ``ckpt_path`` into a checkpoint file, or raise before training starts.

    Args:
        path: A ``.ckpt`` file, or a run directory (then ``checkpoints/last.ckpt`` when
            ``prefer="last"``, the best checkpoint when ``prefer="best"``).
        prefer: Which checkpoint of a run directory to use.

    Raises:
        ConfigError: When nothing usable exists at ``path``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        ckpt_dir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        last = ckpt_dir / "last.ckpt"
        others = sorted(f for f in ckpt_dir.glob("*.ckpt") if f.name != "last.ckpt" and not f.name.startswith("."))
        order = [last, *others] if prefer == "last" else [*others, last]
        for candidate in order:
            if candidate.is_file():
                return str(candidate)
        raise ConfigError(f"ckpt_path={path!r} is a directory without checkpoints (looked in {ckpt_dir}).")
    if not p.is_file():
        raise ConfigError(
            f"ckpt_path={path!r} does not exist. Give a .ckpt file or a run directory "
            "such as logs/<task_name>/runs/<timestamp>."
        )
    return str(p)


def instantiate_node(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that names the config key when building fails.

    Example:
        >>> net = instantiate_node(cfg.model, "model")
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"Could not build `{key}` ({node.get('_target_', '?')}): {cause}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"Could not build `{key}`: {err}") from err


def fill_model_from_data(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """Fill the ``model`` keys a config leaves ``null`` from what the data knows.

    A DataModule may offer ``model_hints() -> dict`` (e.g. ``num_classes``,
    ``in_chans``, ``src_vocab_size``, ``tgt_vocab_size``, ``pad_id``); every hint whose key
    the model config has and leaves ``null`` is written into ``cfg.model`` before the
    network is built, so vocabulary sizes learned from the data never have to be typed.
    Keys the config sets are left alone.

    Returns:
        The hints that were filled in.
    """
    hints = getattr(datamodule, "model_hints", None)
    model = cfg.get("model")
    if hints is None or model is None:
        return {}
    filled = {k: v for k, v in hints().items() if k in model and model[k] is None}
    for key, value in filled.items():
        model[key] = value
    return filled


def instantiate_dict(node: DictConfig | None, key: str) -> list[Any]:
    """Instantiate every entry of a dict of ``_target_`` configs (callbacks, loggers)."""
    if not node:
        return []
    if not isinstance(node, DictConfig):
        raise ConfigError(f"`{key}` must be a mapping of name -> config, got {type(node).__name__}.")
    return [
        instantiate_node(sub, f"{key}.{name}")
        for name, sub in node.items()
        if isinstance(sub, DictConfig) and "_target_" in sub
    ]


def route_lightning_logs() -> None:
    """Send Lightning's log lines through the root logger only (once, to console and file).

    Lightning gives its loggers their own console handler; under Hydra, which logs the
    root logger to the console and to ``<run>/<job>.log``, every line would show twice.
    Lightning's version-mismatch ``LeafSpec`` deprecation warning is silenced too:
    it is about Lightning's internals, and users can do nothing about it.
    """
    import logging
    import warnings

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
    """Write ``metrics`` (tensors become numbers) and ``extra`` fields to ``path`` as JSON."""
    data = {k: _plain(v) for k, v in sorted(metrics.items())}
    data.update({k: _plain(v) for k, v in extra.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data
