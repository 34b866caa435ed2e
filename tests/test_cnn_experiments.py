"""The CNN experiments on Fashion-MNIST: each composes, trains a few steps, and learns.

Every run keeps the experiment's model, optimiser, loss and augmentation and shrinks the
rest: the training split is cut to 80 images, 8 per class (``data.val_size`` holds out
the others, stratified), so every epoch sees the same images, and the epoch-mean
training loss of the last epoch must be below the first one's. (A fixed subset rather than
``trainer.overfit_batches``: the loss is then measured on the data the real run sees,
in shuffled batches.) The cosine
schedule is dropped and SGD's learning rate scaled to the small batch, so the few steps
run as the first steps of a real run would.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dlkit.callbacks import History
from dlkit.config import CONF_DIR
from dlkit.train import train
from tests.conftest import FAST, needs_fashion_mnist

pytestmark = [
    pytest.mark.slow,
    # Batches of 20 small images: a second intra-op thread only adds barriers, which wait
    # long on cores shared with other processes (see tests/models/conftest.py).
    pytest.mark.usefixtures("one_thread"),
    needs_fashion_mnist,
]

TRAIN_IMAGES = 80
BATCH_SIZE = 20
# Fashion-MNIST's 60,000 training images minus the 80 kept for training (4 batches of 20).
VAL_SIZE = 60_000 - TRAIN_IMAGES

# Per experiment: input side (the smallest that keeps the model's shape: AlexNet needs
# 63 px, LeNet-5 is built for 32, GoogLeNet's stem divides by 8), epochs, and extra
# overrides. AlexNet, without normalisation layers, needs more steps to leave ln 10.
EXPERIMENTS: dict[str, tuple[int, int, list[str]]] = {
    "lenet5_fashion": (32, 3, []),
    "resnet18_fashion": (16, 3, []),
    "seresnet18_fashion": (16, 3, []),
    "vgg11_fashion": (16, 3, []),
    # The auxiliary heads too: their loss joins the training loss (0.3 x each).
    "googlenet_fashion": (32, 3, ["model.aux_logits=true"]),
    "alexnet_fashion": (64, 6, []),
}


def tiny_overrides(experiment: str) -> list[str]:
    """Overrides that shrink ``experiment`` to a few seconds on 80 fixed training images."""
    side, epochs, extra = EXPERIMENTS[experiment]
    return [
        f"experiment={experiment}",
        f"trainer.max_epochs={epochs}",
        f"data.batch_size={BATCH_SIZE}",
        f"data.val_size={VAL_SIZE}",
        f"data.resize={side}",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        # A real run's first steps use the peak learning rate; a cosine spread over a
        # dozen steps would anneal it to zero before anything is learned.
        "~scheduler",
        "~logger",
        # Checkpoints of AlexNet's 57 M parameters would cost more than its training.
        "~callbacks.model_checkpoint",
        "~callbacks.last_checkpoint",
        "+trainer.enable_checkpointing=false",
        "+callbacks.history._target_=dlkit.callbacks.History",
        *FAST,
        *extra,
    ]


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_experiment_trains_and_lowers_the_loss(experiment: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(*tiny_overrides(experiment))
    assert cfg.task_name == experiment
    if cfg.optimizer._target_ == "torch.optim.SGD":
        # An SGD learning rate belongs to its batch size and scales linearly with it
        # (Adam's per-weight steps do not): keep the experiment's lr per image.
        full_batch = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml").data.batch_size
        cfg.optimizer.lr *= BATCH_SIZE / full_batch
    metrics, objects = train(cfg)

    assert len(objects["datamodule"].splits["train"][0]) == TRAIN_IMAGES
    history = next(c for c in objects["trainer"].callbacks if isinstance(c, History))
    losses = history.history["train/loss"]
    assert len(losses) == cfg.trainer.max_epochs and all(map(math.isfinite, losses)), losses
    assert losses[-1] < losses[0], f"{experiment}: training loss per epoch {losses}"
    assert "test/acc" in metrics
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= saved["test/acc"] <= 1.0 and saved["task_name"] == experiment
