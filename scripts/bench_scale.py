"""Scale-out and speed switches, measured: ``trainer=ddp_cpu`` 2 processes vs 1, and ``compile=true``.

``--what ddp``: ``experiment=lenet5_fashion`` trained by ``dlkit-train`` (a process per
run, as a user starts it) once in one process with ``data.batch_size=B`` and 2 intra-op
threads, and once as ``trainer=ddp_cpu trainer.devices=2`` with ``data.batch_size=B/2``
per process (one thread each, Lightning's default for 2 processes on 2 cores): the same
global batch, the same cores. Rounds interleave the two (``--devices`` runs one alone).
:class:`StepClock` on rank 0 records every training step (rank 0 waits for rank 1 in the
gradient all-reduce, so its steps are the job's); reported: the median step after the
warm-up, training images a second from it and from the epoch's wall time (first batch
start to last batch end, data loading included), and the ratio DDP / one process.

``--what compile``: ``compile=true`` vs eager, in-process (``dlkit.train.train``), on
``lenet_digits`` (the default run) and ``transformer_dates``: the first training step
(torch.compile's one-off work lands there), the median step after it, the speed-up, and
after how many steps the one-off cost is paid back.

Prints the CPU line (model, ISA), torch version and threads with every table::

    python scripts/bench_scale.py --what ddp --rounds 3
    python scripts/bench_scale.py --what compile --steps 150
    # Smoke runs (numbers meaningless): one DDP run of 6 steps; 6 steps of lenet_digits.
    python scripts/bench_scale.py --what ddp --rounds 1 --devices 2 --batch 8 --batches 6 --epochs 1
    python scripts/bench_scale.py --what compile --steps 6 --experiments lenet_digits
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _bench_common import REPO, compose_quiet, cpu_description, onednn_version, target, timed_train

WARMUP = 5  # steps left out of the medians: allocator, oneDNN primitive caches


class StepClock(L.Callback):
    """Every training step's wall time and each epoch's training span, written by rank 0.

    Args:
        path: The JSON file (``{"steps": [...], "epochs": [...]}``, seconds); ``None``
            keeps the figures on the object only.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.steps: list[float] = []
        self.epochs: list[float] = []
        self._step = self._epoch = self._last = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._step = time.perf_counter()
        if not self._epoch:
            self._epoch = self._step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        self.steps.append(now - self._step)
        self._last = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(self._last - self._epoch)
        if self.path and trainer.is_global_zero:
            Path(self.path).write_text(json.dumps({"steps": self.steps, "epochs": self.epochs}))


def _spread(values: list[float]) -> str:
    return f"{min(values):.3g}-{max(values):.3g}"


def run_ddp(work: Path, devices: int, batch: int, epochs: int, batches: int, round_: int) -> dict[str, Any]:
    """One ``dlkit-train`` process (and its DDP children); the clock's figures and the run's metrics."""
    name = f"ddp{devices}_r{round_}"
    clock = work / f"{name}.json"
    per_process = batch // devices
    cmd = [sys.executable, "-m", "dlkit.train", "experiment=lenet5_fashion", f"task_name={name}",
           f"paths.log_dir={work / 'logs'}", f"trainer.max_epochs={epochs}", f"+trainer.limit_train_batches={batches}",
           "+trainer.limit_val_batches=20", "test=false", f"data.batch_size={per_process}",
           "~callbacks.rich_progress_bar", "~callbacks.model_summary", "++trainer.enable_progress_bar=false",
           f"+callbacks.clock._target_={target(StepClock).replace('__main__', 'bench_scale')}",
           f"+callbacks.clock.path={clock}"]
    if devices > 1:
        cmd[3:3] = ["trainer=ddp_cpu", f"trainer.devices={devices}"]
    # Lightning gives each of N CPU processes cores // N threads; one process gets both cores.
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "scripts")])
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    figures = json.loads(clock.read_text())
    (metrics_file,) = (work / "logs" / name).rglob("metrics.json")
    steady = figures["steps"][WARMUP:]
    # Epochs after the first: the first holds the DataLoader's start and the first steps.
    later = figures["epochs"][1:] or figures["epochs"]
    return {"step_s": statistics.median(steady), "epoch_img_s": batch * batches / statistics.median(later),
            "wall_s": wall, "val_acc": json.loads(metrics_file.read_text()).get("val/acc")}


def bench_ddp(args: argparse.Namespace) -> None:
    """Train ``args.devices`` (process counts) in interleaved rounds; print the table.

    Args:
        args: The parsed command line (``rounds``, ``devices``, ``batch``, ``batches``, ``epochs``).
    """
    rows: dict[int, list[dict[str, Any]]] = {devices: [] for devices in args.devices}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for round_ in range(args.rounds):
            for devices in (args.devices if round_ % 2 == 0 else args.devices[::-1]):
                row = run_ddp(Path(tmp), devices, args.batch, args.epochs, args.batches, round_)
                rows[devices].append(row)
                print(f"round {round_} devices={devices}: step {row['step_s'] * 1e3:.1f} ms, "
                      f"{row['epoch_img_s']:.0f} img/s (epoch), wall {row['wall_s']:.1f} s, val acc {row['val_acc']:.4f}",
                      flush=True)
    print(f"\nexperiment=lenet5_fashion, global batch {args.batch}, {args.batches} steps x {args.epochs} epochs, "
          f"{args.rounds} interleaved rounds; medians (min-max)")
    print("| run | step (ms) | train img/s from the step | train img/s over the epoch | process wall (s) | val acc |")
    print("|---|---:|---:|---:|---:|---:|")
    med = {}
    for devices, label in ((1, "1 process, 2 threads"), (2, "ddp_cpu, 2 processes x 1 thread")):
        if devices not in rows:
            continue
        steps = [r["step_s"] * 1e3 for r in rows[devices]]
        epoch = [r["epoch_img_s"] for r in rows[devices]]
        walls = [r["wall_s"] for r in rows[devices]]
        med[devices] = (statistics.median(steps), statistics.median(epoch), statistics.median(walls))
        print(f"| {label} | {med[devices][0]:.1f} ({_spread(steps)}) | {args.batch / med[devices][0] * 1e3:.0f} | "
              f"{med[devices][1]:.0f} ({_spread(epoch)}) | {med[devices][2]:.1f} | "
              f"{statistics.median(r['val_acc'] for r in rows[devices]):.4f} |")
    if len(med) == 2:
        print(f"\nthroughput ddp_cpu(2) / one process: {med[1][0] / med[2][0]:.2f}x from the step, "
              f"{med[2][1] / med[1][1]:.2f}x over the epoch; process wall {med[2][2] / med[1][2]:.2f}x")


def run_compile(experiment: str, compiled: bool, steps: int, work: Path) -> dict[str, Any]:
    """A run of ``steps`` training steps, eager or compiled; the clock's figures."""
    # max_steps across epochs: a digits epoch is 23 steps.
    overrides = ["trainer.max_epochs=-1", f"+trainer.max_steps={steps}", "+trainer.limit_val_batches=2",
                 "test=false", "~logger", f"compile={str(compiled).lower()}"]
    cfg = compose_quiet(experiment, overrides, work / f"{experiment}_{compiled}",
                        {"clock": {"_target_": target(StepClock)}}, drop=("model_summary", "last_checkpoint"))
    _, objects, wall = timed_train(cfg)
    (clock,) = [c for c in objects["trainer"].callbacks if isinstance(c, StepClock)]
    return {"first_s": clock.steps[0], "step_s": statistics.median(clock.steps[WARMUP:]), "wall_s": wall,
            "steps": len(clock.steps)}


def bench_compile(args: argparse.Namespace) -> None:
    """Train each of ``args.experiments`` eager, then compiled; print the table.

    Args:
        args: The parsed command line (``experiments``, ``steps``).
    """
    print("| experiment | first step eager / compiled (s) | step eager / compiled (ms) | speed-up | "
          "paid back after | run wall eager / compiled (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
        for experiment in args.experiments:
            eager = run_compile(experiment, False, args.steps, Path(tmp))
            compiled = run_compile(experiment, True, args.steps, Path(tmp))
            saved = eager["step_s"] - compiled["step_s"]
            one_off = compiled["first_s"] - eager["first_s"]
            payback = f"{one_off / saved:.0f} steps" if saved > 0 else "never"
            print(f"| {experiment} | {eager['first_s']:.2f} / {compiled['first_s']:.2f} | "
                  f"{eager['step_s'] * 1e3:.2f} / {compiled['step_s'] * 1e3:.2f} | "
                  f"{eager['step_s'] / compiled['step_s']:.2f}x | {payback} | "
                  f"{eager['wall_s']:.1f} / {compiled['wall_s']:.1f} |", flush=True)
    print(f"\n{args.steps} training steps per run (medians after {WARMUP}); validation recompiles for eval mode, "
          "its cost is in the run wall only")



def main(argv: Sequence[str] | None = None) -> None:
    """Print the machine line and the table of ``--what``.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=("ddp", "compile"), required=True)
    parser.add_argument("--rounds", type=int, default=3, help="ddp: interleaved rounds")
    parser.add_argument("--batch", type=int, default=128, help="ddp: the global batch")
    parser.add_argument("--batches", type=int, default=150, help="ddp: training steps an epoch")
    parser.add_argument("--epochs", type=int, default=3, help="ddp: epochs a run")
    # Each run is a fresh dlkit-train process (~7 s, ~13 s with DDP's second one): a smoke run
    # can do with one.
    parser.add_argument("--devices", type=int, nargs="+", choices=(1, 2), default=[1, 2],
                        help="ddp: the process counts to run (default: both)")
    parser.add_argument("--steps", type=int, default=150, help="compile: training steps a run")
    parser.add_argument("--experiments", nargs="+", default=["lenet_digits", "transformer_dates"])
    args = parser.parse_args(argv)
    # The medians leave out the first WARMUP steps: there must be one more.
    steps = args.batches * args.epochs if args.what == "ddp" else args.steps
    if steps <= WARMUP:
        parser.error(f"a run needs more than the {WARMUP} warm-up steps (ddp: --batches x --epochs; compile: --steps)")
    load = os.getloadavg()[0]
    print(f"CPU: {cpu_description()}\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{onednn_version()}, load average {load:.2f} at the start\n", flush=True)
    bench_ddp(args) if args.what == "ddp" else bench_compile(args)


if __name__ == "__main__":
    main()
