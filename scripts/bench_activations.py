"""Does dlkit's from-scratch ReLU keep a network at torch.nn speed?

Two tables, both dlkit against torch.nn on identical work:

* **lenet5 training step**: dlkit's ``lenet5`` (modern: ReLU, max pooling) against its
  torch.nn twin (the same architecture built from ``torch.nn`` modules, with the dlkit
  model's state_dict loaded ``strict=True``), each with its own Adam; one step is
  forward, cross-entropy, backward and ``optimizer.step()`` on a batch of the 32x32
  digits ``DigitsDataModule`` gives;
* **activation alone**: forward + backward of each from-scratch activation against its
  ``torch.nn`` namesake on a ``(64, 6, 28, 28)`` tensor (lenet5's first feature map).

Each round times ``--steps`` consecutive calls of every contender, in alternating order,
so both see the same load on a shared machine; the table gives the median time per call
and the median (min-max) of the per-round ratios dlkit / torch.nn, after warm-up rounds.
Run by hand, not in CI::

    .venv/bin/python scripts/bench_activations.py --rounds 60 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _bench_common import cpu_description
from dlkit import create_model, layers
from dlkit.data import DigitsDataModule


class TorchLeNet5(nn.Module):
    """The torch.nn twin of dlkit's modern ``lenet5``: the same layers, all from ``torch.nn``.

    The module names equal dlkit's (``features.0``, ``head.fc1``, ...), so dlkit's
    state_dict loads with ``strict=True``. Dropout is left out: lenet5's default
    ``drop_rate`` is 0, where dlkit's dropout returns its input.

    Example:
        >>> twin = TorchLeNet5()
        >>> twin.load_state_dict(create_model("lenet5", variant="modern").state_dict())
        <All keys matched successfully>
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential()
        for name, module in [("flatten", nn.Flatten()), ("fc1", nn.Linear(400, 120)), ("act1", nn.ReLU()),
                             ("fc2", nn.Linear(120, 84)), ("act2", nn.ReLU()), ("fc3", nn.Linear(84, 10))]:  # fmt: skip
            self.head.add_module(name, module)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 1, 32, 32) -> (B, 10)


def train_step(net: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    """One training step of ``net`` (forward, cross-entropy, backward, Adam step) as a closure."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def fwd_bwd(module: nn.Module, shape: tuple[int, ...]) -> Callable[[], None]:
    """Forward + backward of ``module`` on a fixed random input of ``shape``."""
    gen = torch.Generator().manual_seed(0)
    x = (4 * torch.randn(shape, generator=gen)).requires_grad_(True)  # spans ReLU6's cap
    grad = torch.randn(shape, generator=gen)

    def call() -> None:
        x.grad = None
        module(x).backward(grad)

    return call


def paired(contenders: dict[str, Callable[[], None]], rounds: int, warmup: int, steps: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, one entry per round after ``warmup`` rounds.

    Every round runs ``steps`` calls of each contender back to back, the order reversed
    on odd rounds, so a slow spell of the machine hits both.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn = contenders[name]
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) / steps)
    return times


def row(label: str, ours: list[float], theirs: list[float], unit: float, fmt: str) -> str:
    ratios = [a / b for a, b in zip(ours, theirs)]
    return (f"| {label} | {statistics.median(ours) * unit:{fmt}} | {statistics.median(theirs) * unit:{fmt}} | "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds per table")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--steps", type=int, default=10, help="calls per contender and round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dm = DigitsDataModule(resize=32, batch_size=args.batch_size, seed=0)
    dm.setup("fit")
    images, labels = dm.splits["train"]
    x, y = images[: args.batch_size], labels[: args.batch_size]
    torch.manual_seed(0)
    net = create_model("lenet5", variant="modern")
    twin = TorchLeNet5()
    twin.load_state_dict(net.state_dict(), strict=True)
    torch.testing.assert_close(net(x), twin(x))  # same weights, same function

    print(cpu_description())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds of "
          f"{args.steps} calls per contender after {args.warmup} warm-up rounds; ratio = median (min-max) "
          "of per-round dlkit / torch.nn")  # fmt: skip
    steps = paired({"dlkit": train_step(net, x, y), "torch": train_step(twin, x, y)},
                   args.rounds, args.warmup, args.steps)  # fmt: skip
    print(f"\nlenet5 (modern) training step, batch {args.batch_size}, 32x32, Adam")
    print("| model | dlkit (ms) | torch.nn (ms) | dlkit / torch.nn |")
    print("|---|---|---|---|")
    print(row("lenet5", steps["dlkit"], steps["torch"], 1e3, ".3f"))

    shape = (args.batch_size, 6, 28, 28)
    print(f"\nactivation forward + backward on {shape}")
    print("| activation | dlkit (us) | torch.nn (us) | dlkit / torch.nn |")
    print("|---|---|---|---|")
    for ours, theirs in [(layers.ReLU(), nn.ReLU()), (layers.ReLU6(), nn.ReLU6())]:
        t = paired({"dlkit": fwd_bwd(ours, shape), "torch": fwd_bwd(theirs, shape)},
                   args.rounds, args.warmup, args.steps)  # fmt: skip
        print(row(type(ours).__name__, t["dlkit"], t["torch"], 1e6, ".1f"))


if __name__ == "__main__":
    main()
