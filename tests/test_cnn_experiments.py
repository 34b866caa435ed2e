"""The CNN experiments on Fashion-MNIST: each composes, trains for a few steps, and learns.

Every run keeps the experiment's model, optimiser, schedule, loss and augmentation, and
shrinks only the data: the training split is cut to 80 images, 8 per class
(``data.val_size`` holds out the rest, stratified), so each epoch sees the same images and the epoch-mean training loss of
the last epoch must be below the first one's. (``trainer.overfit_batches`` would not do:
dlkit's in-memory loader reshuffles every epoch, so its batches change.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dlkit.callbacks import History
from dlkit.data.idx import FASHION_MNIST, find_idx_files
from dlkit.train import train
from tests.conftest import FAST

try:
    find_idx_files(FASHION_MNIST, None)
    HAVE_FASHION = True
except FileNotFoundError:
    HAVE_FASHION = False

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAVE_FASHION,
        reason="Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or set DLKIT_DATA_DIR)",
    ),
]

TRAIN_IMAGES = 80
# Fashion-MNIST's 60,000 training images minus the 80 kept for training (4 batches of 20).
VAL_SIZE = 60_000 - TRAIN_IMAGES

# Per experiment: input side (the smallest that keeps the model's shape; AlexNet needs
# 63 px, LeNet-5 is built for 32) and extra overrides that exercise a model option.
EXPERIMENTS = {
    "lenet5_fashion": (32, []),
    "resnet18_fashion": (16, []),
    "seresnet18_fashion": (16, []),
    "vgg11_fashion": (16, []),
    # The auxiliary heads too: their loss joins the training loss (0.3 x each).
    "googlenet_fashion": (32, ["model.aux_logits=true"]),
    "alexnet_fashion": (64, []),
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Batches of 20 small images: a second intra-op thread only adds barriers, which wait
    # long on cores shared with other processes (see tests/models/conftest.py).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_experiment_trains_and_lowers_the_loss(experiment: str, compose_train, tmp_path: Path) -> None:
    side, extra = EXPERIMENTS[experiment]
    cfg = compose_train(
        f"experiment={experiment}",
        "trainer.max_epochs=3",
        "data.batch_size=20",
        f"data.val_size={VAL_SIZE}",
        f"data.resize={side}",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "~logger",
        # Checkpoints of AlexNet's 57 M parameters would cost more than its training.
        "~callbacks.model_checkpoint",
        "+trainer.enable_checkpointing=false",
        "+callbacks.history._target_=dlkit.callbacks.History",
        *FAST,
        *extra,
    )
    assert cfg.task_name == experiment and cfg.trainer.max_epochs == 3
    metrics, objects = train(cfg)

    assert len(objects["datamodule"].splits["train"][0]) == TRAIN_IMAGES
    history = next(c for c in objects["trainer"].callbacks if isinstance(c, History))
    losses = history.history["train/loss"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], f"{experiment}: training loss per epoch {losses}"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= saved["test/acc"] <= 1.0 and saved["task_name"] == experiment
