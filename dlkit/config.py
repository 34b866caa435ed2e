"""Where dlkit's Hydra configs live, and reading one option of a group by name.

The YAML files under ``dlkit/conf`` are the single source of truth for every named
choice: ``dlkit-train optimizer=adamw`` and ``Classifier.compile(optimizer="adamw")``
read the same ``conf/optimizer/adamw.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONF_DIR", "group_options", "load_option", "instantiate_option"]

CONF_DIR = Path(__file__).resolve().parent / "conf"


def group_options(group: str) -> list[str]:
    """Names of the options of a config group, e.g. ``group_options("optimizer")``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def load_option(group: str, name: str) -> DictConfig:
    """Load ``conf/<group>/<name>.yaml``.

    Raises:
        ValueError: For an unknown name; the message lists the allowed ones.

    Example:
        >>> load_option("optimizer", "adam")._target_
        'torch.optim.Adam'
    """
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"Unknown {group} {name!r}. Allowed values: {', '.join(group_options(group))} "
            f"(files in {CONF_DIR / group})."
        )
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg


def instantiate_option(group: str, name: str, **overrides: Any) -> Any:
    """Instantiate ``conf/<group>/<name>.yaml`` with keyword overrides.

    ``None`` overrides are ignored, so callers can pass optional arguments through.

    Example:
        >>> make_opt = instantiate_option("optimizer", "sgd", lr=0.1)  # a partial
    """
    from hydra.utils import instantiate

    cfg = load_option(group, name)
    for key, value in overrides.items():
        if value is not None:
            cfg[key] = value
    return instantiate(cfg)
