"""How much does dlkit cost over a hand-written PyTorch loop?

Trains the same LeNet-5 (modern variant), on the same digits (resized to 32x32), with
the same seed, batch size, optimiser and number of epochs twice in one process:

* **plain**: a textbook loop — ``TensorDataset`` + ``DataLoader(shuffle=True)``,
  forward, cross-entropy, backward, Adam step, loss accumulated per epoch;
* **dlkit**: ``Classifier.fit(DigitsDataModule(...))`` — Lightning's loop, dlkit's
  in-memory slicing loader, torchmetrics accuracy and epoch-level logging.

Only training epochs are timed (no validation in either), and the median of the
epochs after a warm-up is compared. Run by hand, not in CI::

    .venv/bin/python scripts/bench_overhead.py --epochs 8 --threads 2
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


class EpochTimer(L.Callback):
    """Wall time of every training epoch (batches only: validation is off)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._t0)


def plain_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    net = create_model("lenet5", variant="modern")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        net.train()
        total = 0.0
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item()
        times.append(time.perf_counter() - t0)
    return times


def dlkit_fit(dm: DigitsDataModule, epochs: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    clf = Classifier(create_model("lenet5", variant="modern")).compile(optimizer="adam", lr=1e-3)
    timer = EpochTimer()
    clf.fit(dm, epochs=epochs, callbacks=[timer], verbose=False, limit_val_batches=0, enable_model_summary=False)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="epochs per contender (first one is warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="epochs left out of the median")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternate plain/dlkit this many times")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    dm = DigitsDataModule(resize=32, batch_size=args.batch_size, seed=0)
    dm.setup("fit")
    x, y = dm.splits["train"]
    results: dict[str, list[float]] = {"plain": [], "dlkit": []}
    for _ in range(args.rounds):  # alternating evens out drifts in machine load
        results["plain"] += plain_loop(x, y, args.epochs, args.batch_size, 0)[args.warmup :]
        results["dlkit"] += dlkit_fit(dm, args.epochs, 0)[args.warmup :]

    steps = -(-len(x) // args.batch_size)
    plain, dlk = (statistics.median(results[k]) for k in ("plain", "dlkit"))
    print(f"LeNet-5 on digits 32x32: {len(x)} training images, batch {args.batch_size}, {steps} steps/epoch, "
          f"{args.threads} threads, median of {len(results['plain'])} epochs each")
    print("| loop | epoch (s) | ms/step | x plain |")
    print("|---|---|---|---|")
    for name, t in (("plain PyTorch + DataLoader", plain), ("dlkit Classifier.fit", dlk)):
        print(f"| {name} | {t:.3f} | {1000 * t / steps:.2f} | {t / plain:.2f} |")
    print(f"ratio dlkit/plain = {dlk / plain:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
