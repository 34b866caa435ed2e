"""Validation before work: the config schema, model/data agreement, checkpoint files.

Everything here runs before data, network or trainer exist, so a typo costs a second,
not a crashed run: :func:`validate_config` checks the types, ranges and required keys of
every config group against :data:`SCHEMA`; :func:`check_model_fits_data` compares the
model's settings with what the DataModule says about its data (``model_hints()``);
:func:`check_checkpoint_file` tells an empty, truncated or foreign file from a checkpoint
without unpickling it. Every error is a :class:`~dlkit.config.ConfigError` naming the
key (or file), the value and what is allowed.

Like :mod:`dlkit.config`, this module imports neither torch nor Lightning (torch only to
count the GPUs of a run that asks for more than one device).
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlkit.config import ConfigError

__all__ = [
    "PRECISIONS",
    "SCHEMA",
    "TRAIN_REQUIRED",
    "Rule",
    "check_checkpoint_file",
    "check_devices",
    "check_factory_arguments",
    "check_model_fits_data",
    "check_options",
    "check_value",
    "validate_config",
]


@dataclass(frozen=True)
class Rule:
    """What a config value may be: ``accepts(value)`` and the words for it (``"an integer > 0"``)."""

    allowed: str
    accepts: Callable[[Any], bool]
    nullable: bool = True

    def check(self, key: str, value: Any) -> str | None:
        """The error line for ``value`` at ``key``, or None when it is allowed."""
        if value is None and self.nullable:
            return None
        if value is not None and self.accepts(value):
            return None
        if value is None or value == "???":
            return f"{key} is required: it must be {self.allowed} (got {'null' if value is None else '???'})."
        return f"{key} must be {self.allowed}, got {value!r}."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    return f" {'<' if high_open else '<='} {high}" if high is not None else ""


def _within(v: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    return (low is None or (v > low if low_open else v >= low)) and (high is None or (v < high if high_open else v <= high))


def _int(low: int | None = None, high: int | None = None, also: tuple[int, ...] = (), nullable: bool = True) -> Rule:
    words = "an integer" + (_bounds(0, None, True, False) if low == 1 and high is None else _bounds(low, high, False, False))
    words += f" (or {', '.join(map(str, also))})" if also else ""
    return Rule(words, lambda v: _is_int(v) and (v in also or _within(v, low, high, False, False)), nullable)


def _num(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
         nullable: bool = True) -> Rule:
    bounds = _bounds(low, high, low_open, high_open)
    words = f"a number{bounds}" if low is not None and high is not None else (
        f"{bounds.strip()} and finite" if bounds else "a finite number")
    return Rule(words, lambda v: _is_number(v) and _within(v, low, high, low_open, high_open), nullable)


def _choice(*values: Any, nullable: bool = True) -> Rule:
    words = repr(values[0]) if len(values) == 1 else f"one of {', '.join(map(repr, values))}"
    return Rule(words, lambda v: any(type(v) is type(a) and v == a for a in values),
                nullable)


def _list_of(item: Rule, length: int | None = None, words: str = "") -> Rule:
    def accepts(v: Any) -> bool:
        return isinstance(v, Sequence) and not isinstance(v, str) and (length is None or len(v) == length) and all(
            x is not None and item.accepts(x) for x in v)
    plural = item.allowed.replace("an integer", "integers").replace("a number", "numbers")
    return Rule(words or f"a list of {plural}", accepts)


def _either(*rules: Rule, nullable: bool = True) -> Rule:
    return Rule(", or ".join(r.allowed for r in rules), lambda v: any(r.accepts(v) for r in rules), nullable)


_BOOL = Rule("true or false", lambda v: isinstance(v, bool))
_TEXT = Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
_PROBABILITY = _num(0, 1, high_open=True)
_POSITIVE = _num(0, low_open=True)
_NON_NEGATIVE = _num(0)
_SEED = _int(0, 2**32 - 1)
_BATCHES = _either(_int(0), _num(0, 1))  # Lightning's limit_*_batches: a count or a fraction
_MODE = _choice("min", "max")
# One value for every parameter group, or one per group (OneCycleLR's max_lr).
_POSITIVE_OR_PER_GROUP = Rule(
    "a number > 0, or a list of them (one per parameter group)",
    lambda v: _POSITIVE.accepts(v)
    or (isinstance(v, (list, tuple)) and len(v) > 0 and all(_POSITIVE.accepts(x) for x in v)),
)

# Lightning's accepted `precision` values.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", 64, 32, 16, "64", "32", "16", "bf16")

# Key pattern (fnmatch, `*` spans dots) -> rule; the first matching pattern decides.
# Keys no pattern names are left to the object they configure.
SCHEMA: tuple[tuple[str, Rule], ...] = (
    # root
    ("seed", _SEED),
    ("train", _BOOL), ("test", _BOOL), ("compile", _BOOL), ("channels_last", _either(_BOOL, _choice("auto"))),
    ("task_name", _TEXT),
    ("ckpt_path", _TEXT),
    ("split", _choice("test", "val")),
    # trainer
    ("trainer.max_epochs", _int(1, also=(-1,))),
    ("trainer.min_epochs", _int(0)),
    ("trainer.max_steps", _int(1, also=(-1,))),
    ("trainer.min_steps", _int(0)),
    ("trainer.precision", _choice(*PRECISIONS)),
    ("trainer.devices", _either(_int(1, also=(-1,)), _TEXT, _list_of(_int(0)))),
    ("trainer.num_nodes", _int(1)),
    ("trainer.check_val_every_n_epoch", _int(1)),
    ("trainer.log_every_n_steps", _int(0)),
    ("trainer.accumulate_grad_batches", _int(1)),
    ("trainer.gradient_clip_val", _NON_NEGATIVE),
    ("trainer.gradient_clip_algorithm", _choice("norm", "value")),
    ("trainer.num_sanity_val_steps", _int(0, also=(-1,))),
    ("trainer.limit_*_batches", _BATCHES),
    ("trainer.overfit_batches", _BATCHES),
    ("trainer.val_check_interval", _BATCHES),
    ("trainer.fast_dev_run", _either(_BOOL, _int(0))),
    ("trainer.deterministic", _either(_BOOL, _choice("warn"))),
    ("trainer.detect_anomaly", _BOOL), ("trainer.benchmark", _BOOL), ("trainer.enable_*", _BOOL),
    ("trainer.inference_mode", _BOOL), ("trainer.sync_batchnorm", _BOOL),
    # data
    ("data.batch_size", _int(1, nullable=False)),
    ("data.*_fraction", _PROBABILITY),
    ("data.seed", _SEED),
    ("data.num_train", _int(1)), ("data.num_val", _int(0)), ("data.num_test", _int(0)), ("data.val_size", _int(0)),
    ("data.resize", _either(_int(1), _list_of(_int(1), 2, "two integers > 0"))),
    ("data.image_size", _either(_int(1), _list_of(_int(1), 2, "two integers > 0"))),
    ("data.in_chans", _int(1)), ("data.random_crop_padding", _int(0)), ("data.num_workers", _int(0)),
    ("data.max_src_len", _int(1)), ("data.max_tgt_len", _int(1)), ("data.min_freq", _int(1)),
    ("data.max_vocab_size", _int(1)), ("data.min_year", _int()), ("data.max_year", _int()),
    ("data.augment", _BOOL), ("data.hflip", _BOOL), ("data.normalize", _BOOL), ("data.flatten", _BOOL),
    ("data.download", _BOOL), ("data.lowercase", _BOOL), ("data.standardize_target", _BOOL),
    # Normalisation statistics given instead of the data's own (one per channel, or one for all).
    ("data.mean", _either(_num(), _list_of(_num()))), ("data.std", _either(_POSITIVE, _list_of(_POSITIVE))),
    ("data.classes", _list_of(_int(0))), ("data.labels_per_class", _int(1)),
    # model
    ("model.name", _TEXT),
    ("model.num_classes", _int(1)),
    ("model.in_chans", _int(1)), ("model.img_size", _int(1)), ("model.in_features", _int(1)),
    ("model.input_size", _int(1)), ("model.hidden_size", _int(1)), ("model.hidden_sizes", _list_of(_int(1))),
    ("model.num_layers", _int(1)), ("model.num_*_layers", _int(1)), ("model.embed_dim", _int(1)),
    ("model.d_model", _int(1)), ("model.nhead", _int(1)), ("model.dim_feedforward", _int(1)),
    ("model.max_len", _int(1)), ("model.attention_size", _int(1)), ("model.se_reduction", _int(1)),
    ("model.*_vocab_size", _int(1)), ("model.pad_id", _int(0)), ("model.bos_id", _int(0)), ("model.eos_id", _int(0)),
    ("model.padding", _int(0)), ("model.branch3_kernel_size", _int(1)),
    ("model.*drop_rate", _PROBABILITY), ("model.dropout", _PROBABILITY),
    # optimizer
    ("optimizer.lr", _num(0, low_open=True, nullable=False)),
    # Discriminative rates: {min, max} spread over the layer groups, or {max, factor}.
    ("optimizer.lr.min", _num(0, low_open=True, nullable=False)),
    ("optimizer.lr.max", _num(0, low_open=True, nullable=False)),
    ("optimizer.lr.factor", _num(1)),
    ("optimizer.weight_decay", _NON_NEGATIVE),
    ("optimizer.momentum", _PROBABILITY), ("optimizer.dampening", _num(0, 1)),
    ("optimizer.betas", _list_of(_PROBABILITY, 2, "two numbers in [0, 1)")),
    ("optimizer.alpha", _NON_NEGATIVE), ("optimizer.rho", _num(0, 1)), ("optimizer.eps", _POSITIVE),
    ("optimizer.lr_decay", _NON_NEGATIVE), ("optimizer.momentum_decay", _NON_NEGATIVE),
    ("optimizer.nesterov", _BOOL), ("optimizer.amsgrad", _BOOL), ("optimizer.fused", _BOOL),
    ("optimizer.foreach", _BOOL), ("optimizer.maximize", _BOOL),
    # scheduler
    ("scheduler.gamma", _POSITIVE), ("scheduler.step_size", _int(1)),
    ("scheduler.milestones", _list_of(_int(0))),
    ("scheduler.T_max", _int(1)), ("scheduler.T_0", _int(1)), ("scheduler.T_mult", _int(1)),
    ("scheduler.total_steps", _int(1)), ("scheduler.warmup", _int(0)), ("scheduler.cycles", _int(1)),
    ("scheduler.eta_min", _NON_NEGATIVE), ("scheduler.min_lr", _NON_NEGATIVE), ("scheduler.max_lr", _POSITIVE_OR_PER_GROUP),
    ("scheduler.start_factor", _num(0, 1, low_open=True)), ("scheduler.factor", _num(0, 1, True, True)),
    ("scheduler.patience", _int(0)), ("scheduler.pct_start", _num(0, 1)),
    ("scheduler.div_factor", _POSITIVE), ("scheduler.final_div_factor", _POSITIVE),
    ("scheduler.base_momentum", _num(0, 1)), ("scheduler.max_momentum", _num(0, 1)), ("scheduler.d_model", _int(1)),
    ("scheduler.mode", _MODE), ("scheduler.interval", _choice("epoch", "step")),
    # loss
    ("loss.label_smoothing", _PROBABILITY), ("loss.margin", _POSITIVE), ("loss.delta", _POSITIVE),
    ("loss.from_logits", _BOOL),
    # task
    ("task.l1", _NON_NEGATIVE), ("task.l2", _NON_NEGATIVE),
    ("task.monitor", _TEXT), ("task.monitor_mode", _MODE), ("task.scheduler_interval", _choice("epoch", "step")),
    ("task.num_classes", _int(1)), ("task.teacher_forcing", _num(0, 1)), ("task.label_smoothing", _PROBABILITY),
    ("task.beam_size", _int(1)), ("task.length_penalty", _NON_NEGATIVE), ("task.max_decode_len", _int(1)),
    # callbacks
    ("checkpoint.every_n_steps", _int(1)),
    ("callbacks.*.patience", _int(0)), ("callbacks.*.min_delta", _NON_NEGATIVE),
    ("callbacks.*.every_n_epochs", _int(1)), ("callbacks.*.every_n_steps", _int(1)),
    ("callbacks.*.every_n_train_steps", _int(0)), ("callbacks.*.save_top_k", _int(-1)),
    ("callbacks.*.start_from_epoch", _int(0)), ("callbacks.early_stopping.mode", _choice("min", "max", "auto")),
    ("callbacks.model_checkpoint.mode", _choice("min", "max")),
    ("callbacks.freezing.train_from", _int(nullable=False)), ("callbacks.freezing.unfreeze_every", _int(1)),
    ("callbacks.freezing.bn", _choice("inference", "frozen_affine", "train")),
    ("callbacks.*.verbose", _BOOL), ("callbacks.*.save_last", _either(_BOOL, _choice("link"))),
)

# `${some.key}` and nothing else: a value taken from another config key.
_PURE_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][\w.]*\}")

# Keys a train.yaml run cannot do without.
TRAIN_REQUIRED = ("seed", "data._target_", "model._target_", "task._target_", "optimizer._target_", "trainer._target_")


def _rule_for(key: str) -> Rule | None:
    return next((rule for pattern, rule in SCHEMA if fnmatchcase(key, pattern)), None)


def check_value(key: str, value: Any, name: str | None = None) -> None:
    """Raise :class:`ConfigError` when ``value`` breaks the :data:`SCHEMA` rule for ``key``.

    Args:
        key: The dotted config key (``"optimizer.lr"``); keys without a rule pass.
        value: Its value.
        name: How the error names it, when that differs from ``key`` (``"fit(epochs=)"``).

    Example:
        >>> check_value("trainer.max_epochs", 1.5)
        Traceback (most recent call last):
        ConfigError: trainer.max_epochs must be an integer > 0 (or -1), got 1.5.
    """
    rule = _rule_for(key)
    problem = rule.check(name or key, value) if rule is not None else None
    if problem:
        raise ConfigError(problem)


def check_options(group: str, options: Mapping[str, Any]) -> None:
    """:func:`check_value` on every ``group.<key>`` of ``options`` (e.g. ``compile()``'s optimiser keywords).

    Example:
        >>> check_options("optimizer", {"lr": 1e-3, "weight_decay": -1})
        Traceback (most recent call last):
        ConfigError: optimizer.weight_decay must be >= 0 and finite, got -1.
    """
    for key, value in options.items():
        check_value(f"{group}.{key}", value)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def validate_config(cfg: DictConfig, required: Sequence[str] = TRAIN_REQUIRED) -> None:
    """Check a composed config against :data:`SCHEMA` before anything is built.

    Every key a rule names is checked for its type and range (integers are integers,
    probabilities lie in [0, 1), learning rates are finite and > 0, ...), the keys in
    ``required`` must be set, and no value may be left ``???``. All problems are reported
    at once.

    Args:
        cfg: A composed ``train.yaml`` (or ``eval.yaml``) config.
        required: Keys that must be set. Defaults to :data:`TRAIN_REQUIRED`.

    Raises:
        ConfigError: One line per problem, each naming the key, the value and what is allowed.

    Example:
        >>> validate_config(compose_config("train", ["optimizer.lr=inf"]))
        Traceback (most recent call last):
        ConfigError: optimizer.lr must be > 0 and finite, got inf.
    """
    keys = [k for k in cfg if k != "hydra"]
    container = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    leaves = dict(_leaves(container))
    # A value copied from another key (`every_n_steps: ${checkpoint.every_n_steps}`) is
    # reported under the key the user sets.
    raw = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=False)
    assert isinstance(raw, dict)
    source = {k: v[2:-1] for k, v in _leaves(raw) if isinstance(v, str) and _PURE_INTERPOLATION.fullmatch(v)}
    problems = []
    for key in required:
        if leaves.get(key) in (None, "???"):
            problems.append(f"{key} is required (got {leaves.get(key) or 'nothing'}): set it, e.g. {key}=<value>.")
    model = container.get("model")
    builds_by_name = isinstance(model, dict) and model.get("_target_") == "dlkit.models.create_model"
    if builds_by_name and not model.get("name"):
        problems.append("model.name is required: the registered model to build (dlkit.models.list_models()).")
    for key, value in leaves.items():
        if key in required and value in (None, "???"):
            continue
        if value == "???":
            problems.append(f"{key} is required (it is ???): set it, e.g. {key}=<value>.")
            continue
        rule = _rule_for(key)
        problem = rule.check(source.get(key, key), value) if rule is not None else None
        if problem:
            problems.append(problem)
    trainer = container.get("trainer")
    if isinstance(trainer, dict) and not any(p.startswith("trainer.devices ") for p in problems):
        if device_problem := check_devices(trainer):
            problems.append(device_problem)
    problems = list(dict.fromkeys(problems))
    if problems:
        head = "" if len(problems) == 1 else f"{len(problems)} config values are wrong:\n  "
        raise ConfigError(head + "\n  ".join(problems))


# Keras' names for torch's arguments: a Keras user's first guess.
_KERAS_ARGUMENTS = {"learning_rate": "lr", "epsilon": "eps", "beta_1": "betas", "beta_2": "betas", "rho": "alpha"}


def _public_name(obj: Any) -> str:
    """``torch.optim.Adam`` rather than ``torch.optim.adam.Adam``: the shortest package that exports it."""
    import sys

    module, qualname = getattr(obj, "__module__", ""), getattr(obj, "__qualname__", repr(obj))
    parts = module.split(".")
    for end in range(1, len(parts) + 1):
        package = sys.modules.get(".".join(parts[:end]))
        if package is not None and getattr(package, qualname, None) is obj:
            return f"{'.'.join(parts[:end])}.{qualname}"
    return f"{module}.{qualname}"


def check_factory_arguments(factory: Any, key: str, own: Sequence[str] = ()) -> None:
    """Refuse arguments a config gives a class that does not take them, before anything is built.

    An optimiser or scheduler node is a ``functools.partial`` (``_partial_: true``) called
    only once the model exists, so ``+optimizer.learning_rate=0.01`` would fail later,
    in the middle of Lightning's set-up, as a bare ``TypeError``.

    Args:
        factory: What Hydra built from the node (a partial, or a class).
        key: The node's key in the run config (``"optimizer"``), named in the error.
        own: Keys dlkit takes out before the call (a scheduler's ``interval``).

    Raises:
        ConfigError: Names each unknown argument, the class, its real arguments and the
            closest one.

    Example:
        >>> import functools, torch
        >>> check_factory_arguments(functools.partial(torch.optim.Adam, learning_rate=0.01), "optimizer")
        Traceback (most recent call last):
        ConfigError: optimizer.learning_rate is not an argument of torch.optim.Adam (did you mean lr?); ...
    """
    import difflib
    import functools
    import inspect

    if not isinstance(factory, functools.partial):
        return
    target = factory.func
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [n for n, p in parameters.items() if n not in ("self", "params", "optimizer")
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = [k for k in factory.keywords if k not in parameters and k not in own]
    if not unknown:
        return
    name = _public_name(target)
    problems = []
    for arg in unknown:
        alias = _KERAS_ARGUMENTS.get(arg)
        near = [alias] if alias in accepted else difflib.get_close_matches(arg, accepted, n=1, cutoff=0.4)
        guess = f" (did you mean {near[0]}?)" if near else ""
        problems.append(f"{key}.{arg} is not an argument of {name}{guess}; its arguments: {', '.join(accepted)}.")
    raise ConfigError("\n".join(problems))


def _requested_devices(devices: Any) -> int | list[int] | None:
    """Lightning's ``devices`` as a count or a list of indices; ``None`` for "auto" and -1 (all there are)."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        return int(text) if text.isdigit() else None
    if isinstance(devices, bool) or devices is None:
        return None
    if isinstance(devices, int):
        return None if devices == -1 else devices
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    return None


def _cpu_cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_devices(trainer: Mapping[str, Any], cores: int | None = None, gpus: int | None = None) -> str | None:
    """Whether the machine has the devices ``trainer.devices`` asks for, before any process starts.

    On the CPU a device is a process (``trainer=ddp_cpu``), and each needs a core of its
    own; on a GPU it is a CUDA device. ``devices: auto`` or ``-1`` (all there are) always fit.

    Args:
        trainer: The ``trainer`` node (``accelerator``, ``devices``).
        cores: The CPU cores to count with (default: those this process may use).
        gpus: The CUDA devices to count with (default: ``torch.cuda.device_count()``,
            asked only when the run wants a GPU or more than one device).

    Returns:
        ``None`` when they fit, else the problem and its fix.

    Example:
        >>> check_devices({"accelerator": "cpu", "devices": 4}, cores=2)
        'trainer.devices=4 asks for 4 processes on the CPU, but this machine has 2 cores for this run: use trainer.devices=2 or fewer (each process needs a core of its own).'
    """
    wanted = _requested_devices(trainer.get("devices", "auto"))
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    count = len(wanted) if isinstance(wanted, list) else wanted
    if count is None or accelerator not in ("cpu", "gpu", "cuda", "auto") or (accelerator == "auto" and count <= 1):
        return None
    shown = f"trainer.devices={trainer.get('devices')}"
    if accelerator != "cpu" and gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and not gpus:
        return (f"trainer.accelerator={accelerator}, but this machine has no CUDA device: train on the CPU with "
                "trainer=cpu (several processes: trainer=ddp_cpu).")
    if accelerator == "cpu" or not gpus:
        have = cores if cores is not None else _cpu_cores()
        if isinstance(wanted, list):
            return f"{shown} lists device indices, which the CPU does not have: give a number of processes, e.g. trainer.devices={min(count, have)}."
        if count > have:
            return (f"{shown} asks for {count} processes on the CPU, but this machine has {have} cores for this run: "
                    f"use trainer.devices={have} or fewer (each process needs a core of its own).")
        return None
    if isinstance(wanted, list) and max(wanted) >= gpus:
        return f"{shown} names GPU {max(wanted)}, but this machine has GPUs 0-{gpus - 1}: pick indices among them."
    if count > gpus:
        return f"{shown} asks for {count} GPUs, but this machine has {gpus}: use trainer.devices={gpus} or fewer."
    return None


# How a model value must relate to the data's hint: equal, or at least as large.
_HINT_RELATIONS: dict[str, str] = {
    "num_classes": "==", "in_chans": "==", "img_size": "==", "in_features": "==", "input_size": "==",
    "src_vocab_size": ">=", "tgt_vocab_size": ">=", "pad_id": "==", "bos_id": "==", "eos_id": "==",
}
# A set model key that makes others irrelevant: an MLP's `in_features` overrides in_chans * img_size**2.
_SUPERSEDES: dict[str, tuple[str, ...]] = {"in_features": ("in_chans", "img_size")}


def check_model_fits_data(cfg: DictConfig, datamodule: Any) -> None:
    """Compare the model keys a config sets with what the data says (``datamodule.model_hints()``).

    Call it after the DataModule is built and before the network is: ``model.num_classes=5``
    on 10-class data, ``model.in_chans=3`` on grey images or an image classifier on a
    translation data set is reported with both sides named. Keys left ``null`` are not
    compared (:func:`~dlkit.config.fill_model_from_data` fills them).

    Args:
        cfg: The run config (its ``model`` node).
        datamodule: The run's DataModule; without ``model_hints`` nothing is checked.

    Raises:
        ConfigError: Naming the model and data, each mismatched key and both values.

    Example:
        >>> check_model_fits_data(compose_config("train", ["model.num_classes=5"]), DigitsDataModule())
        Traceback (most recent call last):
        ConfigError: model lenet5 does not fit data DigitsDataModule: model.num_classes=5 but the data has 10 ...
    """
    model, hints_of = cfg.get("model"), getattr(datamodule, "model_hints", None)
    if model is None or hints_of is None:
        return
    hints = hints_of()
    sides = f"model {model.get('name') or model.get('_target_')} does not fit data {type(datamodule).__name__}"
    data_keys = [k for k in _HINT_RELATIONS if k in model]
    if hints and data_keys and not any(k in hints for k in data_keys):
        raise ConfigError(
            f"{sides}: the model is set up by {', '.join(data_keys)}, but the data describes "
            f"{', '.join(f'{k}={v}' for k, v in hints.items())} (model_hints()). Choose a model for this kind of "
            "data, or data for this model."
        )
    ignored = {k for key, keys in _SUPERSEDES.items() if model.get(key) is not None for k in keys}
    problems = []
    for key, hint in hints.items():
        value, relation = model.get(key), _HINT_RELATIONS.get(key, "==")
        if key not in model or key in ignored or value is None or hint is None:
            continue
        if value >= hint if relation == ">=" else value == hint:
            continue
        need = f"at least {hint}" if relation == ">=" else str(hint)
        problems.append(f"model.{key}={value} but the data has {key}={hint}: set model.{key}={need}, "
                        "or null to take it from the data")
    if problems:
        raise ConfigError(f"{sides}: " + "; ".join(problems) + ".")


# First bytes of the files torch.save writes: a zip archive (torch >= 1.6) or a bare pickle.
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80"


def check_checkpoint_file(path: str | Path) -> None:
    """Tell an empty, truncated or foreign file from a checkpoint, without unpickling it.

    A checkpoint written by ``torch.save`` is a zip archive with a ``data.pkl`` member
    and a directory at its end (a file cut short loses that directory), or, from old
    torch versions, a bare pickle.

    Args:
        path: The checkpoint file.

    Raises:
        ConfigError: Naming the file, its size and what is wrong with it.

    Example:
        >>> check_checkpoint_file("notes.txt")
        Traceback (most recent call last):
        ConfigError: ckpt_path notes.txt is not a checkpoint: it holds text ('hello'). ...
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ckpt_path {p} does not exist or is not a file.")
    size = p.stat().st_size
    where = f"ckpt_path {p}"
    pick = "Use another checkpoint of the run (its checkpoints/ folder holds the best and the last)."
    if size == 0:
        raise ConfigError(f"{where} is empty (0 bytes): the write that made it never finished. {pick}")
    with p.open("rb") as f:
        head = f.read(64)
    if head.startswith(_PICKLE_MAGIC):
        return
    if not head.startswith(_ZIP_MAGIC):
        try:
            kind = f"it holds text ({head.decode('utf-8')[:40]!r})"
        except UnicodeDecodeError:
            kind = f"its first bytes are {head[:8].hex()}"
        raise ConfigError(f"{where} is not a checkpoint: {kind}, not a torch.save zip archive ({size} bytes). {pick}")
    try:
        with zipfile.ZipFile(p) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ConfigError(
            f"{where} is truncated or damaged ({size} bytes, {err}): a checkpoint is a zip archive whose directory "
            f"is at its end, and this one's is missing. {pick}"
        ) from err
    if not any(n.endswith("data.pkl") for n in names):
        raise ConfigError(f"{where} is a zip archive but not a torch checkpoint (no data.pkl among {names[:5]}).")
