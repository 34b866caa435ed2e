"""Does dlkit's from-scratch ReLU keep a network at torch.nn speed?

Two tables, both dlkit against torch.nn on identical work:

* **lenet5 training step**: dlkit's ``lenet5`` (modern: ReLU, max pooling) against its
  torch.nn twin (``bench_models.LeNet5Twin``: the same architecture built from
  ``torch.nn`` modules, with the dlkit model's state_dict loaded ``strict=True``), each
  with its own Adam; one step is forward, cross-entropy, backward and
  ``optimizer.step()`` on a batch of the 32x32 digits ``DigitsDataModule`` gives;
* **activation alone**: forward + backward of each from-scratch activation against its
  ``torch.nn`` namesake on a ``(batch, 6, 28, 28)`` tensor (lenet5's first feature map).

Each round times ``--steps`` consecutive calls of every contender, in alternating order,
so both see the same load on a shared machine; the table gives the median time per call
and the median (min-max) of the per-round ratios dlkit / torch.nn, after warm-up rounds.
Run by hand; ``tests/test_bench_scripts.py`` runs the last line (a smoke run, numbers
meaningless) so the script keeps working::

    .venv/bin/python scripts/bench_activations.py --rounds 60 --threads 2
    .venv/bin/python scripts/bench_activations.py --rounds 1 --warmup 0 --steps 1 --batch-size 8 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from _bench_common import cpu_description
from bench_models import FwdBwd, LeNet5Twin, TrainStep, interleave
from torch import Tensor, nn

from dlkit import create_model, layers
from dlkit.data import DigitsDataModule


def per_call(fn: Callable[[], float], steps: int) -> Callable[[], float]:
    """``fn`` (a :class:`bench_models.TrainStep` or :class:`bench_models.FwdBwd`, which time
    one call) run ``steps`` times back to back, as one timing: the mean seconds per call.

    Args:
        fn: Runs one call and returns its seconds.
        steps: Consecutive calls per timing; more calls average out the timer's granularity.

    Returns:
        A closure for :func:`bench_models.interleave`.

    Example:
        >>> per_call(lambda: 0.5, steps=4)()
        0.5
    """

    def timed() -> float:
        return sum(fn() for _ in range(steps)) / steps

    return timed


def activation_input(shape: tuple[int, ...]) -> Tensor:
    """A fixed random input of ``shape`` that needs a gradient, spread over ReLU6's cap at 6.

    Example:
        >>> activation_input((2, 3)).requires_grad
        True
    """
    gen = torch.Generator().manual_seed(0)
    return (4 * torch.randn(shape, generator=gen)).requires_grad_(True)


def row(label: str, ours: list[float], theirs: list[float], unit: float, fmt: str) -> str:
    """One markdown row: the median time per call of each contender (times ``unit``, in
    format ``fmt``) and the median (min-max) of the per-round ratios dlkit / torch.nn.

    Example:
        >>> row("relu", [2.0, 3.0], [1.0, 1.0], 1e3, ".1f")
        '| relu | 2500.0 | 1000.0 | 2.500 (2.000-3.000) |'
    """
    ratios = [a / b for a, b in zip(ours, theirs)]
    return (f"| {label} | {statistics.median(ours) * unit:{fmt}} | {statistics.median(theirs) * unit:{fmt}} | "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Print both tables.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds per table")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--steps", type=int, default=10, help="calls per contender and round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    dm = DigitsDataModule(resize=32, batch_size=args.batch_size, seed=0)
    dm.setup("fit")
    images, labels = dm.splits["train"]
    x, y = images[: args.batch_size], labels[: args.batch_size]
    torch.manual_seed(0)
    net = create_model("lenet5", variant="modern")
    twin = LeNet5Twin()
    twin.load_state_dict(net.state_dict(), strict=True)
    torch.testing.assert_close(net(x), twin(x))  # same weights, same function

    print(cpu_description())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds of "
          f"{args.steps} calls per contender after {args.warmup} warm-up rounds; ratio = median (min-max) "
          "of per-round dlkit / torch.nn")  # fmt: skip
    steps = {name: per_call(TrainStep(model, (x,), y, F.cross_entropy), args.steps)
             for name, model in (("dlkit", net), ("torch", twin))}  # fmt: skip
    times = interleave(steps, args.rounds, args.warmup)
    print(f"\nlenet5 (modern) training step, batch {args.batch_size}, 32x32, Adam")
    print("| model | dlkit (ms) | torch.nn (ms) | dlkit / torch.nn |")
    print("|---|---|---|---|")
    print(row("lenet5", times["dlkit"], times["torch"], 1e3, ".3f"))

    shape = (args.batch_size, 6, 28, 28)
    print(f"\nactivation forward + backward on {shape}")
    print("| activation | dlkit (us) | torch.nn (us) | dlkit / torch.nn |")
    print("|---|---|---|---|")
    for ours, theirs in [(layers.ReLU(), nn.ReLU()), (layers.ReLU6(), nn.ReLU6())]:
        calls = {name: per_call(FwdBwd(module, (activation_input(shape),)), args.steps)
                 for name, module in (("dlkit", ours), ("torch", theirs))}  # fmt: skip
        t = interleave(calls, args.rounds, args.warmup)
        print(row(type(ours).__name__, t["dlkit"], t["torch"], 1e6, ".1f"))


if __name__ == "__main__":
    main()
