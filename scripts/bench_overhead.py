"""How much does dlkit cost over a hand-written PyTorch loop?

Trains the same LeNet-5 (modern variant), on the same digits (resized to 32x32), with
the same seed, batch size, optimiser and number of epochs in one process, two ways:

* **plain**: a textbook loop — ``TensorDataset`` + ``DataLoader(shuffle=True)``,
  forward, cross-entropy, backward, Adam step, loss accumulated per epoch;
* **dlkit**: ``Classifier.fit(DigitsDataModule(...))`` — Lightning's loop, dlkit's
  in-memory slicing loader, torchmetrics accuracy, epoch-level logging, and Adam built
  with torch's fused kernel (``dlkit.tasks.build_optimizer``);
* **plain, fused Adam**: the textbook loop with ``Adam(..., fused=True)``, so that
  the difference to dlkit is only the loop and the data path (Lightning + dlkit vs
  ``DataLoader``), not the optimiser kernel.

The contenders alternate epoch by epoch (a callback runs one epoch of each plain loop
after each dlkit epoch), so each trio sees the same machine; only training epochs are
timed (no validation anywhere). The headline is the median of the per-epoch ratios
after a warm-up. Run by hand, not in CI::

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

from _bench_common import cpu_description
from dlkit import Classifier, create_model
from dlkit.data import DigitsDataModule


class PlainLoop:
    """The textbook loop: ``DataLoader(TensorDataset, shuffle=True)``, forward, loss, backward, step.

    Args:
        x: Training images ``(N, 1, 32, 32)``.
        y: Labels ``(N,)``.
        batch_size: Batch size, as dlkit's.
        seed: Seed of the weights (and of the loader's shuffling).
        fused: Build Adam with ``fused=True`` (torch's default is its per-parameter loop).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, fused: bool = False) -> None:
        torch.manual_seed(seed)
        self.net = create_model("lenet5", variant="modern")
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3, fused=fused)
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
    """Times every dlkit epoch, then runs and times one epoch of each plain loop right after it.

    Running the contenders epoch by epoch (rather than one whole run after the other)
    makes each group of epochs see the same machine: on a shared 2-core VM, the speed
    drifts by 10-20 % over seconds, more than the difference being measured.

    Args:
        plains: The plain loops, by name.
    """

    def __init__(self, plains: dict[str, PlainLoop]) -> None:
        self.plains = plains
        self.times: dict[str, list[float]] = {"dlkit": [], **{name: [] for name in plains}}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times["dlkit"].append(time.perf_counter() - self._t0)
        for name, plain in self.plains.items():
            self.times[name].append(plain.epoch())


def run_round(dm: DigitsDataModule, epochs: int, batch_size: int, seed: int) -> dict[str, list[float]]:
    """``epochs`` epochs of dlkit's ``Classifier.fit`` interleaved with the plain loops'.

    Returns:
        Seconds per epoch, keyed ``"dlkit"``, ``"plain"`` and ``"plain_fused"``.
    """
    x, y = dm.splits["train"]
    timer = Interleave({"plain": PlainLoop(x, y, batch_size, seed),
                        "plain_fused": PlainLoop(x, y, batch_size, seed, fused=True)})  # fmt: skip
    torch.manual_seed(seed)
    clf = Classifier(create_model("lenet5", variant="modern")).compile(optimizer="adam", lr=1e-3)
    clf.fit(dm, epochs=epochs, callbacks=[timer], verbose=False, limit_val_batches=0, enable_model_summary=False)
    return timer.times


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
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, t in run_round(dm, args.epochs, args.batch_size, 0).items():
            times.setdefault(name, []).extend(t[args.warmup :])

    n = len(dm.splits["train"][0])
    steps = -(-n // args.batch_size)
    dlk = times["dlkit"]
    print(cpu_description())
    print(f"LeNet-5 on digits 32x32: {n} training images, batch {args.batch_size}, {steps} steps/epoch, "
          f"{args.threads} threads, {len(dlk)} interleaved epochs each")
    print("| loop | median epoch (s) | ms/step | fastest epoch (s) | dlkit / this loop (median of per-epoch ratios) |")
    print("|---|---|---|---|---|")
    labels = {"plain": "plain PyTorch + DataLoader, Adam (torch default)",
              "plain_fused": "plain PyTorch + DataLoader, Adam(fused=True)", "dlkit": "dlkit Classifier.fit"}
    ratios = {name: statistics.median(a / b for a, b in zip(dlk, t)) for name, t in times.items()}
    for name in ("plain", "plain_fused", "dlkit"):
        t, med = times[name], statistics.median(times[name])
        ratio = "" if name == "dlkit" else f"{ratios[name]:.3f}"
        print(f"| {labels[name]} | {med:.3f} | {1000 * med / steps:.2f} | {min(t):.3f} | {ratio} |")
    print(f"ratio dlkit/plain = {ratios['plain']:.3f} (target <= 1.05); of fastest epochs "
          f"{min(dlk) / min(times['plain']):.3f}. Like for like (both fused Adam): {ratios['plain_fused']:.3f}")


if __name__ == "__main__":
    main()
