"""What a ``dlkit-train -m`` sweep leaves besides its jobs: ``summary.csv`` and a Markdown table.

Every job of a sweep writes ``metrics.json`` (its final metrics, wall time, and
``"status": "ok"`` or ``"failed"`` with the error's first line) and Hydra writes its
overrides to ``.hydra/overrides.yaml``. :func:`write_summary` reads them back from the
job folders, so the summary is the same whichever launcher ran the jobs (in this
process, in subprocesses, on SLURM), and a job that died without a ``metrics.json``
still gets its row (status ``missing``). :class:`SweepSummary` is the Hydra callback that
calls it when a multirun ends (``conf/hydra/default.yaml`` installs it).
"""

from __future__ import annotations

import csv
import json
import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

__all__ = ["SweepSummary", "best_job", "collect_jobs", "summary_markdown", "verdict", "write_summary"]

log = logging.getLogger(__name__)

# Columns before the metrics, in this order.
FIXED = ("job", "status", "overrides", "wall_time_s", "error")
# Metric prefixes kept in the summary: the final validation and test values.
METRIC_PREFIXES = ("val/", "test/")
# Metrics that are better when smaller (by the end of their name); every other one is better larger.
LOWER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "perplexity", "ppl", "cer", "wer")


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep: its number, overrides, status, wall time, error and metrics.

    Args:
        sweep_dir: The multirun folder (``hydra.sweep.dir``); its job folders are the
            subfolders holding ``.hydra/overrides.yaml``.

    Returns:
        Rows ordered by job number; ``overrides`` holds the ones that differ between
        jobs (what the sweep varies), and the metric columns are the ``val/*`` and
        ``test/*`` numbers.

    Example:
        >>> collect_jobs("logs/lenet_digits/multiruns/2026-12-01_10-00-00_000000")[0]["status"]
        'ok'
    """
    rows = []
    for overrides_file in Path(sweep_dir).glob("*/.hydra/overrides.yaml"):
        job = overrides_file.parent.parent
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file))
        metrics_file = job / "metrics.json"
        metrics: dict[str, Any] = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        row: dict[str, Any] = {
            "job": job.name,
            "status": metrics.get("status", "missing" if not metrics else "ok"),
            "overrides": " ".join(str(o) for o in overrides or []),
            "wall_time_s": metrics.get("wall_time_s"),
            "error": metrics.get("error", "" if metrics else "no metrics.json: the job was killed or never started"),
        }
        row.update({k: v for k, v in sorted(metrics.items()) if k.startswith(METRIC_PREFIXES)})
        rows.append(row)
    # The overrides every job shares say nothing about a row: keep those the sweep varies.
    shared = set.intersection(*(set(r["overrides"].split()) for r in rows)) if len(rows) > 1 else set()
    for r in rows:
        r["overrides"] = " ".join(o for o in r["overrides"].split() if o not in shared)
    return sorted(rows, key=lambda r: (not str(r["job"]).isdigit(), int(r["job"]) if str(r["job"]).isdigit() else 0,
                                       str(r["job"])))


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    metrics = sorted({k for r in rows for k in r} - set(FIXED))
    return [*FIXED, *metrics]


def summary_markdown(rows: Sequence[dict[str, Any]], optimized_metric: str | None = None) -> str:
    """The rows as a Markdown table; with ``optimized_metric``, only it among the metrics.

    Example:
        >>> print(summary_markdown([{"job": "0", "status": "ok", "overrides": "optimizer.lr=0.01",
        ...                          "wall_time_s": 3.2, "error": "", "val/acc": 0.98}]))
        | job | status | overrides | wall_time_s | val/acc |
        |---|---|---|---|---|
        | 0 | ok | optimizer.lr=0.01 | 3.2 | 0.98 |
    """
    columns = [c for c in _columns(rows) if c != "error"]
    if optimized_metric:
        columns = [c for c in columns if c in FIXED or c == optimized_metric]
    if any(r.get("error") for r in rows):
        columns.append("error")

    def cell(value: Any) -> str:
        if value is None:
            return ""
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def best_job(rows: Sequence[dict[str, Any]], metric: str, mode: str | None = None) -> dict[str, Any] | None:
    """The finished job with the best ``metric``.

    Args:
        rows: From :func:`collect_jobs`.
        metric: A metric column, e.g. ``"val/acc"``.
        mode: ``"max"`` or ``"min"``; by default ``"min"`` for names ending in one of
            :data:`LOWER_IS_BETTER` (``val/loss``), else ``"max"``.

    Returns:
        The row, or ``None`` when no finished job has the metric.

    Example:
        >>> best_job([{"job": "0", "status": "ok", "val/acc": 0.9}, {"job": "1", "status": "ok", "val/acc": 0.95}],
        ...          "val/acc")["job"]
        '1'
    """
    mode = mode or ("min" if metric.rsplit("/", 1)[-1].lower().endswith(LOWER_IS_BETTER) else "max")
    done = [r for r in rows if r.get("status") == "ok" and isinstance(r.get(metric), (int, float))]
    if not done:
        return None
    return (min if mode == "min" else max)(done, key=lambda r: r[metric])


def verdict(sweep_dir: str | Path, metric: str, mode: str | None = None, program: str = "dlkit-train") -> str | None:
    """The sweep's verdict: its best job, that job's whole command line, and its folder.

    Args:
        sweep_dir: The multirun folder.
        metric: What "best" means (the sweep's ``optimized_metric``, else the task's monitor).
        mode: ``"max"``/``"min"``, see :func:`best_job`.
        program: The command the line starts with.

    Returns:
        Three lines, or ``None`` when no finished job has the metric.

    Example:
        >>> print(verdict("logs/lenet_digits/multiruns/2026-12-01_10-00-00_000000", "val/acc"))  # doctest: +SKIP
        Best of 2 jobs by val/acc: job 1, val/acc=0.9852
          dlkit-train optimizer.lr=0.003
          folder: logs/lenet_digits/multiruns/2026-12-01_10-00-00_000000/1
    """
    rows = collect_jobs(sweep_dir)
    best = best_job(rows, metric, mode)
    if best is None:
        return None
    folder = Path(sweep_dir) / str(best["job"])
    overrides = OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "overrides.yaml")) or []
    command = " ".join([program, *(shlex.quote(str(o)) for o in overrides)])
    return (f"Best of {len(rows)} jobs by {metric}: job {best['job']}, {metric}={best[metric]:.4g}\n"
            f"  {command}\n  folder: {folder}")


def write_summary(sweep_dir: str | Path, optimized_metric: str | None = None, show: bool = True) -> Path:
    """Write ``summary.csv`` and ``summary.md`` into a sweep's folder; log the table.

    Args:
        sweep_dir: The multirun folder.
        optimized_metric: The metric the sweep optimises; the logged table shows it alone
            (the CSV has every ``val/*`` and ``test/*`` column).
        show: Log the table (else one line). Defaults to True.

    Returns:
        The path of ``summary.csv``.

    Example:
        >>> write_summary("logs/lenet_digits/multiruns/2026-12-01_10-00-00_000000", "val/acc")
    """
    sweep_dir = Path(sweep_dir)
    rows = collect_jobs(sweep_dir)
    path = sweep_dir / "summary.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_columns(rows))
        writer.writeheader()
        writer.writerows(rows)
    table = summary_markdown(rows, optimized_metric)
    (sweep_dir / "summary.md").write_text(table + "\n")
    failed = [r["job"] for r in rows if r["status"] != "ok"]
    if show:
        log.info("Sweep of %d jobs (%d not ok) in %s:\n%s", len(rows), len(failed), sweep_dir, table)
    else:
        log.info("%s: %d jobs (%d not ok)", path, len(rows), len(failed))
    return path


class SweepSummary(Callback):
    """Hydra callback: :func:`write_summary` after every job of a multirun and at its end.

    After every job too, because Hydra skips ``on_multirun_end`` when a job failed: its
    basic sweeper runs the remaining jobs of the batch, then re-raises the failure (so the
    command exits non-zero). The summary then already has every row, the failed ones with
    their error. ``hydra.sweeper.max_batch_size=1`` stops a sweep at its first failure.
    Installed by ``conf/hydra/default.yaml`` (``hydra.callbacks.sweep_summary``).

    Example:
        >>> SweepSummary().on_multirun_end(cfg)  # doctest: +SKIP
    """

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            write_summary(hydra_cfg.sweep.dir, config.get("optimized_metric"), show=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(config.hydra.sweep.dir, config.get("optimized_metric"))
        # dlkit's Optuna sweeper prints its own verdict, from the study.
        if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).lower():
            return
        monitor = OmegaConf.select(config, "task.monitor", default=None)
        metric = config.get("optimized_metric") or monitor
        mode = OmegaConf.select(config, "task.monitor_mode", default=None) if metric == monitor else None
        text = verdict(config.hydra.sweep.dir, metric, mode) if metric else None
        if text:
            log.info("%s", text)
