"""``dlkit-train``: compose the config, build everything by ``_target_``, fit, test.

Wiring only: every object comes from ``conf/`` (``dlkit-train --cfg job`` shows the
composed config). Heavy imports happen inside :func:`train`, so ``--help`` and
``--cfg`` answer without loading torch.

Examples::

    dlkit-train                                   # experiment=lenet_digits
    dlkit-train model.variant=modern optimizer=sgd optimizer.lr=0.05
    dlkit-train experiment=mlp_diabetes trainer.max_epochs=50
    dlkit-train debug=fdr                         # one batch of everything
    dlkit-train ckpt_path=last                    # resume the newest run, in its folder
    dlkit-train ckpt_path=logs/lenet_digits/runs/2026-11-22_10-00-00_000000   # or a given one
    dlkit-train experiment=finetune_digits        # pretrains first when its checkpoint is missing
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra_plugins.dlkit_optuna_sweeper.dlkit_optuna_sweeper import DlkitOptunaSweeper
from omegaconf import DictConfig, OmegaConf, open_dict

from dlkit.checkpoint import atomic_torch_save, load_checkpoint_file
from dlkit.config import compose_config
from dlkit.config import ConfigError, fill_model_from_data, instantiate_dict, instantiate_node, instantiate_trainer
from dlkit.distributed import ddp_multirun_job
from dlkit.resume import RunFolderLock, check_resume, resume_checkpoint, run_folder_of
from dlkit.overrides import hint_on_unknown_keys
from dlkit.run_output import (
    check_finite_metrics,
    records_failure,
    route_lightning_logs,
    run_hparams,
    write_metrics_json,
)
from dlkit.speed import check_precision, compile_network, pin_memory_for, use_channels_last
from dlkit.validation import check_checkpoint_file, check_factory_arguments, check_model_fits_data, validate_config

__all__ = ["main", "prepare_pretrained", "resume_overrides", "train"]

log = logging.getLogger(__name__)


@records_failure("train.log")
def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Run one training job described by a composed ``train.yaml`` config.

    Args:
        cfg: The composed config (``hydra.compose`` in tests, ``@hydra.main`` on the CLI).

    Returns:
        ``(metrics, objects)``: the final ``train/val/test`` metrics (also written to
        ``<output_dir>/metrics.json`` with the wall time), and the built objects
        (``datamodule``, ``task``, ``trainer``) for callers that want to look further.

    Raises:
        dlkit.config.ConfigError: A bad value (key, value and allowed values named), a
            model that does not fit the data, or a ``ckpt_path`` that does not exist or is
            not a checkpoint, raised before any training starts.
        dlkit.data.checks.DataError: Labels or values the task cannot use (batch and sample named).
        dlkit.run_output.NonFiniteLossError: A NaN/inf loss (the step named) or final metric.

    A ``pretrain`` node (``ckpt_path``, ``experiment``, ``overrides``) names the
    checkpoint a null ``model.pretrained`` starts from; when that file is missing,
    :func:`prepare_pretrained` makes it first, in this process.

    Whatever the error, the run folder records it (``metrics.json`` ``"status": "failed"``,
    the traceback in ``train.log``) before it propagates; a finished run says ``"status": "ok"``.
    """
    validate_config(cfg)
    ckpt_path = _checkpoint_to_resume(cfg)
    if ckpt_path:
        check_checkpoint_file(ckpt_path)
    prepare_pretrained(cfg)
    started = time.perf_counter()

    import lightning as L

    route_lightning_logs()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_node(cfg.data, "data")
    check_model_fits_data(cfg, datamodule)
    fill_model_from_data(cfg, datamodule)
    _refuse_changed_settings(cfg, ckpt_path)
    net = instantiate_node(cfg.model, "model")
    optimizer = instantiate_node(cfg.optimizer, "optimizer")
    scheduler = instantiate_node(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    # Both are called only once Lightning sets up the model: their arguments are checked now.
    check_factory_arguments(optimizer, "optimizer")
    check_factory_arguments(scheduler, "scheduler", own=("interval",))
    loss = instantiate_node(cfg.loss, "loss") if cfg.get("loss") else None
    task = instantiate_node(cfg.task, "task", net=net, optimizer=optimizer, scheduler=scheduler, loss=loss)
    use_channels_last(net, cfg.get("channels_last", "auto"), cfg.trainer.get("accelerator"))
    if cfg.get("compile"):
        compile_network(net)
    check_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
    # Stored in every checkpoint, so dlkit-eval can rebuild the run from the file alone.
    task.run_config = _resolved(cfg)
    if hasattr(datamodule, "example_input"):
        task.example_input_array = datamodule.example_input()
        if hasattr(task, "check_example_input"):  # the network runs once on it: a mismatch fails here
            task.check_example_input(task.example_input_array, f"data {type(datamodule).__name__}")

    callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
    callbacks += task.default_callbacks(callbacks) if hasattr(task, "default_callbacks") else []
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    # TensorBoard's HPARAMS row of this run, written when it starts (by target: --help imports no Lightning).
    callbacks.append(instantiate_node({"_target_": "dlkit.callbacks.HParamsSession", "hparams": run_hparams(cfg),
                                       "_convert_": "all"}, "callbacks.hparams"))
    trainer: L.Trainer = instantiate_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    pin_memory_for(datamodule, trainer)
    if cfg.get("find_lr"):
        _find_lr(cfg, task, datamodule, loggers)

    metrics: dict[str, float] = {}
    if cfg.get("train"):
        log.info("Training %s on %s", cfg.model.get("name", cfg.model.get("_target_")), cfg.data._target_)
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(_numbers(trainer.callback_metrics))
    if cfg.get("test"):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if cfg.get("train") else ckpt_path
        if not best:
            log.warning("No best checkpoint (checkpointing off or fast_dev_run): testing the current weights.")
        trainer.test(task, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(_numbers(trainer.callback_metrics))

    watched = [k for k in metrics if k.endswith("loss") or k == cfg.get("optimized_metric")]
    check_finite_metrics(metrics, watched, "at the end of the run")
    wall = time.perf_counter() - started
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        write_metrics_json(output_dir / "metrics.json", metrics, status="ok", wall_time_s=round(wall, 3),
                           epochs=trainer.current_epoch, task_name=cfg.task_name)
        print(f"\n{cfg.task_name}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/"))
              + f" | wall time {wall:.1f} s | run folder {output_dir}")
    return metrics, {"datamodule": datamodule, "task": task, "trainer": trainer}


def prepare_pretrained(cfg: DictConfig) -> Path | None:
    """The ``pretrain`` step: point a null ``model.pretrained`` at ``pretrain.ckpt_path``, made if missing.

    When the file is missing it is made by a training of its own, ``dlkit-train
    experiment=<pretrain.experiment> <pretrain.overrides>``, composed and run in this
    process with this run's ``paths.log_dir`` and ``paths.data_dir`` (none of this run's
    other overrides: it is another experiment, and its checkpoint is shared by every run
    that names it). That run gets its own run folder; its best checkpoint is written to
    ``pretrain.ckpt_path`` atomically (a crash leaves no truncated file), so the next run
    finds it and skips the training. Hydra's global state is restored afterwards, so this
    run's ``${hydra:...}`` values still resolve to its own. Like the model keys filled
    from the data, the filled ``model.pretrained`` is part of the stored run config; a
    ``model.pretrained`` the user sets wins, and nothing is pretrained.

    Args:
        cfg: A composed ``train.yaml`` config; without a ``pretrain`` node nothing happens.

    Returns:
        The checkpoint ``model.pretrained`` now names, or None when the step did nothing.

    Raises:
        ConfigError: A ``pretrain`` node without ``ckpt_path`` or ``experiment``, a
            pretraining run that itself needs a missing pretrained checkpoint, or one that
            saved no best checkpoint (checkpointing off).

    Example:
        >>> cfg = compose_config("train", ["experiment=finetune_digits"])
        >>> prepare_pretrained(cfg)  # trains experiment=pretrain_digits_0to4 the first time
        PosixPath('logs/pretrained/lenet5_digits_0to4.ckpt')
        >>> cfg.model.pretrained
        'logs/pretrained/lenet5_digits_0to4.ckpt'
    """
    node = cfg.get("pretrain")
    if not node:
        return None
    if cfg.model.get("pretrained"):
        log.info("model.pretrained=%s is set: the pretrain step is skipped.", cfg.model.pretrained)
        return None
    for key in ("ckpt_path", "experiment"):
        if not node.get(key):
            raise ConfigError(f"pretrain.{key} is required by the pretrain step (got {node.get(key)!r}); "
                              "set it, or pretrain=null to start without one.")
    target = Path(node.ckpt_path)
    if target.is_file():
        log.info("Pretrained checkpoint %s found: no pretraining.", target)
    else:
        _pretrain(cfg, node, target)
    with open_dict(cfg):
        cfg.model.pretrained = str(target)
    return target


def _pretrain(cfg: DictConfig, node: DictConfig, target: Path) -> None:
    """Train ``node.experiment`` in this process and write its best checkpoint to ``target``."""
    overrides = [f"experiment={node.experiment}", f"paths.log_dir='{cfg.paths.log_dir}'",
                 f"paths.data_dir='{cfg.paths.data_dir}'", *(node.get("overrides") or [])]
    print(f"No pretrained checkpoint at {target}: pretraining first ({' '.join(overrides)}).")
    hydra_state = Singleton.get_state()
    try:
        pre_cfg = compose_config("train", overrides)
        inner = pre_cfg.get("pretrain")
        if inner and not pre_cfg.model.get("pretrained") and not Path(inner.get("ckpt_path") or "").is_file():
            raise ConfigError(
                f"pretrain.experiment={node.experiment} needs a pretrained checkpoint of its own "
                f"({inner.get('ckpt_path')}), which is missing: make it first with "
                f"dlkit-train experiment={node.experiment}."
            )
        with RunFolderLock(pre_cfg.paths.output_dir):
            _, objects = train(pre_cfg)
    finally:
        Singleton.set_state(hydra_state)
    best = getattr(objects["trainer"].checkpoint_callback, "best_model_path", "")
    if not best:
        raise ConfigError(
            f"The pretraining run (experiment={node.experiment}) saved no best checkpoint to copy to "
            f"{target}: keep callbacks.model_checkpoint and fast_dev_run off in pretrain.overrides."
        )
    atomic_torch_save(load_checkpoint_file(best), target)
    log.info("Pretrained checkpoint written to %s (from %s).", target, best)


def _find_lr(cfg: DictConfig, task: Any, datamodule: Any, loggers: list[Any]) -> None:
    """``+find_lr=true`` (or ``+find_lr.<option>=...``): the LR range test before training.

    Prints the suggestion, writes ``lr_find.png`` to the run folder and to TensorBoard
    (``lr_find``), and with ``apply: true`` trains with the suggested rate.
    """
    node = cfg.find_lr
    options = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {}
    if not isinstance(options, dict):
        raise ConfigError(f"find_lr must be true or a mapping of find_lr options, got {node!r}.")
    apply = bool(options.pop("apply", False))
    result = task.find_lr(datamodule, **options)
    png = result.save_plot(Path(cfg.paths.output_dir) / "lr_find.png")
    for logger in loggers:
        if hasattr(getattr(logger, "experiment", None), "add_figure"):
            logger.experiment.add_figure("lr_find", result.figure(), global_step=0)
    suggestions = ", ".join(f"{k} {v:.3g}" for k, v in result.suggestions.items())
    print(f"LR finder: suggested lr {result.suggestion:.3g} ({result.method}; {suggestions}); plot {png}")
    if apply:
        task.optimizer_factory = functools.partial(task.optimizer_factory, lr=result.suggestion)
        task.run_config["optimizer"]["lr"] = result.suggestion
        log.info("Training with the suggested learning rate %.3g.", result.suggestion)


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain, resolved containers, without Hydra's own ``hydra`` node."""
    run_keys = [k for k in cfg if k != "hydra"]
    container = OmegaConf.to_container(OmegaConf.masked_copy(cfg, run_keys), resolve=True)
    assert isinstance(container, dict)
    return container  # type: ignore[return-value]


def _numbers(metrics: Any) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _runs_dir(cfg: DictConfig) -> Path:
    """Where this task's run folders live (``logs/<task_name>/runs``): what ``ckpt_path=last`` searches."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = OmegaConf.select(cfg, "hydra.run.dir", default=None)
    if run_dir is None and HydraConfig.initialized():
        run_dir = HydraConfig.get().run.dir
    return Path(run_dir).parent if run_dir else Path(cfg.paths.log_dir) / cfg.task_name / "runs"


def _checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """The checkpoint ``trainer.fit`` continues from (see :func:`dlkit.resume.resume_checkpoint`)."""
    return resume_checkpoint(cfg.get("ckpt_path"), cfg.paths.output_dir, _runs_dir(cfg))


def _refuse_changed_settings(cfg: DictConfig, ckpt_path: str | None) -> None:
    """Refuse a resume whose settings differ from the stored run's (see :func:`dlkit.resume.check_resume`)."""
    if ckpt_path and cfg.get("train"):
        check_resume(ckpt_path, _resolved(cfg))


def resume_overrides(args: list[str]) -> list[str]:
    """Command-line overrides that make ``dlkit-train ckpt_path=...`` continue a run in its own folder.

    With ``ckpt_path=last``, a run folder or a checkpoint inside one (and training on),
    the run folder becomes Hydra's run directory (``hydra.run.dir``), so the resumed
    run appends to the same TensorBoard files, checkpoints and ``train.log``, and
    ``last`` is replaced by the folder it means (the newest run of the composed
    ``task_name``). A folder another process is running in is refused before Hydra
    writes anything there. Anything else is returned unchanged: no ``ckpt_path``,
    a checkpoint outside any run folder (a new run starts from its state), Hydra flags
    (``-m``, ``--cfg``...), or an explicit ``hydra.run.dir``.

    Args:
        args: The command line after the program name.

    Returns:
        The command line to hand to Hydra.

    Raises:
        dlkit.resume.RunFolderInUseError: The run folder is in use.
        ConfigError: ``ckpt_path=last`` with no run to resume.

    Example:
        >>> resume_overrides(["experiment=mlp_digits", "ckpt_path=last"])
        ['experiment=mlp_digits', 'ckpt_path=logs/mlp_digits/runs/2026-11-22_10-00-00_000000',
         "hydra.run.dir='logs/mlp_digits/runs/2026-11-22_10-00-00_000000'"]
    """
    keys = [a.partition("=")[0].lstrip("+") for a in args]
    if "ckpt_path" not in keys or "hydra.run.dir" in keys or any(a.startswith("-") for a in args):
        return args
    value = args[len(keys) - 1 - keys[::-1].index("ckpt_path")].partition("=")[2]
    if value in ("", "null", "None"):
        return args
    try:
        cfg = compose_config("train", args)
    except Exception:  # a bad override: Hydra reports it when it composes the same arguments
        return args
    if not cfg.get("train"):
        return args  # testing a checkpoint is not a resume
    folder = run_folder_of(value, _runs_dir(cfg))
    if folder is None:
        return args
    RunFolderLock(folder).check()
    if value == "last":
        args = [f"ckpt_path='{folder}'" if k == "ckpt_path" else a for a, k in zip(args, keys)]
    return [*args, f"hydra.run.dir='{folder}'"]


@hydra.main(version_base="1.3", config_path="pkg://dlkit.conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    # One process per run folder: a second one gets RunFolderInUseError. The processes
    # a multi-process strategy launches into the same folder share rank zero's claim.
    # In a -m sweep, ddp children run this job alone and it leaves no rank state behind
    # for the next job (Lightning #11300, see dlkit.distributed).
    rank_zero = all(os.environ.get(k, "0") in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK"))
    with RunFolderLock(cfg.paths.output_dir) if rank_zero else nullcontext(), ddp_multirun_job(cfg):
        metrics, _ = train(cfg)
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


def main() -> None:
    """Console entry point ``dlkit-train``."""
    # An editable install hides hydra_plugins from Hydra's plugin scan: register dlkit's sweeper itself.
    Plugins.instance().register(DlkitOptunaSweeper)
    sys.argv[1:] = resume_overrides(sys.argv[1:])
    with hint_on_unknown_keys(sys.argv[1:], "train"):
        _hydra_main()


if __name__ == "__main__":
    main()
