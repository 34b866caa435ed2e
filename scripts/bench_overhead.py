"""What does ``Classifier.fit`` cost over the loop a PyTorch user would write instead?

The same architecture is trained on the same digits, with the same seed, batch size,
optimiser (Adam, lr 1e-3) and number of epochs, four ways:

* **plain**: the textbook loop over the model's **torch.nn twin** (the same
  architecture built from ``torch.nn`` modules, see ``bench_models.py``):
  ``DataLoader(TensorDataset, shuffle=True)``, forward, cross-entropy, backward,
  ``Adam`` (torch's default implementation), ``optimizer.step()``;
* **plain, fused Adam**: the same with ``Adam(fused=True)``, so that only the loop and
  the data path differ from dlkit, not the optimiser kernel;
* **Lightning**: a minimal ``LightningModule`` around the twin (``training_step``
  returns the loss, nothing logged) fed by the same ``DataLoader``, with progress bar,
  logger, checkpoints and model summary off;
* **dlkit**: ``Classifier(create_model(...)).fit(x, y)``: dlkit's from-scratch layers,
  Lightning's loop, dlkit's in-memory slicing loader, torchmetrics accuracy, per-epoch
  loss means, the per-batch label check, and Adam with torch's fused kernel.

So ``dlkit / plain`` is what a user choosing between dlkit and plain PyTorch pays (or
saves) in total: layers, loop and data path together.

Each round builds every contender afresh and trains it for ``--epochs`` epochs, the
contenders one after the other in an order that rotates between rounds, so each sees
the same machine; only training epochs are timed (no validation), the first
``--warmup`` of each run left out. A round's ratio is the median epoch of dlkit over
the median epoch of the other contender; the table gives the median (min-max) of the
per-round ratios. Run by hand, not in CI::

    .venv/bin/python scripts/bench_overhead.py --rounds 7                              # LeNet-5, batch 64
    .venv/bin/python scripts/bench_overhead.py --model resnet18 --batch-size 256 --resize 16 \\
        --train-size 768 --epochs 3 --rounds 5                                         # the model dominates
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from _bench_common import cpu_description, onednn_version
from bench_models import LeNet5Twin, ResNet18Twin
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from dlkit import Classifier, create_model
from dlkit.data import DigitsDataModule

MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module]]] = {
    # name: (dlkit model, its torch.nn twin), both for 1-channel images and 10 classes
    "lenet5": (lambda: create_model("lenet5", variant="modern", num_classes=10, in_chans=1),
               lambda: LeNet5Twin()),
    "resnet18": (lambda: create_model("resnet18", small_input=True, num_classes=10, in_chans=1),
                 lambda: ResNet18Twin(in_chans=1)),
}  # fmt: skip


def _loader(x: Tensor, y: Tensor, batch_size: int, seed: int) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip


def _twin(model: str, seed: int) -> nn.Module:
    """The torch.nn twin, holding the same initial weights as dlkit's model of this seed."""
    ours, twin_of = MODELS[model]
    torch.manual_seed(seed)
    twin = twin_of()
    twin.load_state_dict(ours().state_dict(), strict=True)
    return twin


def run_plain(model: str, x: Tensor, y: Tensor, batch_size: int, epochs: int, seed: int, fused: bool) -> list[float]:
    """The textbook loop over the torch.nn twin; seconds per epoch."""
    net = _twin(model, seed).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused)
    loader = _loader(x, y, batch_size, seed)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


class EpochTimer(L.Callback):
    """Seconds of every training epoch of a Lightning fit."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._t0)


class MinimalModule(L.LightningModule):
    """The least a Lightning user writes: the loss in ``training_step``, Adam, nothing logged."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def run_lightning(model: str, x: Tensor, y: Tensor, batch_size: int, epochs: int, seed: int) -> list[float]:
    """A minimal LightningModule around the twin, on the same DataLoader; seconds per epoch."""
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(MinimalModule(_twin(model, seed)), _loader(x, y, batch_size, seed))
    return timer.times


def run_dlkit(model: str, x: Tensor, y: Tensor, batch_size: int, epochs: int, seed: int) -> list[float]:
    """``Classifier.fit`` on the arrays; seconds per epoch."""
    timer = EpochTimer()
    torch.manual_seed(seed)
    clf = Classifier(MODELS[model][0]()).compile(optimizer="adam", lr=1e-3)
    clf.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle_seed=seed, callbacks=[timer], verbose=False,
            enable_model_summary=False)  # fmt: skip
    return timer.times


CONTENDERS = ("dlkit", "plain", "plain_fused", "lightning")
LABELS = {
    "plain": "plain PyTorch loop, torch.nn twin, DataLoader, Adam (torch default)",
    "plain_fused": "plain PyTorch loop, torch.nn twin, DataLoader, Adam(fused=True)",
    "lightning": "minimal LightningModule, torch.nn twin, DataLoader, Adam (torch default)",
    "dlkit": "dlkit Classifier.fit (from-scratch layers, in-memory loader, fused Adam, metrics)",
}


def run_rounds(model: str, x: Tensor, y: Tensor, batch_size: int, epochs: int, warmup: int,
               rounds: int) -> dict[str, list[list[float]]]:  # fmt: skip
    """Every contender once per round, in a rotating order; per contender, each run's timed epochs."""
    runs: dict[str, Callable[[int], list[float]]] = {
        "dlkit": lambda s: run_dlkit(model, x, y, batch_size, epochs, s),
        "plain": lambda s: run_plain(model, x, y, batch_size, epochs, s, fused=False),
        "plain_fused": lambda s: run_plain(model, x, y, batch_size, epochs, s, fused=True),
        "lightning": lambda s: run_lightning(model, x, y, batch_size, epochs, s),
    }
    times: dict[str, list[list[float]]] = {name: [] for name in CONTENDERS}
    for r in range(rounds):
        order = CONTENDERS[r % len(CONTENDERS):] + CONTENDERS[: r % len(CONTENDERS)]
        for name in order:
            times[name].append(runs[name](r)[warmup:])
    return times


def table(times: dict[str, list[list[float]]], steps: int) -> list[str]:
    """Markdown rows: median epoch and step time, and dlkit's per-round ratio to each contender."""
    rows = ["| loop | median epoch (s) | ms/step | dlkit / this, median (min-max) of rounds |",
            "|---|---:|---:|---:|"]  # fmt: skip
    dlkit_rounds = [statistics.median(t) for t in times["dlkit"]]
    for name in CONTENDERS:
        per_round = [statistics.median(t) for t in times[name]]
        med = statistics.median(e for run in times[name] for e in run)
        ratio = ""
        if name != "dlkit":
            ratios = [a / b for a, b in zip(dlkit_rounds, per_round)]
            ratio = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
        rows.append(f"| {LABELS[name]} | {med:.3f} | {1000 * med / steps:.2f} | {ratio} |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=1, help="epochs of each run left out")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resize", type=int, default=32, help="side of the (upsampled 8x8) digits")
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each trains every contender afresh")
    args = parser.parse_args(argv)
    if args.epochs <= args.warmup:
        parser.error(f"--epochs ({args.epochs}) must exceed --warmup ({args.warmup}): nothing would be timed")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "dlkit"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    dm = DigitsDataModule(resize=args.resize, seed=0)
    dm.setup("fit")
    x, y = (t[: args.train_size] for t in dm.splits["train"])
    times = run_rounds(args.model, x, y, args.batch_size, args.epochs, args.warmup, args.rounds)

    steps = -(-len(x) // args.batch_size)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n### Classifier.fit vs hand-written loops: {args.model}, batch {args.batch_size}\n")
    print(f"{cpu_description()}\ntorch {torch.__version__}, {onednn_version()}, lightning {L.__version__}, "
          f"{torch.get_num_threads()} threads, load average {load} (1, 5, 15 min)")  # fmt: skip
    print(f"{len(x)} training images {args.resize}x{args.resize}, {steps} steps/epoch; {args.rounds} rounds x "
          f"{args.epochs - args.warmup} timed epochs per contender\n")  # fmt: skip
    print("\n".join(table(times, steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
