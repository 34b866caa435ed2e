"""Misclassified: the k validation images with the lowest true-class probability, captioned."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from dlkit import Classifier, create_model
from dlkit.callbacks import Misclassified
from dlkit.callbacks.figures import image_grid_figure
from dlkit.data import DigitsDataModule
from dlkit.train import train
from tests.conftest import FAST

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"verbose": False, "enable_model_summary": False}
NAMES = [f"digit {i}" for i in range(10)]


def _fit(dm: DigitsDataModule, callback: Misclassified, **kwargs: object) -> Classifier:
    torch.manual_seed(0)
    clf = Classifier(create_model("mlp", in_features=64, hidden_sizes=[16], num_classes=10))
    clf.fit(dm, epochs=1, callbacks=[callback], limit_train_batches=3, **QUIET, **kwargs)
    return clf


def test_worst_images_are_captioned_and_reach_tensorboard_and_png(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dm = DigitsDataModule(resize=None, batch_size=64)  # (B, 1, 8, 8) images; the MLP flattens them
    mis = Misclassified(k=9, class_names=NAMES, dirpath=tmp_path / "figs")
    clf = _fit(dm, mis, logger=TensorBoardLogger(tmp_path, name="tb", version=""))
    assert len(mis.worst) == 9
    x_val, y_val = dm.splits["val"]
    with torch.no_grad():
        probs = clf.net(x_val).softmax(1)
    wrong = probs.argmax(1) != y_val
    # The nine lowest true-class probabilities among all misclassified validation images, worst first.
    expected = probs[torch.arange(len(y_val)), y_val][wrong].sort().values[:9]
    assert [w["p_true"] for w in mis.worst] == pytest.approx(expected.tolist(), abs=1e-6)
    for w in mis.worst:
        assert w["true"] == int(y_val[w["index"]]) != w["pred"] == int(probs[w["index"]].argmax())
        assert w["p_pred"] >= w["p_true"]
    titles = [ax.get_title() for ax in mis.figure.axes if ax.get_title()]
    first = mis.worst[0]
    assert titles[0] == f"true digit {first['true']}\npred digit {first['pred']} {first['p_pred']:.2f}"
    assert len(titles) == 9 and "lowest true-class probability" in mis.figure.get_suptitle()
    assert mis.png_path == tmp_path / "figs" / "misclassified_epoch000.png" and mis.png_path.is_file()
    (events,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("misclassified")] == [3]


def test_non_image_inputs_are_skipped_with_one_warning(tmp_path: Path) -> None:
    mis = Misclassified(dirpath=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(DigitsDataModule(flatten=True, resize=None), mis)
    messages = [str(w.message) for w in caught if "Misclassified" in str(w.message)]
    assert len(messages) == 1 and "(B, C, H, W)" in messages[0] and "(64, 64)" in messages[0]
    assert mis.worst == [] and mis.figure is None and not any(tmp_path.iterdir())


@pytest.mark.parametrize(("kwargs", "key"), [({"k": 0}, "k"), ({"every_n_epochs": -1}, "every_n_epochs")])
def test_bad_values_name_the_argument(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        Misclassified(**kwargs)


def test_the_config_composes_and_runs_a_fast_dev_run(compose_train, tmp_path: Path) -> None:
    # debug=fdr drops all callbacks (callbacks: null), so the fast_dev_run is asked of the trainer.
    cfg = compose_train("callbacks=[default,misclassified]", "+trainer.fast_dev_run=true",
                        "callbacks.misclassified.k=4", *FAST)
    _, objects = train(cfg)
    (mis,) = [c for c in objects["trainer"].callbacks if isinstance(c, Misclassified)]
    assert len(mis.worst) == 4  # an untrained LeNet-5 gets most of one batch wrong
    assert (tmp_path / "run" / "figures" / "misclassified_epoch000.png").is_file()


def test_docstring_example_runs(docstring_examples) -> None:
    docstring_examples(image_grid_figure)
