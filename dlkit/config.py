"""Composing, validating and instantiating dlkit's Hydra configs.

The YAML files under ``conf/`` (installed as the package ``dlkit.conf``) are the single
source of truth for every named choice: ``dlkit-train optimizer=adamw`` and
``Classifier.compile(optimizer="adamw")`` read the same ``conf/optimizer/adamw.yaml``.

This module sits at the bottom of dlkit's dependency order and imports neither torch
nor Lightning, so the command-line entry points answer ``--help`` and ``--cfg job`` at
once; Hydra's instantiation machinery is imported when first used.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

__all__ = [
    "ALIASES",
    "ALLOWED_TARGETS_ENV",
    "CONF_DIR",
    "ConfigError",
    "check_targets",
    "compose_config",
    "fill_model_from_data",
    "group_options",
    "instantiate_dict",
    "instantiate_node",
    "instantiate_option",
    "instantiate_stored",
    "instantiate_trainer",
    "load_option",
    "option_name",
    "run_name",
]

class ConfigError(ValueError, CompactHydraException):
    """A config value is wrong; the message names the key, the value and what is allowed.

    A ``CompactHydraException`` too: on the command line Hydra prints its message without
    a traceback (``HYDRA_FULL_ERROR=1`` shows one).
    """


def run_name(default: str, model: str, data: str, _root_: Any = None) -> str:
    """An experiment's ``task_name`` that follows a switched model or data set (resolver ``dlkit_run_name``).

    ``experiment/lenet_digits.yaml`` says ``task_name: ${dlkit_run_name:lenet_digits,lenet5,digits}``:
    with its own ``model=lenet5`` and ``data=digits`` the runs go to ``logs/lenet_digits``;
    after ``model=mlp`` to ``logs/mlp_digits``, not under LeNet's name.

    Args:
        default: The experiment's name.
        model: The model option the experiment chooses.
        data: The data option it chooses.
        _root_: The whole config (OmegaConf passes it to a resolver): its ``hydra`` node
            holds the run's choices while Hydra composes; a task function's config has
            none, and Hydra's global config answers then.

    Returns:
        ``default``, or ``<model>_<data>`` of the options chosen for this run.

    Example:
        >>> run_name("lenet_digits", "lenet5", "digits")  # outside a Hydra run: the default
        'lenet_digits'
    """
    from hydra.core.hydra_config import HydraConfig

    choices = OmegaConf.select(_root_, "hydra.runtime.choices", default=None) if _root_ is not None else None
    if choices is None:
        if not HydraConfig.initialized():
            return default
        choices = HydraConfig.get().runtime.choices
    chosen = (choices.get("model") or model, choices.get("data") or data)
    return default if chosen == (model, data) else f"{chosen[0]}_{chosen[1]}"


if not OmegaConf.has_resolver("dlkit_run_name"):
    OmegaConf.register_new_resolver("dlkit_run_name", run_name)

# conf/ at the repository root, installed as the package dlkit.conf (pyproject.toml's
# package-dir), so a source checkout, an editable install and a wheel all find it here.
CONF_DIR = Path(str(files("dlkit.conf")))


def group_options(group: str) -> list[str]:
    """Names of the options of a config group, e.g. ``group_options("optimizer")``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# Keras' spellings (and other common ones) of dlkit's option names, after lower-casing
# and "-" -> "_": compile(loss="sparse_categorical_crossentropy") works as in Keras.
ALIASES: dict[str, dict[str, str]] = {
    "loss": {
        "sparse_categorical_crossentropy": "cross_entropy",
        "categorical_crossentropy": "cross_entropy",  # dlkit's takes class indices or probabilities
        "crossentropy": "cross_entropy",
        "mean_squared_error": "mse",
        "mean_absolute_error": "mae",
        "binary_crossentropy": "bce",
        "huber_loss": "huber",
        "kl_divergence": "kl",
        "kld": "kl",
        "kullback_leibler_divergence": "kl",
        "categorical_hinge": "hinge",
    },
    "scheduler": {
        "reduce_lr_on_plateau": "plateau",
        "reducelronplateau": "plateau",
        "onecycle": "one_cycle",
        "onecyclelr": "one_cycle",
        "cosine_annealing": "cosine",
        "cosineannealinglr": "cosine",
        "steplr": "step",
        "multisteplr": "multistep",
        "exponentiallr": "exponential",
    },
}


def option_name(group: str, name: Any) -> Any:
    """The option a spelling means: case-insensitive, ``-`` as ``_``, Keras' names (:data:`ALIASES`).

    Anything that is not a known spelling comes back unchanged, for :func:`load_option`
    to report.

    Example:
        >>> option_name("loss", "Sparse_Categorical_Crossentropy"), option_name("optimizer", "Adam")
        ('cross_entropy', 'adam')
    """
    if not isinstance(name, str):
        return name
    key = name.lower().replace("-", "_")
    if key in group_options(group):
        return key
    return ALIASES.get(group, {}).get(key, name)


def load_option(group: str, name: str) -> DictConfig:
    """Load ``conf/<group>/<name>.yaml``, an option of one of dlkit's config groups.

    Only plain option names resolve: a name is looked up among the group's files, never
    joined into a path, so a name stored in a checkpoint's hyper-parameters
    (``"../../evil"``, ``"/tmp/x"``, ``"~/x.yaml"``) cannot load a YAML from elsewhere.

    Args:
        group: A config group (``"optimizer"``, ``"loss"``, ``"scheduler"``...).
        name: An option of that group (``"adam"``).

    Raises:
        ConfigError: (a ``ValueError``) For an unknown group or name; the message lists
            the allowed ones.

    Example:
        >>> load_option("optimizer", "adam")._target_
        'torch.optim.Adam'
    """
    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if group not in groups:
        raise ConfigError(f"Unknown config group {group!r}. Groups: {', '.join(groups)}.")
    options = group_options(group)
    name = option_name(group, name)
    if not isinstance(name, str) or name not in options:
        pathlike = isinstance(name, str) and (not name or any(c in name for c in "/\\~."))
        hint = (
            " Option names are the plain names of the files in conf/" + group + ", not paths; for "
            "your own settings pass a factory (e.g. functools.partial(torch.optim.SGD, lr=0.1)) "
            "or, with dlkit-train, add a config folder with --config-dir."
            if pathlike else ""
        )
        aliases = sorted(ALIASES.get(group, {}))
        also = f"; also Keras' names: {', '.join(aliases)}" if aliases else ""
        raise ConfigError(
            f"Unknown {group} {name!r}. Allowed values: {', '.join(options)} "
            f"(files in {CONF_DIR / group}; case-insensitive{also}).{hint}"
        )
    cfg = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
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


def instantiate_trainer(node: Any, **kwargs: Any) -> Any:
    """The run's ``lightning.Trainer`` from its ``trainer`` node, with dlkit's default profiler.

    Unless the node names a profiler (``trainer.profiler=simple``, ``debug=profiler``),
    the trainer gets :class:`~dlkit.profilers.NullProfiler`: Lightning's no-op profiler
    without a generator per hook call. It is built by target, so importing this module
    imports no Lightning.

    Args:
        node: The ``trainer`` config node.
        **kwargs: Passed to the Trainer (``callbacks=``, ``logger=``...).

    Raises:
        ConfigError: The trainer could not be built; the message names the key.

    Example:
        >>> trainer = instantiate_trainer(cfg.trainer, callbacks=[], logger=False)
    """
    if not node.get("profiler"):
        kwargs.setdefault("profiler", instantiate_node({"_target_": "dlkit.profilers.NullProfiler"}, "trainer.profiler"))
    return instantiate_node(node, "trainer", **kwargs)


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


# ------------------------------------------------------------ configs stored in files
# A config read back from a checkpoint is data from whoever wrote the file: Hydra would
# import and call any `_target_` in it. Only public classes and functions of these
# namespaces may be built from one. It is an allow-list of what conf/ and dlkit-train's
# checkpoints use, not the whole `dlkit.`/`torch.`/`lightning.` trees, because those
# trees hold callables that read or write files by path (torch.load, torch.save,
# dlkit.checkpoint.atomic_torch_save, the IDX downloader...). Each entry: the namespace,
# the package the target must be defined in, and whether it must be one of the
# namespace's exported names (dlkit's subpackages export exactly their public API).
ALLOWED_TARGETS_ENV = "DLKIT_ALLOWED_TARGETS"
_NAMESPACES: tuple[tuple[str, str, bool], ...] = (
    ("dlkit.models", "dlkit.models", True),
    ("dlkit.layers", "dlkit.layers", True),
    ("dlkit.losses", "dlkit.losses", True),
    ("dlkit.schedulers", "dlkit.schedulers", True),
    ("dlkit.data", "dlkit.data", True),
    ("dlkit.callbacks", "dlkit.callbacks", True),
    ("dlkit.tasks", "dlkit.tasks", True),
    ("dlkit.loggers", "dlkit.loggers", True),
    ("torch.nn", "torch.nn", False),
    ("torch.optim", "torch.optim", False),
    ("lightning.pytorch.callbacks", "lightning", False),
    ("lightning.pytorch.loggers", "lightning", False),
    ("lightning.pytorch.profilers", "lightning", False),
    ("lightning.pytorch.strategies", "lightning", False),
    ("lightning.pytorch.plugins", "lightning", False),
    ("lightning.pytorch.accelerators", "lightning", False),
)
# Exact names that are safe although their module is not: the checkpoint plugin every
# trainer config installs, and the Trainer (in each stored config's trainer node).
_EXACT_TARGETS = frozenset(
    {"dlkit.checkpoint.AtomicCheckpointIO", "lightning.Trainer", "lightning.pytorch.Trainer"}
)
# Never built from a file, whatever DLKIT_ALLOWED_TARGETS says: modules (and what they
# define) that run code, import, unpickle, touch files or processes, or instantiate
# further configs; matched against the dotted path and the target's defining module.
_NEVER = frozenset({
    "builtins", "os", "posix", "nt", "sys", "subprocess", "pathlib", "pickle", "_pickle",
    "importlib", "shutil", "io", "_io", "runpy", "code", "codeop", "ctypes", "marshal",
    "shelve", "socket", "tempfile", "glob", "multiprocessing", "threading", "signal",
    "webbrowser", "urllib", "http", "pty", "inspect", "types", "operator", "functools",
    "hydra", "omegaconf", "yaml", "dill", "cloudpickle", "joblib", "fsspec", "logging",
    "numpy.load", "numpy.lib.npyio",
    "torch.load", "torch.save", "torch.compile", "torch.from_file", "torch.serialization",
    "torch.hub", "torch.package", "torch.jit", "torch.fx", "torch.export", "torch.onnx",
    "torch.utils.cpp_extension", "torch.utils.model_zoo", "torch.distributed",
    "torch.multiprocessing", "torch.library", "torch.ops", "torch.compiler",
    "lightning.pytorch.cli", "lightning.pytorch.core.saving", "lightning.fabric.utilities.cloud_io",
    "dlkit.config", "dlkit.checkpoint", "dlkit.run_output", "dlkit.train", "dlkit.eval",
    "dlkit.models.pretrained", "dlkit.models.registry.register_model", "dlkit.data.idx.download_idx_files",
})
# The values a stored config may give Hydra's switches: `_recursive_: false` or another
# `_convert_` would hand unbuilt configs (attribute-readable DictConfigs) to a callable.
_HYDRA_VALUES = {"_partial_": (True, False), "_convert_": ("all",), "_recursive_": (True,)}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _never(name: str) -> str | None:
    return next((p for p in _NEVER if _under(name, p)), None)


def _namespaces(extra: Sequence[str] | None) -> list[tuple[str, str, bool]]:
    """The built-in namespaces plus the user's (``extra``, else ``DLKIT_ALLOWED_TARGETS``)."""
    if extra is None:
        extra = [s.strip() for s in os.environ.get(ALLOWED_TARGETS_ENV, "").split(",") if s.strip()]
    user = []
    for entry in extra:
        if not re.fullmatch(r"[A-Za-z]\w*(\.[A-Za-z]\w*)*", entry):
            raise ConfigError(f"{ALLOWED_TARGETS_ENV} entry {entry!r} is not a dotted name of public modules "
                              "(e.g. mypkg or mypkg.models).")
        if blocked := _never(entry):
            raise ConfigError(f"{ALLOWED_TARGETS_ENV} entry {entry!r} cannot be allowed: {blocked} is never "
                              "built from a stored config (it can run code, unpickle or touch files).")
        # A user's entry vouches for its top-level package: a target under it must be
        # defined there, so `mypkg.util.system` (imported from os) stays refused.
        user.append((entry, entry.split(".")[0], False))
    return [*_NAMESPACES, *user]


class _Refused(Exception):
    """Why a ``_target_`` may not be built (the message ends a ConfigError)."""


def _walk(path: str) -> Any:
    """The object Hydra would locate at ``path``, entering genuine submodules only.

    An attribute chain such as ``dlkit.models.pretrained.os.system`` reaches ``os``
    through an attribute of a dlkit module; it is refused, not followed.
    """
    parts = path.split(".")
    try:
        obj: Any = importlib.import_module(parts[0])
        for i, part in enumerate(parts[1:], start=1):
            name = ".".join(parts[: i + 1])
            if not inspect.ismodule(obj):
                raise _Refused(f"{'.'.join(parts[:i])} is not a module; only module-level classes and "
                               "functions are built")
            child = getattr(obj, part, None)
            child = importlib.import_module(name) if child is None else child
            if inspect.ismodule(child) and child.__name__ != name:
                raise _Refused(f"{name} is the module {child.__name__}, reached through an attribute of "
                               f"{obj.__name__}")
            obj = child
    except ImportError as err:
        raise _Refused(f"it does not exist ({err})") from None
    return obj


def _resolve_target(path: str, namespaces: list[tuple[str, str, bool]]) -> Any:
    """The class or function ``path`` names, if a stored config may build it; else :class:`_Refused`."""
    if not re.fullmatch(r"[A-Za-z]\w*(\.[A-Za-z]\w*)+", path):
        raise _Refused("only dotted paths of public names are built (no private `_names`, no spaces)")
    if path in _EXACT_TARGETS:
        return _walk(path)
    if blocked := _never(path):
        raise _Refused(
            f"{blocked} is never built from a stored config (it can run code, unpickle or touch files)"
        )
    matches = [n for n in namespaces if _under(path, n[0])]
    if not matches:
        raise _Refused("it is outside the namespaces a stored config may use")
    namespace, home, exported = max(matches, key=lambda n: len(n[0]))
    obj = _walk(path)
    if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        raise _Refused("it is not a class or a function")
    module = getattr(obj, "__module__", None) or "an unknown module"
    if blocked := _never(f"{module}.{getattr(obj, '__qualname__', '')}"):
        raise _Refused(f"it is defined in {module}; {blocked} is never built from a stored config")
    if not _under(module, home):
        raise _Refused(f"it is defined in {module}, outside {home}")
    if exported:
        package = importlib.import_module(namespace)
        names = getattr(package, "__all__", None) or [n for n in vars(package) if not n.startswith("_")]
        if not any(getattr(package, n, None) is obj for n in names):
            raise _Refused(f"it is not part of {namespace}'s public API")
    return obj


def check_targets(node: Any, where: str, allowed: Sequence[str] | None = None) -> None:
    """Refuse a config from a file (a checkpoint) that would build anything unsafe.

    Configs a user composes are theirs to trust; a config stored in a checkpoint is
    data from whoever wrote the file, and Hydra's ``instantiate`` imports and calls any
    ``_target_`` it names. Every ``_target_`` in ``node`` (nested in mappings, lists,
    ``_args_`` or argument values, built or ``_partial_``) must be a public class or
    function of dlkit's subpackages (``dlkit.models``, ``dlkit.data``, ``dlkit.tasks``...),
    ``torch.nn``, ``torch.optim``, or Lightning's ``Trainer``, callbacks, loggers,
    profilers, strategies and plugins, reached through genuine submodules and defined
    there, plus what ``allowed`` (or ``DLKIT_ALLOWED_TARGETS``) adds. Nothing from
    ``builtins``, ``os``, ``subprocess``, ``pathlib``, ``pickle``, ``importlib``,
    ``shutil``, ``sys``, ``io``, ``hydra``, nor ``torch.load``/``save``/``hub``/``jit``...
    is ever allowed. Interpolations (``${...}``) are refused too: dlkit-train stores
    configs resolved, and a resolver such as ``oc.decode`` could produce new targets.

    Args:
        node: A DictConfig, ListConfig or plain containers.
        where: What the config is, for the message (``"the config stored in run.ckpt"``).
        allowed: Extra namespaces (packages, modules or exact names). Defaults to None,
            meaning the comma-separated environment variable ``DLKIT_ALLOWED_TARGETS``.

    Raises:
        ConfigError: Naming the key path, the target and why it is refused.

    Example:
        >>> check_targets({"model": {"_target_": "builtins.open", "_args_": ["x", "w"]}}, "ckpt")
        Traceback (most recent call last):
        ConfigError: ckpt: model._target_ is 'builtins.open', which a stored config may not build: ...
    """
    namespaces = _namespaces(allowed)
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=False)
    fix = (
        f" If you trust this file, allow the package with {ALLOWED_TARGETS_ENV}=<package> "
        f"(comma-separated); allowed now: {', '.join(ns for ns, _, _ in namespaces)}."
    )

    def refuse(key: str, message: str) -> None:
        raise ConfigError(f"{where}: {key.lstrip('.') or '<root>'} {message}")

    def walk(value: Any, key: str) -> None:
        if isinstance(value, str) and "${" in value:
            refuse(key, f"is an interpolation {value!r}; a stored config must hold plain values.")
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{key}[{i}]")
        if not isinstance(value, dict):
            return
        for k, v in value.items():
            sub = f"{key}.{k}"
            walk(k, sub)
            if k in _HYDRA_VALUES and v not in _HYDRA_VALUES[k]:
                refuse(sub, f"is {v!r}; a stored config may give it only {list(_HYDRA_VALUES[k])}.")
            walk(v, sub)
            if k == "_target_":
                if not isinstance(v, str):
                    refuse(sub, f"is a {type(v).__name__}, not a dotted name.")
                try:
                    _resolve_target(v, namespaces)
                except _Refused as why:
                    hint = "" if "never built" in str(why) else fix
                    refuse(sub, f"is {v!r}, which a stored config may not build: {why}.{hint}")

    walk(node, "")


def instantiate_stored(node: Any, key: str, where: str, **kwargs: Any) -> Any:
    """:func:`instantiate_node` for a node of a config read from a file (a checkpoint).

    The node passes :func:`check_targets` first, and its arguments reach the built
    objects as plain ``dict``/``list`` (Hydra's ``_convert_="all"``), so no code reads
    a crafted mapping through attribute access as if it were a typed object.

    Args:
        node: The stored node (``run.model``, ``run.data``...).
        key: Its key in the run config, named in errors.
        where: What the config is, for messages (``"the config stored in run.ckpt"``).
        **kwargs: Objects passed to the target (``net=``...).

    Raises:
        ConfigError: A refused target (see :func:`check_targets`), or a failed build.

    Example:
        >>> datamodule = instantiate_stored(run.data, "data", "the config stored in best.ckpt")
    """
    check_targets({key: node}, where)
    return instantiate_node(node, key, _convert_="all", **kwargs)
