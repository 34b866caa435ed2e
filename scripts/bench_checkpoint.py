"""What do crash-safe checkpoints cost a LeNet-5/digits epoch?

Trains the default experiment (``dlkit-train``: LeNet-5 on digits resized to 32x32, batch
64, about 20 steps an epoch plus validation) in one process, with:

* **off**: no checkpoint callbacks (``trainer.enable_checkpointing=false``);
* **epoch, plain write**: the default callbacks, written by Lightning's own
  ``TorchCheckpointIO`` (no fsync);
* **epoch, atomic**: the default: best and ``last.ckpt`` every epoch through
  ``AtomicCheckpointIO`` (temporary file, fsync, rename, fsync of the folder);
* **epoch + every N steps, atomic**: the default plus ``checkpoint.every_n_steps=N``.

An epoch is timed from one epoch's start to the next, so its validation and every
checkpoint written at its end are inside. The contenders alternate run by run (each
round runs all of them, in a rotated order); the table gives the median over rounds of
each run's median epoch, its spread, and the cost against **off**. Whole epochs on two
shared cores vary by more than the cost, so the table also gives the time the training
thread spends in ``Trainer.save_checkpoint`` per epoch (what the checkpoints hold it
up; the background writes are in the epoch times only). Run by hand::

    .venv/bin/python scripts/bench_checkpoint.py --rounds 7 --epochs 8 --every-n-steps 10
    .venv/bin/python scripts/bench_checkpoint.py --experiment lenet5_fashion --rounds 3 --epochs 4 --every-n-steps 100
    # A smoke run (numbers meaningless): one round of 3 epochs of 2 batches, no warm-up run.
    .venv/bin/python scripts/bench_checkpoint.py --quick --root /tmp/bench_checkpoint
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _bench_common import REPO, compose_quiet, cpu_description, target, timed_train
from omegaconf import open_dict


class EpochStarts(L.Callback):
    """Records when each training epoch starts, and the time spent saving checkpoints until then."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.saving: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter())
        self.saving.append(SAVING[0])


# Seconds the training thread has spent in Trainer.save_checkpoint (see timed_saves).
SAVING = [0.0]


@contextlib.contextmanager
def timed_saves() -> Iterator[None]:
    """Inside the block, ``Trainer.save_checkpoint`` adds its duration to :data:`SAVING`.

    The original method is put back on exit, so a caller in the same process (a test
    running :func:`main`) gets Lightning's own ``Trainer`` back.

    Example:
        >>> with timed_saves():
        ...     L.Trainer.save_checkpoint.__name__
        'timed'
        >>> L.Trainer.save_checkpoint.__name__
        'save_checkpoint'
    """
    save = L.Trainer.save_checkpoint

    def timed(self: L.Trainer, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            save(self, *args, **kwargs)
        finally:
            SAVING[0] += time.perf_counter() - started

    L.Trainer.save_checkpoint = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        L.Trainer.save_checkpoint = save  # type: ignore[method-assign]


def contenders(every_n_steps: int) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """Name -> (overrides, callbacks to drop)."""
    checkpoints = ("model_checkpoint", "last_checkpoint", "resume_state")
    return {
        "off": (["+trainer.enable_checkpointing=false"], checkpoints),
        "epoch, plain write": (["trainer.plugins=null"], ()),
        "epoch, atomic": ([], ()),
        f"epoch + every {every_n_steps} steps, atomic": ([f"checkpoint.every_n_steps={every_n_steps}"], ()),
    }


def run(overrides: list[str], drop: tuple[str, ...], epochs: int, root: Path,
        experiment: str = "lenet_digits") -> tuple[float, float, int]:
    """One training run of ``experiment``, in a fresh folder under ``root`` (removed after).

    Args:
        overrides: Hydra overrides of the contender.
        drop: Callbacks of the experiment to remove.
        epochs: ``trainer.max_epochs``.
        root: Where the run folder is made.
        experiment: A file in ``conf/experiment``.

    Returns:
        ``(median epoch seconds, saving seconds per epoch, training steps an epoch)``; the
        first epoch is left out of both figures.
    """
    out = Path(tempfile.mkdtemp(dir=root))
    cfg = compose_quiet(
        experiment, [f"trainer.max_epochs={epochs}", "test=false", *overrides], out,
        {"epoch_starts": {"_target_": target(EpochStarts)}}, drop=("model_summary", *drop),
    )
    with open_dict(cfg):
        cfg.callbacks.pop("early_stopping", None)  # every run trains all its epochs
    _, objects, _ = timed_train(cfg)
    timer = next(c for c in objects["trainer"].callbacks if isinstance(c, EpochStarts))
    shutil.rmtree(out)
    gaps = [b - a for a, b in zip(timer.times, timer.times[1:])][1:]
    saving = (timer.saving[-1] - timer.saving[1]) / len(gaps)
    return statistics.median(gaps), saving, objects["trainer"].num_training_batches


# --quick: two training batches and one validation batch an epoch (numbers meaningless).
QUICK_OVERRIDES = ["+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the contenders and print the table.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="lenet_digits",
                        help="lenet_digits (20 steps an epoch: the worst case) or lenet5_fashion (430 steps)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of all contenders (default 5; quick 1)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run, at least 3: the first and the last are not timed (default 8; quick 3)")
    parser.add_argument("--every-n-steps", type=int, default=None, help="default 10; quick 1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", type=Path, default=REPO / "logs" / "bench_checkpoint",
                        help="where the runs write (a real disk: fsync is the point)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few rounds: a smoke run, numbers meaningless")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    epochs = args.epochs or (3 if args.quick else 8)
    every_n_steps = args.every_n_steps or (1 if args.quick else 10)
    if epochs < 3:
        parser.error("--epochs must be at least 3: the first and the last epoch are not timed")
    extra = QUICK_OVERRIDES if args.quick else []
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    args.root.mkdir(parents=True, exist_ok=True)

    named = {name: ([*extra, *overrides], drop) for name, (overrides, drop) in contenders(every_n_steps).items()}
    medians: dict[str, list[float]] = {name: [] for name in named}
    saving: dict[str, list[float]] = {name: [] for name in named}
    steps = 0
    with timed_saves():
        if not args.quick:  # warm-up: imports, first optimiser (a smoke run has no figures to protect)
            run(*named["epoch, atomic"], epochs=3, root=args.root, experiment=args.experiment)
        for r in range(rounds):
            order = list(named)[r % len(named):] + list(named)[: r % len(named)]
            for name in order:
                median, saved, steps = run(*named[name], epochs=epochs, root=args.root, experiment=args.experiment)
                medians[name].append(median)
                saving[name].append(saved)

    base = statistics.median(medians["off"])
    print(f"\nCheckpoint cost on a {args.experiment} epoch ({steps} steps + validation), {args.threads} threads, "
          f"{rounds} rounds x {epochs - 2} timed epochs; runs in {args.root}")
    print(f"CPU: {cpu_description()}\n")
    print(f"| {'checkpointing':<34} | epoch (ms) | spread (ms)   | vs off | saving/epoch (ms) | of an epoch |")
    print(f"|{'-' * 36}|-----------:|--------------:|-------:|------------------:|------------:|")
    for name, values in medians.items():
        med, held = statistics.median(values), statistics.median(saving[name])
        spread = f"{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f}"
        print(f"| {name:<34} | {med * 1e3:10.1f} | {spread:>13} | {100 * (med / base - 1):+5.1f}% "
              f"| {held * 1e3:17.2f} | {100 * held / base:10.2f}% |")


if __name__ == "__main__":
    main()
