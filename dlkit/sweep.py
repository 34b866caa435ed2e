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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

__all__ = ["SweepSummary", "collect_jobs", "summary_markdown", "write_summary"]

log = logging.getLogger(__name__)

# Columns before the metrics, in this order.
FIXED = ("job", "status", "overrides", "wall_time_s", "error")
# Metric prefixes kept in the summary: the final validation and test values.
METRIC_PREFIXES = ("val/", "test/")


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
