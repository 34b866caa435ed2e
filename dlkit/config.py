"""Where dlkit's Hydra configs live, and reading one option of a group by name.

The YAML files under ``dlkit/conf`` are the single source of truth for every named
choice: ``dlkit-train optimizer=adamw`` and ``Classifier.compile(optimizer="adamw")``
read the same ``conf/optimizer/adamw.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONF_DIR", "compose_config", "group_options", "load_option", "instantiate_option"]

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


def compose_config(
    config_name: str = "train",
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> DictConfig:
    """Compose ``dlkit/conf/<config_name>.yaml`` in-process, as ``dlkit-train`` would.

    For notebooks, scripts and tests: the result goes straight to
    :func:`dlkit.train.train` (or :func:`dlkit.eval.evaluate`) without a new Python
    process. Hydra's run-time values are set as ``@hydra.main`` would set them, so
    ``${hydra:runtime.output_dir}`` resolves and ``paths.output_dir`` is the run folder.

    Args:
        config_name: ``"train"`` or ``"eval"``.
        overrides: Command-line overrides, e.g. ``["experiment=mlp_diabetes",
            "trainer.max_epochs=5"]``.
        output_dir: The run folder. Defaults to the one ``dlkit-train`` would create,
            ``logs/<task_name>/runs/<timestamp>`` (``hydra.run.dir``).

    Returns:
        The composed config, including its ``hydra`` node.

    Raises:
        hydra.errors.ConfigCompositionException: An override names a key or option
            that does not exist (Hydra's message lists what does).

    Example:
        >>> cfg = compose_config("train", ["trainer.max_epochs=1"], output_dir="/tmp/run")
        >>> cfg.paths.output_dir
        '/tmp/run'
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="dlkit.conf", version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is None:
        output_dir = OmegaConf.select(cfg, "hydra.run.dir")
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        # Fixed now, so the config no longer needs the global HydraConfig set below.
        cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg
