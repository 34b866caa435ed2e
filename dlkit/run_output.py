"""What a command-line run leaves behind and prints: ``metrics.json``, log routing, failures,
and the short list of hparams that tells runs apart (:func:`run_hparams`).

Used by ``dlkit-train`` and ``dlkit-eval``; imports neither torch nor Lightning.

A run's ``metrics.json`` says ``"status": "ok"`` when it finished, and ``"status":
"failed"`` with the ``"error"`` (its first line) when it raised; the traceback goes to the
run's log file (``train.log`` / ``eval.log``, Hydra's job log under the command line), so
sweeps and scripts can tell the two apart without reading logs. A run an Optuna search
stopped (``optuna.TrialPruned``) says ``"status": "pruned"``, without a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from dlkit.config import group_options

__all__ = [
    "NonFiniteLossError",
    "check_finite_metrics",
    "record_failure",
    "run_hparams",
    "records_failure",
    "route_lightning_logs",
    "write_metrics_json",
]

log = logging.getLogger(__name__)
RunFn = TypeVar("RunFn", bound=Callable[..., Any])
# Hydra's default job-log line format, for a log file written outside Hydra.
_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class NonFiniteLossError(FloatingPointError):
    """A loss or metric became NaN or infinite; the message names the step and the likely cause."""


# Lightning start-up notes that say nothing about this run: advertisements, the absence
# of accelerators on a CPU-only machine, and the default summary dlkit's replaces.
_NOISE = re.compile(
    r"^\W*Tip:|^GPU available: False, used: False$|^TPU available: False, using: 0 TPU cores$"
    r"|^Trainer already configured with model summary callbacks"
)


class _QuietStart(logging.Filter):
    """Drops the records of :data:`_NOISE`; a GPU that exists or is used is still reported."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _NOISE.search(record.getMessage())


class _CurrentStream:
    """Writes to whatever ``sys.stdout`` (or ``sys.stderr``) is at the time of the write.

    A live progress bar (Rich) swaps ``sys.stdout`` for a proxy that prints above the
    bar; a handler that kept the original stream would write through the bar, whose
    next redraw erases the line.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()


def route_lightning_logs() -> None:
    """Send Lightning's log lines through the root logger only (once, to console and file), minus its noise.

    Lightning gives its loggers their own console handler; under Hydra, which logs the
    root logger to the console and to ``<run>/<job>.log``, every line would show twice.
    Lightning's version-mismatch ``LeafSpec`` deprecation warning is silenced too:
    it is about Lightning's internals, and users can do nothing about it. So are its
    "Tip:" advertisements, "GPU available: False" / "TPU available: False" on a machine
    without them (a GPU that exists or is used is still reported) and the note that
    the Trainer's default model summary was not added (dlkit's
    :class:`~dlkit.callbacks.ModelSummary` replaces it), by a filter on Lightning's
    ``rank_zero`` loggers, which write these notes. The root logger's console handler
    writes to the current ``sys.stdout``, so a live progress bar keeps log lines (the
    per-epoch ones) above it instead of drawing over them.

    Example:
        >>> route_lightning_logs()  # before building the Trainer
    """
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietStart) for f in logger.filters):
            logger.addFilter(_QuietStart())
    root = logging.getLogger()
    if not root.handlers:
        return
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:  # the console, not a file or a test's capture
            stream = handler.stream
            name = "stdout" if stream in (sys.stdout, sys.__stdout__) else "stderr" if stream in (
                sys.stderr, sys.__stderr__) else None
            if name:
                handler.setStream(_CurrentStream(name))  # type: ignore[arg-type]
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


def check_finite_metrics(metrics: Mapping[str, Any], keys: Iterable[str], when: str) -> None:
    """Raise :class:`NonFiniteLossError` when one of ``keys`` in ``metrics`` is NaN or infinite.

    Args:
        metrics: Metric name -> number or 0-d tensor (``trainer.callback_metrics``).
        keys: The names to check; absent ones are skipped.
        when: Where in the run, for the message (``"after validation at epoch 3"``).

    Example:
        >>> check_finite_metrics({"val/loss": 0.3, "val/acc": 0.9}, ["val/loss"], "at the end")
    """
    bad = {k: float(metrics[k]) for k in dict.fromkeys(keys) if k in metrics}
    bad = {k: v for k, v in bad.items() if not math.isfinite(v)}
    if bad:
        listed = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(
            f"{listed} {when}: training diverged or the data hold NaN/inf. Lower optimizer.lr, clip gradients "
            "(trainer.gradient_clip_val=1.0), or check the data."
        )


def _is_rank_zero() -> bool:
    # The variables Lightning's rank_zero_only reads, in its order.
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return True


def record_failure(output_dir: Path, error: BaseException, log_name: str = "train.log", **extra: Any) -> dict[str, Any]:
    """Mark a run as failed: its traceback in the run's log, ``"status": "failed"`` in ``metrics.json``.

    Under Hydra the traceback goes to the job log it keeps in ``output_dir``; otherwise
    it is appended to ``output_dir / log_name`` in Hydra's line format. An
    ``optuna.TrialPruned`` error marks the run ``"status": "pruned"`` and logs one line.

    Args:
        output_dir: The run folder (created if missing).
        error: The exception that ended the run.
        log_name: The log file to use when no handler writes one into ``output_dir``.
            Defaults to ``"train.log"``.
        **extra: Further ``metrics.json`` fields (``wall_time_s``, ``task_name``).

    Returns:
        What was written to ``metrics.json``.

    Example:
        >>> record_failure(Path("run"), ValueError("data.batch_size must be ..."))["status"]
        'failed'
    """
    lines = str(error).strip().splitlines()
    first = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    output_dir.mkdir(parents=True, exist_ok=True)
    # Known by name, so this module needs no optuna: a pruned run did what the search asked.
    pruned = type(error).__name__ == "TrialPruned"
    record = logging.LogRecord("dlkit", logging.INFO if pruned else logging.ERROR, __file__, 0,
                               "Run pruned: %s" if pruned else "Run failed: %s", (first,),
                               None if pruned else (type(error), error, error.__traceback__))
    folder = output_dir.resolve()
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().parent == folder]
    if handlers:
        for handler in handlers:
            handler.handle(record)
    else:
        handler = logging.FileHandler(output_dir / log_name)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler.handle(record)
        handler.close()
    return write_metrics_json(output_dir / "metrics.json", {}, status="pruned" if pruned else "failed", error=first,
                              **extra)


def records_failure(log_name: str) -> Callable[[RunFn], RunFn]:
    """Decorate a run function ``f(cfg, ...)`` so that a failure is recorded in its run folder.

    When ``f`` raises (any exception, ``KeyboardInterrupt`` included), :func:`record_failure`
    writes to ``cfg.paths.output_dir`` (on rank 0 only), and the exception goes on, so the
    command exits non-zero.

    Args:
        log_name: The run's log file name (``"train.log"``).

    Example:
        >>> @records_failure("train.log")
        ... def train(cfg): ...
    """

    def wrap(fn: RunFn) -> RunFn:
        @functools.wraps(fn)
        def run(cfg: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(cfg, *args, **kwargs)
            except BaseException as err:
                if _is_rank_zero():
                    _record_quietly(cfg, err, log_name, round(time.perf_counter() - started, 3))
                raise

        return run  # type: ignore[return-value]

    return wrap


def _record_quietly(cfg: Any, error: BaseException, log_name: str, wall_time_s: float) -> None:
    # Recording must never hide the error that ended the run.
    try:
        output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
        if output_dir:
            record_failure(Path(output_dir), error, log_name, wall_time_s=wall_time_s,
                           task_name=OmegaConf.select(cfg, "task_name", default=None))
    except Exception as err:  # noqa: BLE001
        log.warning("Could not record the failure in the run folder: %s", err)


# Shown for every run, whether or not it set them.
HEADLINE_KEYS = ("model.name", "optimizer.lr", "data.batch_size", "trainer.max_epochs", "seed", "trainer.precision")
# Overrides that describe where a run writes, not what it is.
_NOT_HPARAMS = ("hydra.", "paths.", "ckpt_path", "callbacks.rich_progress_bar", "callbacks.model_summary")

HParam = bool | int | float | str


def _readable(value: Any) -> HParam:
    """A value TensorBoard can show in a column: numbers, booleans and text as they are, the rest as text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "none"
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if k not in ("_target_", "_partial_"))
    return str(value)


def _hydra_node(cfg: DictConfig) -> Any:
    """The run's Hydra node: in the config when composed in-process, else Hydra's global one."""
    node = OmegaConf.select(cfg, "hydra", default=None)
    if node is not None:
        return node
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def run_hparams(cfg: DictConfig) -> dict[str, HParam]:
    """The short list of what makes this run different: for the HPARAMS tab and ``hparams.yaml``.

    In this order: the option chosen in every config group (``model=lenet5``,
    ``optimizer=adam``, ``callbacks=default,freezing``; Hydra's own groups left out), every
    key set on the command line (its resolved value), then :data:`HEADLINE_KEYS`. Values
    are numbers, booleans or text; ``None`` is ``"none"``, a list is joined with commas.

    Args:
        cfg: The composed run config (``dlkit-train``'s or :func:`dlkit.config.compose_config`'s).

    Returns:
        ``{name: value}``, e.g. ``{"model": "lenet5", ..., "optimizer.lr": 0.002, ...}``.

    Example:
        >>> from dlkit.config import compose_config
        >>> run_hparams(compose_config("train", ["optimizer.lr=0.002"]))["optimizer.lr"]
        0.002
    """
    hydra = _hydra_node(cfg)
    params: dict[str, HParam] = {}
    choices = OmegaConf.select(hydra, "runtime.choices", default=None) if hydra is not None else None
    for group, option in (choices or {}).items():
        if not str(group).startswith("hydra"):
            params[str(group)] = _readable(option)
    overrides: Iterable[str] = OmegaConf.select(hydra, "overrides.task", default=None) or [] if hydra is not None else []
    for text in overrides:
        key = text.partition("=")[0].lstrip("+~").split("@")[0]
        if key in params or text.startswith("~") or key.startswith(_NOT_HPARAMS):
            continue
        value = text.partition("=")[2]
        if group_options(key):  # a group Hydra keeps no choice for (a list: callbacks=[default,freezing])
            params[key] = value.strip("[]")
        else:
            params[key] = _readable(OmegaConf.select(cfg, key, default=value))
    for key in HEADLINE_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and key not in params:
            params[key] = _readable(value)
    return params
