"""Benchmark experiment=finetune_efficientnet_fashion: test accuracy and wall time of both phases.

Runs the experiment once, as ``dlkit-train experiment=finetune_efficientnet_fashion``
does (composed in-process, trained by :func:`dlkit.train.train`), with one more
callback, :class:`PhaseProbe`. When the frozen phase ends (the last epoch in which only
the head trained, its validation included) and again when training ends, the probe runs
the current weights over the whole test split (10,000 images; as many batches as
``trainer.limit_test_batches`` allows, when that is set) and records the accuracy;
each phase's wall time leaves these test passes out, and they are timed on their own.
``train`` then tests its best checkpoint (by ``val/acc``) as usual: ``test/acc`` in the
record.

Prints the CPU line, the load average (other processes on the same cores slow every
step), one line per epoch and a markdown table for the README; writes ``bench.json``
into the run folder (``logs/bench_finetune_efficientnet/<timestamp>`` unless
``--output-dir``).

Examples::

    .venv/bin/python scripts/bench_finetune_efficientnet.py
    # Another resolution / training-set size:
    .venv/bin/python scripts/bench_finetune_efficientnet.py data.resize=96 data.num_train=30000
    # A smoke run (numbers meaningless): 32 px, 64 training images, 2 batches an epoch,
    # one test batch for the probe and for the final test.
    .venv/bin/python scripts/bench_finetune_efficientnet.py --output-dir /tmp/bench_effnet data.resize=32 \\
        data.num_train=64 data.val_size=20 data.batch_size=16 +trainer.limit_train_batches=2 \\
        +trainer.limit_val_batches=1 +trainer.limit_test_batches=1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _bench_common import REPO, compose_quiet, cpu_description, target, timed_train

EXPERIMENT = "finetune_efficientnet_fashion"


class PhaseProbe(L.Callback):
    """Test accuracy of the current weights at the end of the frozen phase and of training.

    Args:
        frozen_epochs: Epochs in which only the head trains (the first unfreeze epoch of
            ``callbacks.freezing.unfreeze_at``; ``max_epochs`` when nothing unfreezes).

    Attributes:
        phases: One record per phase: ``{"phase", "epochs", "train_s", "test_acc",
            "test_images", "test_s", "trainable_params"}``; ``train_s`` is the phase's wall
            time from the start of fitting (or the previous phase's end), validation
            included, the probe's test passes excluded.

    Example:
        >>> probe = PhaseProbe(frozen_epochs=3)
        >>> trainer = L.Trainer(max_epochs=5, callbacks=[LayerFreezing(unfreeze_at={3: ["stage6"]}), probe])
        >>> trainer.fit(task, datamodule=dm); probe.phases[0]["test_acc"]  # doctest: +SKIP
    """

    def __init__(self, frozen_epochs: int) -> None:
        self.frozen_epochs = frozen_epochs
        self.phases: list[dict[str, Any]] = []
        self._phase_start = 0.0
        self._epoch_start = 0.0
        self._trainable = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._phase_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.frozen_epochs and not self.phases:
            self._close("head only", trainer, pl_module)
        self._epoch_start = time.perf_counter()
        self._trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        shown = " ".join(f"{k}={float(metrics[k]):.4f}" for k in ("train/loss", "val/loss", "val/acc") if k in metrics)
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} {shown} trainable {self._trainable:,} "
              f"epoch {time.perf_counter() - self._epoch_start:.0f} s", flush=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        name = "head only" if not self.phases else "after unfreezing"
        self._close(name, trainer, pl_module)

    def _close(self, name: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ended = time.perf_counter()
        acc, images = test_accuracy(pl_module, trainer.datamodule, trainer.limit_test_batches)
        done = self.phases[-1]["epochs_end"] if self.phases else 0
        self.phases.append({
            "phase": name,
            "epochs": trainer.current_epoch - done,
            "epochs_end": trainer.current_epoch,
            "train_s": round(ended - self._phase_start, 1),
            "test_acc": acc,
            "test_images": images,
            "test_s": round(time.perf_counter() - ended, 1),
            "trainable_params": self._trainable,
        })
        print(f"{name}: test acc {100 * acc:.2f} % after {ended - self._phase_start:.0f} s of training "
              f"(test pass {time.perf_counter() - ended:.0f} s)", flush=True)
        self._phase_start = time.perf_counter()


@torch.inference_mode()
def test_accuracy(pl_module: L.LightningModule, dm: Any, limit: float | None = None) -> tuple[float, int]:
    """Accuracy of ``pl_module`` on ``dm``'s test split, through its evaluation transforms.

    Args:
        pl_module: The task.
        dm: Its datamodule (set up for testing).
        limit: As ``trainer.limit_test_batches``: a number of batches (int), a fraction of
            them (float), or ``None`` for all.

    Returns:
        ``(accuracy, images tested)``.

    Example:
        >>> test_accuracy(task, FashionMNISTDataModule(resize=80))  # doctest: +SKIP
        (0.87, 10000)
    """
    loader = dm.test_dataloader()
    batches = len(loader)
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = max(1, int(limit * batches))
    was_training = pl_module.training
    pl_module.eval()
    correct = total = 0
    try:
        for x, y in itertools.islice(loader, batches):
            x = dm.eval_transforms(x.to(pl_module.device))
            correct += int((pl_module(x).argmax(1) == y.to(pl_module.device)).sum())
            total += len(y)
    finally:
        # The network's own train() keeps frozen BatchNorm layers in inference mode.
        pl_module.train(was_training)
    return correct / total, total


def run(overrides: list[str], output_dir: Path) -> dict[str, Any]:
    """Train the experiment once with a :class:`PhaseProbe`; return the benchmark record.

    Args:
        overrides: Extra Hydra overrides.
        output_dir: The run folder; ``bench.json`` is written there too.

    Returns:
        ``{"cpu", "threads", "load_before", "load_after", "phases", "test_acc", "wall_time_s", ...}``.

    Example:
        >>> run(["trainer.max_epochs=4"], Path("/tmp/bench"))["phases"][0]["test_acc"]  # doctest: +SKIP
    """
    probe_key = {"bench_probe": {"_target_": target(PhaseProbe), "frozen_epochs": 0}}
    cfg = compose_quiet(EXPERIMENT, overrides, output_dir, probe_key)
    plan = cfg.callbacks.freezing.unfreeze_at
    frozen = min(int(e) for e in plan) if plan else int(cfg.trainer.max_epochs)
    cfg.callbacks.bench_probe.frozen_epochs = frozen
    load_before = os.getloadavg()
    metrics, objects, wall = timed_train(cfg)
    trainer, dm = objects["trainer"], objects["datamodule"]
    probe = next(c for c in trainer.callbacks if isinstance(c, PhaseProbe))
    record = {
        "experiment": EXPERIMENT,
        "overrides": overrides,
        "cpu": cpu_description(),
        "threads": torch.get_num_threads(),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "resize": cfg.data.resize,
        "train_images": len(dm.splits["train"][0]),
        "val_images": len(dm.splits["val"][0]) if "val" in dm.splits else 0,
        "test_images": len(dm.splits["test"][0]),
        "batch_size": cfg.data.batch_size,
        "unfreeze_at": {str(k): list(v) for k, v in (plan or {}).items()},
        "phases": probe.phases,
        "test_acc": metrics.get("test/acc"),
        "val_acc_best": metrics.get("val/acc_best"),
        "wall_time_s": round(wall, 1),
        "output_dir": str(output_dir),
    }
    (output_dir / "bench.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _tested(record: dict[str, Any]) -> str:
    # The probe tests fewer images than the split holds when trainer.limit_test_batches is set.
    probed = max((p["test_images"] for p in record["phases"]), default=record["test_images"])
    return f"all {probed:,}" if probed == record["test_images"] else f"{probed:,} of {record['test_images']:,}"


def markdown(record: dict[str, Any]) -> str:
    """The README table: one row per phase, with the machine line above it."""
    lines = [
        (f"Measured on {record['cpu']}, {record['threads']} threads, load average "
         f"{record['load_before'][0]:.1f} before / {record['load_after'][0]:.1f} after"),
        (f"{record['train_images']:,} training images at {record['resize']} px, batch {record['batch_size']}; "
         f"test: {_tested(record)}"),
        "| phase | epochs | trainable params | test acc | training wall time | test pass |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in record["phases"]:
        lines.append(f"| {p['phase']} | {p['epochs']} | {p['trainable_params']:,} | {100 * p['test_acc']:.2f} % "
                     f"| {p['train_s'] / 60:.1f} min | {p['test_s']:.0f} s |")
    acc = record["test_acc"]
    lines.append(f"dlkit-train's test of its best checkpoint: {100 * acc:.2f} %; whole run "
                 f"{record['wall_time_s'] / 60:.1f} min." if acc is not None else "")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the experiment once and print the record and the README table.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.resize=96")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(cpu_description(), flush=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    output_dir = args.output_dir or REPO / "logs" / "bench_finetune_efficientnet" / stamp
    record = run(list(args.overrides), output_dir.resolve())
    print(json.dumps(record, indent=2))
    print(markdown(record))


if __name__ == "__main__":
    sys.exit(main())
