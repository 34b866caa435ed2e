"""How long until dlkit does something: imports, ``--cfg job`` and a one-step training run.

Start-up can only be measured in fresh interpreters, so every figure is the wall time of
a new process, repeated ``--rounds`` times in rotating order (median and min-max):

* ``import torch``: the floor every PyTorch program pays, the reference of the table;
* ``import dlkit``: dlkit imports torch, Lightning and Hydra lazily, so this is cheap;
* ``dlkit-train --cfg job``: compose and print the default config (Hydra only, no torch);
* ``dlkit-train`` for one step: the default experiment with ``trainer.max_steps=1`` and
  no validation, into a temporary folder. This is an upper bound of the time to the
  first training step: it also counts writing the run's outputs and exiting.

Run by hand, not in CI::

    .venv/bin/python scripts/bench_startup.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _bench_common import cpu_description

BIN = Path(sys.executable).parent


def commands(run_dir: Path) -> dict[str, list[str]]:
    """The measured commands, by label; the one-step run writes under ``run_dir``."""
    train = str(BIN / "dlkit-train")
    return {
        "import torch": [sys.executable, "-c", "import torch"],
        "import dlkit": [sys.executable, "-c", "import dlkit"],
        "dlkit-train --cfg job": [train, "--cfg", "job"],
        "dlkit-train, 1 training step": [
            train, "+trainer.max_steps=1", "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0",
            f"hydra.run.dir={run_dir}",
        ],
    }  # fmt: skip


def wall(cmd: Sequence[str]) -> float:
    """Seconds from spawning ``cmd`` to its exit; raises if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL_WORD",
                        help="measure only commands whose label contains one of these words, e.g. import")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(Path(tmp) / "run")
        if args.only:
            cmds = {k: v for k, v in cmds.items() if any(w in k for w in args.only)}
        labels = list(cmds)
        times: dict[str, list[float]] = {k: [] for k in labels}
        for r in range(args.rounds):
            for label in labels[r % len(labels):] + labels[: r % len(labels)]:
                times[label].append(wall(cmds[label]))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n### Start-up: wall time of a fresh process, {args.rounds} rounds\n")
    print(f"{cpu_description()}\nPython {sys.version.split()[0]}, load average {load} (1, 5, 15 min)\n")
    print("| command | median (s) | min-max (s) | / import torch |")
    print("|---|---:|---:|---:|")
    floor = statistics.median(times["import torch"]) if "import torch" in times else None
    for label in labels:
        t = times[label]
        ratio = f"{statistics.median(t) / floor:.2f}" if floor else ""
        print(f"| `{label}` | {statistics.median(t):.2f} | {min(t):.2f}-{max(t):.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
