"""Optuna search with pruning vs without, on ``hparams_search=lenet_digits_optuna``, at the same trial count.

Each search is one ``dlkit-train -m`` process (the dlkit_optuna sweeper, Hydra's basic
launcher), with the same TPE seed, trial count and epochs; only ``hydra.sweeper.pruner``
differs. Rounds interleave the two contenders (each round uses its own sampler seed, so
both contenders see the same proposals until pruning changes what TPE learns). Reported
per contender: the best ``val/acc_best`` and its trial's ``test/acc``, the wall time of
the whole search, the epochs trained over all trials, and the pruned count.

    python scripts/bench_optuna.py                      # 12 trials x 6 epochs, 1 round
    python scripts/bench_optuna.py --trials 16 --epochs 10 --rounds 2
    python scripts/bench_optuna.py --trials 1 --epochs 1 --only pruning   # smoke run (~10 s), numbers meaningless
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

import optuna
from _bench_common import REPO, cpu_description
from omegaconf import OmegaConf

CONTENDERS = {"pruning (median)": [], "no pruning": ["hydra.sweeper.pruner=null"]}
# --only's names of the contenders.
SHORT_NAMES = {"pruning": "pruning (median)", "no-pruning": "no pruning"}


def run_search(work: Path, name: str, extra: list[str], trials: int, epochs: int, seed: int,
               threads: int) -> dict[str, Any]:
    """One search in its own ``dlkit-train -m`` process.

    Args:
        work: The folder the search runs in and writes to.
        name: A key of :data:`CONTENDERS` (its sweep folder is named after it).
        extra: Overrides of this contender.
        trials: ``hydra.sweeper.n_trials``.
        epochs: ``trainer.max_epochs`` of every trial.
        seed: The TPE sampler's seed.
        threads: ``OMP_NUM_THREADS`` of the search process.

    Returns:
        ``{"best_val", "test", "wall", "epochs", "pruned", "trials"}``.

    Raises:
        RuntimeError: The search process failed (the message holds the end of its output).
    """
    sweep = work / name.replace(" ", "_").replace("(", "").replace(")", "") / f"seed{seed}"
    cmd = [sys.executable, "-m", "dlkit.train", "-m", "hparams_search=lenet_digits_optuna",
           f"paths.log_dir={work / 'logs'}", f"hydra.sweep.dir={sweep}", f"hydra.sweeper.n_trials={trials}",
           f"hydra.sweeper.sampler.seed={seed}", f"trainer.max_epochs={epochs}", "++trainer.enable_progress_bar=false",
           "~callbacks.rich_progress_bar", "~callbacks.model_summary", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    best = OmegaConf.load(sweep / "best.yaml")
    study = optuna.load_study(study_name=str(best.study_name), storage=str(best.storage))
    epochs_trained = sum(len(t.intermediate_values) for t in study.trials)
    test = json.loads((Path(str(best.best_job_dir)) / "metrics.json").read_text()).get("test/acc")
    return {"best_val": float(best.best_value), "test": test, "wall": wall, "epochs": epochs_trained,
            "pruned": int(best.trials.get("pruned", 0)), "trials": trials}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the searches and print the table.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds, sampler seeds 42, 43, ...")
    # LeNet on digits is small: one intra-op thread per job avoids oversubscribing shared cores.
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the search process")
    # Each search is a fresh process (~10 s before its first trial): a smoke run can do with one.
    parser.add_argument("--only", nargs="+", choices=SHORT_NAMES, default=None,
                        help="contenders to run (default: both)")
    args = parser.parse_args(argv)
    names = [SHORT_NAMES[n] for n in args.only] if args.only else list(CONTENDERS)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(cpu_description())
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in names:
                res = run_search(Path(tmp), name, CONTENDERS[name], args.trials, args.epochs, 42 + r, args.threads)
                results[name].append(res)
                print(f"round {r}: {name}: best val/acc_best {res['best_val']:.4f} (test/acc {res['test']:.4f}), "
                      f"{res['wall']:.1f} s, {res['epochs']} epochs, {res['pruned']} pruned", flush=True)

    def med(rows: list[dict[str, Any]], key: str) -> str:
        values = [float(r[key]) for r in rows]
        mid = statistics.median(values)
        spread = f" ({min(values):.4g}-{max(values):.4g})" if len(values) > 1 else ""
        return f"{mid:.4g}{spread}"

    print(f"\n{args.trials} trials x up to {args.epochs} epochs, {args.rounds} round(s), medians (range)")
    print("| search | best val/acc_best | its test/acc | wall time s | epochs trained | pruned trials |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        print(f"| {name} | {med(rows, 'best_val')} | {med(rows, 'test')} | {med(rows, 'wall')} | "
              f"{med(rows, 'epochs')} | {med(rows, 'pruned')} |")


if __name__ == "__main__":
    main()
