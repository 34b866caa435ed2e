"""Guide — the command-line run, composed and launched from Python.

`dlkit-train` is `dlkit.train.train(cfg)` behind Hydra's command line. Composing the
config in-process with `dlkit.config.compose_config` (as the tests do) lets a notebook
launch, inspect and compare runs; it takes the same overrides as the command line.

Run it:  .venv/bin/python tutorials/guide_hydra_from_python.py
The same run from the shell:
    dlkit-train experiment=mlp_diabetes trainer.max_epochs=30 optimizer.lr=0.003
"""

import os
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from dlkit.config import compose_config
from dlkit.train import train

EPOCHS = int(os.environ.get("DLKIT_TUTORIAL_EPOCHS", 30))
out = Path(tempfile.mkdtemp(prefix="dlkit-tutorial-"))

cfg = compose_config(
    "train",
    [
        "experiment=mlp_diabetes",  # a regression task on scikit-learn's diabetes data
        f"trainer.max_epochs={EPOCHS}",
        "optimizer.lr=0.003",
        "~callbacks.rich_progress_bar",
    ],
    output_dir=out,  # without it: logs/<task_name>/runs/<timestamp>, as dlkit-train
)
print(OmegaConf.to_yaml(cfg.model))

metrics, objects = train(cfg)
print({k: round(v, 4) for k, v in metrics.items() if k.startswith("test/")})
print("run folder:", out, sorted(p.name for p in out.iterdir()))
print("open it with: tensorboard --logdir", out / "tensorboard")
assert (out / "metrics.json").is_file()
