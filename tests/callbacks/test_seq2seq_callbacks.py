"""Seq2seq callbacks: attention heatmaps and text in TensorBoard, the teacher-forcing schedule."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from dlkit.callbacks import AttentionHeatmapLogger, TeacherForcingSchedule
from dlkit.callbacks.attention_logger import attention_figure, token_label
from dlkit.data import DateTranslationDataModule
from dlkit.tasks import Seq2Seq
from tests.tasks.seq2seq_standins import CopyOracle, date_data, tiny_task

# Tiny models: a second intra-op thread only adds contention.
pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"verbose": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def dates() -> DateTranslationDataModule:
    return date_data(num_train=128, num_val=32, num_test=32, batch_size=32, seed=1)


def _task(dm: DateTranslationDataModule) -> Seq2Seq:
    return tiny_task(dm, metrics=["token_acc"])


def _events(event_dir: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    """``({image tag: count}, {text tag: [markdown, ...]})`` of TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images: dict[str, int] = {}
    texts: dict[str, list[str]] = {}
    for f in sorted(event_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            images[tag] = images.get(tag, 0) + len(acc.Images(tag))
        for tag in acc.Tags()["tensors"]:
            for event in acc.Tensors(tag):
                texts.setdefault(tag, []).append(event.tensor_proto.string_val[0].decode())
    return images, texts


def test_attention_figure_labels_its_axes_with_the_tokens() -> None:
    weights = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.25, 0.25]])
    fig = attention_figure(weights, ["a", " ", "<eos>"], ["x", "<eos>"], cell=3)
    heatmap, colour_bar = fig.axes
    assert [t.get_text() for t in heatmap.get_xticklabels()] == ["a", "␣", "<eos>"]  # source tokens across
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["x", "<eos>"]  # predicted tokens down
    assert (heatmap.get_xlabel(), heatmap.get_ylabel()) == ("source tokens", "predicted tokens")
    assert "rows = predicted tokens, columns = source tokens" in heatmap.get_title()
    assert colour_bar.get_ylabel() == "attention weight"
    assert heatmap.images[0].get_array().tolist() == weights.tolist()
    with pytest.raises(ValueError, match=r"\(T, S\)"):
        attention_figure(torch.ones(2, 2, 2), [], [])
    with pytest.raises(ValueError, match="2 predicted and 2 source tokens"):
        attention_figure(weights, ["a", "b"], ["x", "y"])


def test_attention_figure_docstring_example_runs(docstring_examples) -> None:
    docstring_examples(attention_figure)


def test_heatmaps_and_text_panel_reach_tensorboard(dates, tmp_path: Path) -> None:
    task = _task(dates)
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    cb = AttentionHeatmapLogger(every_n_epochs=2, num_examples=3, cell=4)
    task.fit(dates, epochs=3, logger=logger, callbacks=[cb], limit_train_batches=1, **QUIET)
    images, texts = _events(tmp_path / "tb")
    # Epochs 0 and 2 of 0..2: two of each image.
    assert images == {"attention/0": 2, "attention/1": 2, "attention/2": 2}
    (panel, *_), = texts.values()
    source, reference = dates.examples("val")[0]
    assert source.replace("|", "\\|") in panel and reference in panel and "columns" in panel


def test_rendered_heatmaps_are_labelled_with_the_source_and_predicted_tokens(dates) -> None:
    task = _task(dates)
    task.bind_data(dates)
    examples = dates.examples("val")[:2]
    panel = AttentionHeatmapLogger(cell=2).render(task, examples)
    assert len(panel["figures"]) == len(panel["images"]) == 2
    for (source, _), fig, image, prediction in zip(examples, panel["figures"], panel["images"], panel["predictions"]):
        heatmap = fig.axes[0]
        src = [token_label(t) for t in source]  # one token per character
        rows = min(len(prediction) + 1, task.max_decode_len)  # + <eos>, unless cut at max length
        assert [t.get_text() for t in heatmap.get_xticklabels()] == src
        out = [t.get_text() for t in heatmap.get_yticklabels()]
        assert len(out) == rows and "".join(out[: len(prediction)]) == prediction.replace(" ", "␣")
        assert heatmap.images[0].get_array().shape == (rows, len(src))
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert task.net.training  # render restores the mode it found


def test_networks_without_attention_get_the_text_panel_only(dates) -> None:
    task = Seq2Seq(CopyOracle(len(dates.src_vocab)), metrics=["token_acc"])
    task.bind_data(dates)
    task.tgt_vocab = dates.src_vocab  # the copier writes source tokens
    panel = AttentionHeatmapLogger().render(task, dates.examples("val")[:2])
    assert panel["images"] == [] and panel["predictions"] == [s for s, _ in dates.examples("val")[:2]]
    assert "| yes |" not in panel["text"] and "| no |" in panel["text"]


def test_without_tensorboard_the_logger_does_nothing(dates, tmp_path: Path, caplog) -> None:
    task = _task(dates)
    with caplog.at_level(logging.DEBUG, logger="dlkit.callbacks.attention_logger"):
        task.fit(dates, epochs=1, logger=CSVLogger(tmp_path), callbacks=[AttentionHeatmapLogger()],
                 limit_train_batches=1, **QUIET)
    assert "no TensorBoard logger" in caplog.text


def test_teacher_forcing_schedule_sets_and_logs_the_ratio_every_epoch(dates) -> None:
    task = _task(dates)
    history = task.fit(dates, epochs=3, callbacks=[TeacherForcingSchedule(1.0, 0.5)], limit_train_batches=1,
                       limit_val_batches=1, **QUIET)
    assert history.history["train/teacher_forcing"] == pytest.approx([1.0, 0.75, 0.5])
    assert task.net.ratios[0] == 1.0 and 0.5 in task.net.ratios and task.teacher_forcing == 0.5


@pytest.mark.parametrize("kind", ["linear", "exponential", "inverse_sigmoid"])
def test_schedules_go_from_start_to_end_monotonically(kind: str) -> None:
    schedule = TeacherForcingSchedule(0.9, 0.3, kind=kind)
    values = [schedule.ratio(e, 8) for e in range(12)]
    assert values[0] == pytest.approx(0.9) and values[8:] == pytest.approx([0.3] * 4)
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_schedule_rejects_bad_values_and_tasks_without_a_ratio(dates) -> None:
    for kwargs, key in [({"start": 1.5}, "start"), ({"end": -0.1}, "end"), ({"num_epochs": 0}, "num_epochs"),
                        ({"kind": "cosine"}, "kind"), ({"end": 0.0, "kind": "exponential"}, "exponential")]:
        with pytest.raises(ValueError, match=key):
            TeacherForcingSchedule(**kwargs)
    from dlkit import Classifier, create_model

    clf = Classifier(create_model("mlp", in_features=4, hidden_sizes=(4,), num_classes=2))
    with pytest.raises(TypeError, match="teacher_forcing"):
        clf.fit(torch.zeros(8, 4), torch.zeros(8, dtype=torch.long), epochs=1,
                callbacks=[TeacherForcingSchedule()], **QUIET)


def test_token_label_example_and_public_name(docstring_examples) -> None:
    import dlkit.callbacks

    assert dlkit.callbacks.token_label is token_label and dlkit.callbacks.attention_figure is attention_figure
    docstring_examples(token_label)
