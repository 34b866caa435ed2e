"""Tutorial 2 — the command-line run, composed and launched from Python.

`dlkit-train` is `dlkit.train.train(cfg)` behind Hydra's command line. Composing the
config in-process (as the tests do) lets a notebook launch, inspect and compare runs.

Run it:  .venv/bin/python tutorials/02_hydra_from_python.py
The same run from the shell:
    dlkit-train experiment=mlp_diabetes trainer.max_epochs=30 optimizer.lr=0.003
"""

import os
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from dlkit.train import train

EPOCHS = int(os.environ.get("DLKIT_TUTORIAL_EPOCHS", 30))
out = Path(tempfile.mkdtemp(prefix="dlkit-tutorial-"))

with initialize_config_module(config_module="dlkit.conf", version_base="1.3"):
    cfg = compose(
        config_name="train",
        overrides=[
            "experiment=mlp_diabetes",  # a regression task on scikit-learn's diabetes data
            f"trainer.max_epochs={EPOCHS}",
            "optimizer.lr=0.003",
            "~callbacks.rich_progress_bar",
        ],
        return_hydra_config=True,
    )
# @hydra.main would create the run folder; here we choose it.
with open_dict(cfg):
    cfg.hydra.runtime.output_dir = str(out)
HydraConfig.instance().set_config(cfg)
print(OmegaConf.to_yaml(cfg.model))

metrics, objects = train(cfg)
print({k: round(v, 4) for k, v in metrics.items() if k.startswith("test/")})
print("run folder:", out, sorted(p.name for p in out.iterdir()))
print("open it with: tensorboard --logdir", out / "tensorboard")
assert (out / "metrics.json").is_file()
