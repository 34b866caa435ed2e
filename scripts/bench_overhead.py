"""How much does dlkit cost over a hand-written PyTorch loop?

Trains the same LeNet-5 (modern variant), on the same digits (resized to 32x32), with
the same seed, batch size, optimiser and number of epochs in one process, two ways:

* **plain**: a textbook loop — ``TensorDataset`` + ``DataLoader(shuffle=True)``,
  forward, cross-entropy, backward, Adam step, loss accumulated per epoch;
* **dlkit**: ``Classifier.fit(DigitsDataModule(...))`` — Lightning's loop, dlkit's
  in-memory slicing loader, torchmetrics accuracy and epoch-level logging.

The two alternate epoch by epoch (a callback runs one plain epoch after each dlkit
epoch), so each pair sees the same machine; only training epochs are timed (no
validation in either). The headline is the median of the per-epoch ratios after a
warm-up. Run by hand, not in CI::

    .venv/bin/python scripts/bench_overhead.py --epochs 12 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from dlkit import Classifier, create_model
from dlkit.data import DigitsDataModule


class PlainLoop:
    """The textbook loop: ``DataLoader(TensorDataset, shuffle=True)``, forward, loss, backward, step.

    Args:
        x: Training images ``(N, 1, 32, 32)``.
        y: Labels ``(N,)``.
        batch_size: Batch size, as dlkit's.
        seed: Seed of the weights (and of the loader's shuffling).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.net = create_model("lenet5", variant="modern")
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(seed))  # fmt: skip

    def epoch(self) -> float:
        """Train one epoch; returns its wall time in seconds."""
        t0 = time.perf_counter()
        self.net.train()
        total = 0.0
        for xb, yb in self.loader:
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.net(xb), yb)
            loss.backward()
            self.opt.step()
            total += loss.item()
        return time.perf_counter() - t0


class Interleave(L.Callback):
    """Times every dlkit epoch, then runs and times one plain epoch right after it.

    Running the two contenders epoch by epoch (rather than one whole run after the
    other) makes each pair of epochs see the same machine: on a shared 2-core VM, the
    speed drifts by 10-20 % over seconds, more than the difference being measured.
    """

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.dlkit_times: list[float] = []
        self.plain_times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dlkit_times.append(time.perf_counter() - self._t0)
        self.plain_times.append(self.plain.epoch())


def run_pair(dm: DigitsDataModule, epochs: int, batch_size: int, seed: int) -> tuple[list[float], list[float]]:
    """``epochs`` epochs of dlkit's ``Classifier.fit`` interleaved with the plain loop's.

    Returns:
        ``(dlkit_seconds, plain_seconds)`` per epoch.
    """
    x, y = dm.splits["train"]
    timer = Interleave(PlainLoop(x, y, batch_size, seed))
    torch.manual_seed(seed)
    clf = Classifier(create_model("lenet5", variant="modern")).compile(optimizer="adam", lr=1e-3)
    clf.fit(dm, epochs=epochs, callbacks=[timer], verbose=False, limit_val_batches=0, enable_model_summary=False)
    return timer.dlkit_times, timer.plain_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12, help="epochs per contender and round")
    parser.add_argument("--warmup", type=int, default=2, help="epochs of each round left out of the median")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="independent runs (fresh models) to pool")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    dm = DigitsDataModule(resize=32, batch_size=args.batch_size, seed=0)
    dm.setup("fit")
    dlk: list[float] = []
    plain: list[float] = []
    for _ in range(args.rounds):
        d, p = run_pair(dm, args.epochs, args.batch_size, 0)
        dlk += d[args.warmup :]
        plain += p[args.warmup :]

    n = len(dm.splits["train"][0])
    steps = -(-n // args.batch_size)
    paired = statistics.median(a / b for a, b in zip(dlk, plain))
    print(f"LeNet-5 on digits 32x32: {n} training images, batch {args.batch_size}, {steps} steps/epoch, "
          f"{args.threads} threads, {len(plain)} interleaved epoch pairs")
    print("| loop | median epoch (s) | ms/step | fastest epoch (s) |")
    print("|---|---|---|---|")
    for name, t in (("plain PyTorch + DataLoader", plain), ("dlkit Classifier.fit", dlk)):
        med = statistics.median(t)
        print(f"| {name} | {med:.3f} | {1000 * med / steps:.2f} | {min(t):.3f} |")
    print(f"ratio dlkit/plain = {paired:.3f} (median of per-epoch ratios; target <= 1.05); "
          f"ratio of medians {statistics.median(dlk) / statistics.median(plain):.3f}, "
          f"of fastest epochs {min(dlk) / min(plain):.3f}")


if __name__ == "__main__":
    main()
