"""``dlkit-eval``: test a checkpoint on the test (or val) split.

The checkpoint carries the composed config of the run that wrote it, so the
network, task and data are rebuilt from the file alone::

    dlkit-eval ckpt_path=logs/lenet_digits/runs/<timestamp>            # its best checkpoint
    dlkit-eval ckpt_path=.../checkpoints/last.ckpt split=val
    dlkit-eval ckpt_path=... data=digits data.batch_size=256           # other data
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from dlkit.checkpoint import load_run, resolve_ckpt_path
from dlkit.config import ConfigError, instantiate_dict, instantiate_node, instantiate_stored, instantiate_trainer
from dlkit.overrides import hint_on_unknown_keys
from dlkit.run_output import (
    check_finite_metrics,
    records_failure,
    route_lightning_logs,
    write_metrics_json,
)
from dlkit.validation import check_checkpoint_file, validate_config

__all__ = ["evaluate", "main"]


@records_failure("eval.log")
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild the run stored in ``cfg.ckpt_path`` and test it.

    Args:
        cfg: A composed ``eval.yaml`` config.

    Returns:
        The metrics (``test/acc``...), also written to ``<output_dir>/metrics.json``.

    Raises:
        dlkit.config.ConfigError: Missing checkpoint, a file that is not one (empty,
            truncated, text), a checkpoint without a stored config, or a bad ``split``.
        dlkit.run_output.NonFiniteLossError: A NaN/inf loss in the results.

    A failure is recorded in the run folder (``metrics.json`` ``"status": "failed"``, the
    traceback in ``eval.log``) before it propagates.
    """
    validate_config(cfg, required=("ckpt_path",))
    if cfg.split not in ("test", "val"):
        raise ConfigError(f"split must be 'test' or 'val', got {cfg.split!r}.")
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, prefer="best")
    check_checkpoint_file(ckpt_path)
    started = time.perf_counter()

    import lightning as L

    route_lightning_logs()
    task, run = load_run(ckpt_path)
    L.seed_everything(run.get("seed", cfg.seed), workers=True)
    # data= on the command line is the user's own; the run's data node comes from the file.
    datamodule = (instantiate_node(cfg.data, "data") if cfg.get("data")
                  else instantiate_stored(run.data, "data", f"the config stored in {ckpt_path}"))

    loggers = instantiate_dict(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate_trainer(cfg.trainer, logger=loggers or False, callbacks=[])
    run_split = trainer.test if cfg.split == "test" else trainer.validate
    results: dict[str, Any] = run_split(task, datamodule=datamodule)[0]
    metrics = {k: float(v) for k, v in results.items()}
    check_finite_metrics(metrics, [k for k in metrics if k.endswith("loss")], f"on the {cfg.split} split")
    write_metrics_json(
        Path(cfg.paths.output_dir) / "metrics.json",
        metrics,
        status="ok",
        ckpt_path=ckpt_path,
        wall_time_s=round(time.perf_counter() - started, 3),
    )
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://dlkit.conf", config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Console entry point ``dlkit-eval``."""
    with hint_on_unknown_keys(sys.argv[1:], "eval"):
        _hydra_main()


if __name__ == "__main__":
    main()
