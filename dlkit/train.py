"""``dlkit-train``: compose the config, build everything by ``_target_``, fit, test.

Wiring only: every object comes from ``conf/`` (``dlkit-train --cfg job`` shows the
composed config). Heavy imports happen inside :func:`train`, so ``--help`` and
``--cfg`` answer without loading torch.

Examples::

    dlkit-train                                   # experiment=lenet_digits
    dlkit-train model.variant=modern optimizer=sgd optimizer.lr=0.05
    dlkit-train experiment=mlp_diabetes trainer.max_epochs=50
    dlkit-train debug=fdr                         # one batch of everything
    dlkit-train ckpt_path=logs/lenet_digits/runs/2026-11-22_10-00-00   # resume
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from dlkit.checkpoint import resolve_ckpt_path
from dlkit.config import fill_model_from_data, instantiate_dict, instantiate_node, validate_config
from dlkit.run_output import route_lightning_logs, write_metrics_json

__all__ = ["main", "train"]

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Run one training job described by a composed ``train.yaml`` config.

    Args:
        cfg: The composed config (``hydra.compose`` in tests, ``@hydra.main`` on the CLI).

    Returns:
        ``(metrics, objects)``: the final ``train/val/test`` metrics (also written to
        ``<output_dir>/metrics.json`` with the wall time), and the built objects
        (``datamodule``, ``task``, ``trainer``) for callers that want to look further.

    Raises:
        dlkit.config.ConfigError: A bad value (key, value and allowed values named),
            or a ``ckpt_path`` that does not exist, raised before any training starts.
    """
    validate_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    started = time.perf_counter()

    import lightning as L

    route_lightning_logs()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_node(cfg.data, "data")
    fill_model_from_data(cfg, datamodule)
    net = instantiate_node(cfg.model, "model")
    optimizer = instantiate_node(cfg.optimizer, "optimizer")
    scheduler = instantiate_node(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    loss = instantiate_node(cfg.loss, "loss") if cfg.get("loss") else None
    task = instantiate_node(cfg.task, "task", net=net, optimizer=optimizer, scheduler=scheduler, loss=loss)
    # Stored in every checkpoint, so dlkit-eval can rebuild the run from the file alone.
    task.run_config = _resolved(cfg)
    if hasattr(datamodule, "example_input"):
        task.example_input_array = datamodule.example_input()

    callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate_node(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)

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

    wall = time.perf_counter() - started
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        write_metrics_json(output_dir / "metrics.json", metrics, wall_time_s=round(wall, 3),
                           epochs=trainer.current_epoch, task_name=cfg.task_name)
        _log_hparams(cfg, loggers, metrics)
        print(f"\n{cfg.task_name}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/"))
              + f" | wall time {wall:.1f} s | run folder {output_dir}")
    return metrics, {"datamodule": datamodule, "task": task, "trainer": trainer}


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain, resolved containers, without Hydra's own ``hydra`` node."""
    run_keys = [k for k in cfg if k != "hydra"]
    container = OmegaConf.to_container(OmegaConf.masked_copy(cfg, run_keys), resolve=True)
    assert isinstance(container, dict)
    return container  # type: ignore[return-value]


def _numbers(metrics: Any) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _log_hparams(cfg: DictConfig, loggers: list[Any], metrics: dict[str, float]) -> None:
    """Give TensorBoard's HPARAMS tab this run's choices and its final metrics."""
    if not loggers:
        return
    container = _resolved(cfg)
    params = {k: container.get(k) for k in ("model", "optimizer", "scheduler", "loss", "task", "seed", "tags")}
    params["data"] = {k: v for k, v in container["data"].items() if k != "_target_"} | {"name": cfg.data._target_}
    params["trainer"] = {"max_epochs": cfg.trainer.get("max_epochs"), "precision": cfg.trainer.get("precision")}
    # A separate tag namespace keeps these step-0 copies apart from the logged curves.
    final = {f"hp/{k}": v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and final:
            logger.log_hyperparams(params, metrics=final)
        else:
            logger.log_hyperparams(params)
        logger.save()


@hydra.main(version_base="1.3", config_path="pkg://dlkit.conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


def main() -> None:
    """Console entry point ``dlkit-train``."""
    _hydra_main()


if __name__ == "__main__":
    main()
