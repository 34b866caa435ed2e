"""Composing, validating and instantiating dlkit's Hydra configs.

The YAML files under ``conf/`` (installed as the package ``dlkit.conf``) are the single
source of truth for every named choice: ``dlkit-train optimizer=adamw`` and
``Classifier.compile(optimizer="adamw")`` read the same ``conf/optimizer/adamw.yaml``.

This module sits at the bottom of dlkit's dependency order and imports neither torch
nor Lightning, so the command-line entry points answer ``--help`` and ``--cfg job`` at
once; Hydra's instantiation machinery is imported when first used.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "CONF_DIR",
    "ConfigError",
    "compose_config",
    "fill_model_from_data",
    "group_options",
    "instantiate_dict",
    "instantiate_node",
    "instantiate_option",
    "load_option",
    "validate_config",
]

class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the value and what is allowed."""


# conf/ at the repository root, installed as the package dlkit.conf (pyproject.toml's
# package-dir), so a source checkout, an editable install and a wheel all find it here.
CONF_DIR = Path(str(files("dlkit.conf")))


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
    """Compose ``conf/<config_name>.yaml`` in-process, as ``dlkit-train`` would.

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


def _positive(cfg: DictConfig, key: str, allow: tuple[Any, ...] = ()) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or value in allow:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        extra = f" (or {', '.join(map(str, allow))})" if allow else ""
        raise ConfigError(f"{key} must be a number > 0{extra}, got {value!r}.")


def validate_config(cfg: DictConfig) -> None:
    """Check the values a run cannot start without, before anything heavy is built.

    Args:
        cfg: A composed ``train.yaml`` config.

    Raises:
        ConfigError: Naming the key, the bad value and what is allowed.

    Example:
        >>> validate_config(compose_config("train", ["optimizer.lr=-1"]))
        Traceback (most recent call last):
        ConfigError: optimizer.lr must be a number > 0, got -1.
    """
    _positive(cfg, "trainer.max_epochs", allow=(-1,))
    _positive(cfg, "data.batch_size")
    _positive(cfg, "optimizer.lr")
    for key in ("train", "test"):
        value = cfg.get(key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")


def instantiate_node(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that names the config key when building fails.

    Args:
        node: A config node with a ``_target_``.
        key: Its key in the run config (``"model"``, ``"callbacks.early_stopping"``),
            named in the error.
        **kwargs: Passed to ``instantiate`` (objects the config cannot hold: ``net=``...).

    Raises:
        ConfigError: The target could not be built; the message names ``key``.

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


def instantiate_dict(node: DictConfig | None, key: str) -> list[Any]:
    """Instantiate every entry of a mapping of ``_target_`` configs (callbacks, loggers).

    Args:
        node: ``name -> config``; entries without ``_target_`` (and ``null`` ones) are skipped.
        key: The mapping's key in the run config, named in errors.

    Returns:
        The built objects, in the mapping's order.

    Example:
        >>> callbacks = instantiate_dict(cfg.callbacks, "callbacks")
    """
    if not node:
        return []
    if not isinstance(node, DictConfig):
        raise ConfigError(f"`{key}` must be a mapping of name -> config, got {type(node).__name__}.")
    return [
        instantiate_node(sub, f"{key}.{name}")
        for name, sub in node.items()
        if isinstance(sub, DictConfig) and "_target_" in sub
    ]


def fill_model_from_data(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """Fill the ``model`` keys a config leaves ``null`` from what the data knows.

    A DataModule may offer ``model_hints() -> dict`` (e.g. ``num_classes``,
    ``in_chans``, ``src_vocab_size``, ``tgt_vocab_size``, ``pad_id``); every hint whose key
    the model config has and leaves ``null`` is written into ``cfg.model`` before the
    network is built, so vocabulary sizes learned from the data never have to be typed.
    Keys the config sets are left alone.

    Args:
        cfg: The run config; its ``model`` node is changed in place.
        datamodule: The run's DataModule.

    Returns:
        The hints that were filled in.

    Example:
        >>> fill_model_from_data(cfg, DateTranslationDataModule())
        {'src_vocab_size': 52, 'tgt_vocab_size': 14, 'pad_id': 0}
    """
    hints = getattr(datamodule, "model_hints", None)
    model = cfg.get("model")
    if hints is None or model is None:
        return {}
    filled = {k: v for k, v in hints().items() if k in model and model[k] is None}
    for key, value in filled.items():
        model[key] = value
    return filled
