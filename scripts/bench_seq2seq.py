"""Train the sequence experiments end to end and print the README's table.

Runs ``seq2seq_rnn_dates``, ``seq2seq_bahdanau_dates``, ``seq2seq_luong_dates``,
``transformer_dates`` and ``lstm_fashion_rows`` (or those named with ``--experiments``)
one after another, each composed in-process from ``conf/train.yaml`` exactly as
``dlkit-train experiment=<name>`` would, trained with :func:`dlkit.train.train` and
tested on its best checkpoint. Prints one line per epoch, then a markdown table: test
exact match / BLEU / token accuracy for the date experiments (test accuracy for the
classifiers), epochs, the validation curve (how fast each model learns: the gain
from attention shows there) and wall time (data generation, training, validation
decoding and testing included). Run folders: ``logs/bench_seq2seq/<timestamp>/<experiment>``;
``bench.json`` there holds every record.

Examples::

    .venv/bin/python scripts/bench_seq2seq.py
    .venv/bin/python scripts/bench_seq2seq.py --experiments transformer_dates --threads 2
    # Any Hydra override applies to every experiment:
    .venv/bin/python scripts/bench_seq2seq.py --experiments seq2seq_bahdanau_dates trainer.max_epochs=4
    # A smoke run (numbers meaningless), as tests/test_bench_scripts.py runs it:
    .venv/bin/python scripts/bench_seq2seq.py --experiments seq2seq_rnn_dates --threads 1 --output-dir /tmp/b \\
        trainer.max_epochs=1 +trainer.limit_train_batches=2 +trainer.limit_val_batches=1 +trainer.limit_test_batches=1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
from _bench_common import REPO, compose_quiet, cpu_description, target, timed_train

EXPERIMENTS = [
    "seq2seq_rnn_dates",
    "seq2seq_bahdanau_dates",
    "seq2seq_luong_dates",
    "transformer_dates",
    "lstm_fashion_rows",
]
_SHOWN = ("train/loss", "val/loss", "val/token_acc", "val/exact_match", "val/acc")


class EpochPrinter(L.Callback):
    """Print the epoch's main metrics and wall time on one line; keep the validation curve.

    Attributes:
        curve: The headline validation metric (``val/exact_match``, else ``val/acc``)
            after every epoch.

    Example:
        >>> trainer = L.Trainer(callbacks=[EpochPrinter()], enable_progress_bar=False)
    """

    def __init__(self) -> None:
        self._start = 0.0
        self.curve: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        shown = " ".join(f"{k}={float(metrics[k]):.4f}" for k in _SHOWN if k in metrics)
        elapsed = time.perf_counter() - self._start
        headline = next((k for k in ("val/exact_match", "val/acc") if k in metrics), None)
        if headline is not None:
            self.curve.append(float(metrics[headline]))
        print(f"  epoch {trainer.current_epoch + 1}/{trainer.max_epochs} {shown} ({elapsed:.0f} s)", flush=True)


def run(experiment: str, overrides: list[str], output_dir: Path) -> dict[str, Any]:
    """Train and test one experiment; return its benchmark record.

    Args:
        experiment: Name of a file in ``conf/experiment``.
        overrides: Extra Hydra overrides.
        output_dir: The run folder.

    Returns:
        ``{"experiment", "exact_match", "bleu", "token_acc", "acc", "epochs", "wall_time_s", ...}``
        (metrics the experiment does not have are None).

    Example:
        >>> run("seq2seq_bahdanau_dates", ["trainer.max_epochs=1"], Path("/tmp/b"))["exact_match"]
    """
    import torch

    printer_spec = {"_target_": target(EpochPrinter)}
    cfg = compose_quiet(
        experiment, overrides, output_dir, {"epoch_printer": printer_spec}, drop=("model_summary",)
    )
    print(f"{experiment}: {cfg.model.name}, {cfg.trainer.max_epochs} epochs, {torch.get_num_threads()} threads; "
          f"{cpu_description()}",
          flush=True)
    metrics, objects, wall = timed_train(cfg)
    curve = next(c for c in objects["trainer"].callbacks if isinstance(c, EpochPrinter)).curve
    return {
        "experiment": experiment,
        "model": cfg.model.name,
        "overrides": overrides,
        "exact_match": metrics.get("test/exact_match"),
        "bleu": metrics.get("test/bleu"),
        "token_acc": metrics.get("test/token_acc"),
        "acc": metrics.get("test/acc"),
        "epochs": objects["trainer"].current_epoch,
        # Validation exact match (accuracy for classifiers) after each epoch: how fast it learns.
        "val_curve": [round(v, 4) for v in curve],
        "first_epoch_val_99": next((i + 1 for i, v in enumerate(curve) if v >= 0.99), None),
        "threads": torch.get_num_threads(),
        "wall_time_s": round(wall, 1),
        "output_dir": str(output_dir),
    }


def _pct(value: float | None) -> str:
    return f"{100 * value:.2f} %" if value is not None else "–"


def markdown(records: list[dict[str, Any]]) -> str:
    """The README table: one row per experiment.

    Example:
        >>> print(markdown([run("transformer_dates", [], Path("/tmp/b"))]))
    """
    lines = [
        ("| experiment | model | test exact match | test BLEU | test token acc | test acc | epochs "
         "| val curve (% per epoch) | wall time |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        bleu = f"{r['bleu']:.4f}" if r["bleu"] is not None else "–"
        shown = [f"{100 * v:.1f}" for v in r["val_curve"]]
        # Long runs: the start (where models differ most) and the end.
        curve = " / ".join(shown if len(shown) <= 8 else [*shown[:5], "…", shown[-1]])
        lines.append(
            f"| {r['experiment']} | {r['model']} | {_pct(r['exact_match'])} | {bleu} | {_pct(r['token_acc'])} "
            f"| {_pct(r['acc'])} | {r['epochs']} | {curve} | {r['wall_time_s'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS, help="Experiments to run, in order.")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    parser.add_argument("--output-dir", type=Path, default=None, help="Parent of the run folders.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every experiment.")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.output_dir or REPO / "logs" / "bench_seq2seq" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    records = []
    for experiment in args.experiments:
        records.append(run(experiment, list(args.overrides), root / experiment))
        (root / "bench.json").write_text(json.dumps(records, indent=2) + "\n")
    print("\n" + markdown(records), flush=True)
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
