"""Does pretraining on digits 0-4 help a LeNet-5 learn digits 5-9 from 10 labels per class?

Runs ``dlkit-train experiment=finetune_digits`` (fine-tuned: pretrained on 0-4, new head,
convolutions frozen then unfrozen by the experiment's plan) and the same experiment with
``finetune=scratch`` (the same model, data, augmentation, epochs, learning rate and
schedule from random weights), over several seeds; each seed draws another
10-per-class training subset (and split). Both arms are tested on the held-out 5-9
images of their seed, with the checkpoint that was best on validation. The pretraining
runs once, in-process, the first time a fine-tuned run finds no checkpoint in
``--log-dir``; its time is reported apart. The two arms alternate which runs first.

Only what cannot change the numbers is switched off: the progress bar, the model table,
``last.ckpt``, the LR logger and TensorBoard. Run by hand::

    .venv/bin/python scripts/bench_finetune_digits.py --seeds 1 2 3 4 5
    .venv/bin/python scripts/bench_finetune_digits.py --seeds 1 2 3 data.labels_per_class=5
    # A smoke run (numbers meaningless): one seed, pretraining and both arms one epoch of 2 batches.
    .venv/bin/python scripts/bench_finetune_digits.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from _bench_common import compose_quiet, cpu_description, timed_train
from omegaconf import open_dict

ARMS = {"fine-tuned": [], "from scratch": ["finetune=scratch"]}
QUIET = ["~logger"]
QUIET_CALLBACKS = ("model_summary", "last_checkpoint", "lr_logger")
# --quick, for both arms and the pretraining: one epoch of two batches, one batch each of
# validation and test (numbers meaningless).
QUICK_OVERRIDES = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                   "+trainer.limit_test_batches=1"]


def run(arm: str, seed: int, overrides: list[str], log_dir: Path,
        pretrain_overrides: Sequence[str] = ()) -> tuple[float, float, float]:
    """One run of an arm; a first fine-tuned run's seconds include the pretraining.

    Args:
        arm: A key of :data:`ARMS`.
        seed: The run's seed (it draws the training subset too).
        overrides: Hydra overrides of the run.
        log_dir: ``paths.log_dir``: where the pretrained checkpoint is looked for and made.
        pretrain_overrides: Further overrides of the pretraining run, if this one starts it.

    Returns:
        ``(test accuracy, best val accuracy, wall seconds)``.
    """
    out = Path(tempfile.mkdtemp(dir=log_dir))
    cfg = compose_quiet("finetune_digits", [*ARMS[arm], f"seed={seed}", *QUIET, *overrides], out, {},
                        drop=QUIET_CALLBACKS)
    with open_dict(cfg):
        cfg.paths.log_dir = str(log_dir)
        if cfg.get("pretrain"):
            cfg.pretrain.overrides = [*cfg.pretrain.overrides, *QUIET, "~callbacks.rich_progress_bar",
                                      "~callbacks.model_summary", "+trainer.enable_progress_bar=false",
                                      *pretrain_overrides]
    # Lightning's result tables and checkpoint messages.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        metrics, _, wall = timed_train(cfg)
    shutil.rmtree(out)
    return metrics["test/acc"], metrics["val/acc_best"], wall


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):5.1f} ± {100 * std:4.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    """Run both arms over the seeds and print the table.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 1 2 3 4 5; quick 1")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (batches of 10: one is fastest)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where the pretrained checkpoint is looked for and made (default: a fresh temp dir)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few rounds: a smoke run, numbers meaningless")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both arms, e.g. data.labels_per_class=5")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([1] if args.quick else [1, 2, 3, 4, 5])
    # The user's overrides come last, so they win over --quick's.
    overrides = [*QUICK_OVERRIDES, *args.overrides] if args.quick else list(args.overrides)
    pretrain_overrides = QUICK_OVERRIDES if args.quick else []
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("dlkit").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench_finetune_digits_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    pretrained = log_dir / "pretrained" / "lenet5_digits_0to4.ckpt"
    made_here = not pretrained.exists()

    started = time.perf_counter()
    results: dict[str, list[tuple[float, float, float]]] = {arm: [] for arm in ARMS}
    for i, seed in enumerate(seeds):
        order = list(ARMS) if i % 2 == 0 else list(ARMS)[::-1]
        for arm in order:
            results[arm].append(run(arm, seed, overrides, log_dir, pretrain_overrides))
    if made_here:
        (pre,) = (log_dir / "pretrain_digits_0to4" / "runs").glob("*/metrics.json")
        done = json.loads(pre.read_text())
        pretraining = (f"{done['wall_time_s']:.1f} s once, {done['epochs']} epochs, "
                       f"test acc on 0-4 {100 * done['test/acc']:.1f} %")
        results["fine-tuned"][0] = (*results["fine-tuned"][0][:2], results["fine-tuned"][0][2] - done["wall_time_s"])
    else:
        pretraining = f"reused {pretrained}"

    print(f"\nLeNet-5, digits 5-9 from 10 labels per class: experiment=finetune_digits vs finetune=scratch; "
          f"{len(seeds)} seeds, {args.threads} thread(s); overrides: {' '.join(overrides) or 'none'}")
    print(f"CPU: {cpu_description()}")
    print(f"Pretraining (digits 0-4): {pretraining}; whole benchmark {time.perf_counter() - started:.0f} s\n")
    print("| seed | fine-tuned test acc (%) | from scratch test acc (%) | difference (points) |")
    print("|-----:|------------------------:|--------------------------:|--------------------:|")
    tuned, scratch = [r[0] for r in results["fine-tuned"]], [r[0] for r in results["from scratch"]]
    for seed, a, b in zip(seeds, tuned, scratch):
        print(f"| {seed:4d} | {100 * a:23.1f} | {100 * b:25.1f} | {100 * (a - b):+19.1f} |")
    diffs = [a - b for a, b in zip(tuned, scratch)]
    print(f"| mean ± std | {_mean_std(tuned):>13} | {_mean_std(scratch):>15} | {_mean_std(diffs):>19} |")
    for arm, rows in results.items():
        print(f"{arm}: best val acc {_mean_std([r[1] for r in rows])} %, "
              f"median run {statistics.median(r[2] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
