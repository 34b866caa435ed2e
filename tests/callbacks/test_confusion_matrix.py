"""ConfusionMatrix: counts of the whole validation set, drawn with class names, in TensorBoard and a PNG."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlkit import Classifier, create_model
from dlkit.callbacks import ConfusionMatrix
from dlkit.callbacks.confusion_matrix import confusion_matrix_figure
from dlkit.callbacks.figures import class_names_for
from dlkit.callbacks.validation_outputs import class_probabilities
from dlkit.data import DigitsDataModule
from dlkit.train import train
from tests.conftest import FAST

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"verbose": False, "enable_model_summary": False}
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(flatten=True, resize=None, batch_size=64)
    dm.setup("fit")
    return dm


def _image_steps(event_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for f in event_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"images": 0})
        acc.Reload()
        if tag in acc.Tags()["images"]:
            steps += [(e.step, e.width, e.height) for e in acc.Images(tag)]
    return steps


def _classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(create_model("mlp", in_features=64, hidden_sizes=[32], num_classes=10))


def test_cells_sum_to_the_validation_set_and_reach_tensorboard_and_png(digits, tmp_path: Path) -> None:
    calls: list[int] = []
    without = _classifier()
    without.net.register_forward_hook(lambda *_: calls.append(0))
    without.fit(digits, epochs=3, limit_train_batches=4, **QUIET)
    clf = _classifier()
    clf.net.register_forward_hook(lambda *_: calls.append(1))
    cm = ConfusionMatrix(every_n_epochs=2, dirpath=tmp_path / "figs")
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    clf.fit(digits, epochs=3, logger=logger, callbacks=[cm], limit_train_batches=4, **QUIET)
    y_val = digits.splits["val"][1]
    assert cm.matrix.shape == (10, 10) and int(cm.matrix.sum()) == len(y_val) == 270
    assert cm.matrix.sum(dim=1).tolist() == torch.bincount(y_val, minlength=10).tolist()  # rows: true classes
    # Epochs 1 (every 2nd, 0-based) and 2 (the last); each PNG named by its epoch.
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "confusion_matrix_epoch001.png", "confusion_matrix_epoch002.png"]
    assert cm.png_path == tmp_path / "figs" / "confusion_matrix_epoch002.png"
    (first, last) = _image_steps(tmp_path / "tb", "confusion_matrix")
    assert (first[0], last[0]) == (8, 12) and first[1] > 300 and first[2] > 300  # global steps, pixels
    # The task's own validation forward is reused: the network runs as often as without the callback.
    assert calls.count(1) == calls.count(0) >= 3 * (4 + 5)


def test_axes_carry_the_class_names_from_the_argument_or_the_datamodule(digits, tmp_path: Path) -> None:
    clf = _classifier()
    cm = ConfusionMatrix(class_names=NAMES, normalize="true", dirpath=tmp_path)
    clf.fit(digits, epochs=1, callbacks=[cm], limit_train_batches=2, **QUIET)
    ax = cm.figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES == [t.get_text() for t in ax.get_yticklabels()]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert "normalised over true class" in ax.get_title() and len(cm.figure.axes) == 2  # + the colour bar
    shown = ax.images[0].get_array()
    assert shown.sum(axis=1).tolist() == pytest.approx([1.0] * 10)  # normalised rows; the counts stay in cm.matrix
    trainer = SimpleNamespace(datamodule=SimpleNamespace(class_names=("cat", "dog")))
    assert class_names_for(trainer, 2) == ["cat", "dog"]
    assert class_names_for(SimpleNamespace(datamodule=None), 3) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="class_names has 2 names but the network predicts 3"):
        class_names_for(trainer, 3)


def test_binary_one_logit_classifier_and_any_lightning_module(tmp_path: Path) -> None:
    class Plain(L.LightningModule):  # calls its net directly, not self(x): the callback runs a forward itself
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(3, 1)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.binary_cross_entropy_with_logits(self.net(x).squeeze(1), y)

        def validation_step(self, batch, batch_idx) -> None:
            self.net(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).float()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    cm = ConfusionMatrix(dirpath=tmp_path)
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[cm]).fit(Plain(), loader, loader)
    assert cm.matrix.shape == (2, 2) and int(cm.matrix.sum()) == 40
    assert cm.matrix.sum(dim=1).tolist() == [int((y == 0).sum()), int((y == 1).sum())]


def test_figure_of_counts_annotates_every_cell() -> None:
    fig = confusion_matrix_figure(torch.tensor([[3, 1], [0, 2]]), ["a", "b"], "t")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0", "1", "2", "3"]


@pytest.mark.parametrize(("kwargs", "key"), [({"every_n_epochs": 0}, "every_n_epochs"),
                                             ({"normalize": "rows"}, "normalize")])
def test_bad_values_name_the_argument(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ConfusionMatrix(**kwargs)


def test_the_config_composes_and_runs_a_fast_dev_run(compose_train, tmp_path: Path) -> None:
    # debug=fdr drops all callbacks (callbacks: null), so the fast_dev_run is asked of the trainer.
    cfg = compose_train("callbacks=[default,confusion_matrix]", "+trainer.fast_dev_run=true",
                        "callbacks.confusion_matrix.normalize=pred", *FAST)
    assert cfg.callbacks.confusion_matrix.normalize == "pred"
    _, objects = train(cfg)
    (cm,) = [c for c in objects["trainer"].callbacks if isinstance(c, ConfusionMatrix)]
    assert int(cm.matrix.sum()) == 64  # fast_dev_run: one validation batch
    assert (tmp_path / "run" / "figures" / "confusion_matrix_epoch000.png").is_file()


@pytest.mark.parametrize("obj", [confusion_matrix_figure, class_probabilities], ids=lambda f: f.__name__)
def test_docstring_examples_run(docstring_examples, obj) -> None:
    docstring_examples(obj)
