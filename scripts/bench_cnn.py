"""Train a CNN experiment end to end and report test accuracy, wall time and images/s.

Composes ``dlkit/conf/train.yaml`` with ``experiment=<name>`` in-process (the same config
``dlkit-train experiment=<name>`` runs), adds a callback that times the training batches,
trains with :func:`dlkit.train.train`, tests the best checkpoint, and prints one markdown
table row for the README. The run folder (checkpoints, TensorBoard, ``metrics.json``,
``bench.json``) is ``logs/bench_cnn/<experiment>/<timestamp>`` unless ``--output-dir``.

Training images/s counts every step after the first ``--warmup`` ones, from the end of one
training batch to the end of the next: loading, on-device augmentation, forward, backward,
optimiser step and logging are all inside, validation is not.

Examples::

    .venv/bin/python scripts/bench_cnn.py --experiment lenet5_fashion
    # Throughput only: one epoch of 50 batches, projected to a full epoch.
    .venv/bin/python scripts/bench_cnn.py --epochs 1 +trainer.limit_train_batches=50 \\
        +trainer.limit_val_batches=5 +trainer.limit_test_batches=5
    # bf16 autocast: pays off only on CPUs with AVX512-BF16 or AMX (elsewhere it is emulated).
    .venv/bin/python scripts/bench_cnn.py trainer.precision=bf16-mixed
    # A smoke run (numbers meaningless), as tests/test_bench_scripts.py runs it:
    .venv/bin/python scripts/bench_cnn.py --experiment lenet_digits --epochs 1 --warmup 0 --threads 1 \\
        --output-dir /tmp/bench_cnn +trainer.limit_train_batches=2 +trainer.limit_val_batches=1 \\
        +trainer.limit_test_batches=1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
from _bench_common import REPO, compose_quiet, cpu_description, target, timed_train


class BatchTimer(L.Callback):
    """Time training batches end to end and print one line per epoch.

    Args:
        warmup: Steps of the first epoch left out of the timing (one-off costs such as
            the optimiser's first step and oneDNN's kernel selection). Defaults to 3.

    Attributes:
        images: Training images counted after the warm-up.
        seconds: Their wall time, validation excluded.
        epoch_seconds: Wall time of every training epoch, its validation included.

    Example:
        >>> timer = BatchTimer(warmup=3)
        >>> trainer = L.Trainer(callbacks=[timer]); trainer.fit(task, datamodule=dm)
        >>> timer.images_per_second
    """

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup
        self.images = 0
        self.seconds = 0.0
        self.epoch_seconds: list[float] = []
        self._steps = 0
        self._last: float | None = None
        self._epoch_start = 0.0
        self._epoch_images = 0
        self._epoch_seconds = 0.0

    @property
    def images_per_second(self) -> float:
        """Training throughput after the warm-up (NaN before any timed step)."""
        return self.images / self.seconds if self.seconds else math.nan

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The gap since the previous epoch's last batch holds validation: not training time.
        self._last = time.perf_counter()
        self._epoch_start = self._last
        self._epoch_images, self._epoch_seconds = 0, 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._steps += 1
        if self._steps > self.warmup and self._last is not None:
            n = len(batch[1]) if isinstance(batch, (tuple, list)) else len(batch)
            self.images += n
            self.seconds += now - self._last
            self._epoch_images += n
            self._epoch_seconds += now - self._last
        self._last = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        self.epoch_seconds.append(elapsed)
        metrics = trainer.callback_metrics
        shown = " ".join(f"{k}={float(metrics[k]):.4f}" for k in ("train/loss", "val/loss", "val/acc") if k in metrics)
        rate = self._epoch_images / self._epoch_seconds if self._epoch_seconds else math.nan
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} {shown} "
              f"train {rate:.1f} img/s, epoch {elapsed:.0f} s", flush=True)


def run(experiment: str, overrides: list[str], output_dir: Path, warmup: int = 3) -> dict[str, Any]:
    """Train and test one experiment with a :class:`BatchTimer`; return the benchmark record.

    Args:
        experiment: Name of a file in ``dlkit/conf/experiment``.
        overrides: Extra Hydra overrides.
        output_dir: The run folder; ``bench.json`` is written there too.
        warmup: Training steps left out of images/s. Defaults to 3.

    Returns:
        ``{"experiment", "test_acc", "wall_time_s", "train_images_per_s", "epochs", ...}``.

    Example:
        >>> run("lenet5_fashion", ["trainer.max_epochs=1"], Path("/tmp/bench"))["test_acc"]
    """
    timer_spec = {"_target_": target(BatchTimer), "warmup": warmup}
    cfg = compose_quiet(experiment, overrides, output_dir, {"bench_timer": timer_spec})
    metrics, objects, wall = timed_train(cfg)
    trainer, dm = objects["trainer"], objects["datamodule"]
    timer = next(c for c in trainer.callbacks if isinstance(c, BatchTimer))
    train_images = len(dm.splits["train"][0])
    record = {
        "experiment": experiment,
        "overrides": overrides,
        "test_acc": metrics.get("test/acc"),
        "val_acc_best": metrics.get("val/acc_best"),
        "epochs": trainer.current_epoch,
        "batch_size": cfg.data.batch_size,
        "precision": str(cfg.trainer.precision),
        "threads": _threads(),
        "cpu": cpu_description(),
        "wall_time_s": round(wall, 1),
        "train_images_per_s": round(timer.images_per_second, 1),
        "epoch_times_s": [round(t, 1) for t in timer.epoch_seconds],
        # What a full pass over the training split costs at the measured rate (no validation).
        "projected_train_epoch_s": round(train_images / timer.images_per_second, 1),
        "output_dir": str(output_dir),
    }
    (output_dir / "bench.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def markdown(record: dict[str, Any]) -> str:
    """The README table header and this run's row."""
    acc = record["test_acc"]
    acc_text = f"{100 * acc:.2f} %" if acc is not None else "n/a"
    extra = " ".join(o for o in record["overrides"] if not o.startswith("trainer.max_epochs"))
    return "\n".join([
        f"Measured on {record['cpu']}",
        "| experiment | epochs | precision | threads | test acc | wall time | train img/s | full epoch (proj.) | overrides |",
        "|---|---|---|---|---|---|---|---|---|",
        (f"| {record['experiment']} | {record['epochs']} | {record['precision']} | {record['threads']} | {acc_text} "
         f"| {record['wall_time_s'] / 60:.1f} min | {record['train_images_per_s']:.1f} "
         f"| {record['projected_train_epoch_s'] / 60:.1f} min | {extra or '-'} |"),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="resnet18_fashion", help="a file in dlkit/conf/experiment")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the experiment's)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=3, help="training steps left out of images/s")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.batch_size=256")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.insert(0, f"trainer.max_epochs={args.epochs}")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    output_dir = args.output_dir or REPO / "logs" / "bench_cnn" / args.experiment / stamp
    record = run(args.experiment, overrides, output_dir.resolve(), warmup=args.warmup)
    print(json.dumps(record, indent=2))
    print(markdown(record))


if __name__ == "__main__":
    sys.exit(main())
