"""Keras' summary table: the per-layer trainable column and the totals of a frozen model."""

from __future__ import annotations

import torch

from dlkit import Seq2Seq
from dlkit.models import create_model
from dlkit.tasks.summary import ModelSummary, summarize


def flags(summary: ModelSummary) -> dict[str, str]:
    return {row[0]: flag for row, flag in zip(summary.rows, summary.trainable)}


def test_trainable_column_says_yes_no_partial() -> None:
    net = create_model("lenet5")
    net.freeze(["conv1", "conv2"])
    net.freeze("fc1", pattern="*.weight")
    summary = summarize(net, torch.zeros(1, 1, 32, 32))
    assert flags(summary) == {
        "features.0": "N", "features.1": "-", "features.2": "-",
        "features.3": "N", "features.4": "-", "features.5": "-",
        "head.flatten": "-", "head.fc1": "partial", "head.act1": "-", "head.drop1": "-",
        "head.fc2": "Y", "head.act2": "-", "head.drop2": "-", "head.fc3": "Y",
    }  # fmt: skip
    frozen = 156 + 2416 + 400 * 120
    assert summary.non_trainable_params == frozen
    assert summary.trainable_params == summary.total_params - frozen
    table = str(summary).splitlines()
    assert table[2].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#", "Trainable"]
    assert table[4].split() == ["features.0", "(Conv2d)", "[1,6,28,28]", "156", "N"]
    assert any(line.split()[-1] == "partial" for line in table)
    assert all(line == line.rstrip() for line in table)


def test_frozen_batchnorm_affine_is_non_trainable_and_statistics_are_not_counted() -> None:
    net = create_model("resnet18", num_classes=10, small_input=True, stem_width=8)
    net.freeze_to(-1)
    summary = summarize(net)
    head = sum(p.numel() for p in net.fc.parameters())
    assert summary.trainable_params == head
    assert summary.non_trainable_params == sum(p.numel() for p in net.parameters()) - head
    bn_rows = [(row, f) for row, f in zip(summary.rows, summary.trainable) if row[1] == "BatchNorm2d"]
    assert bn_rows and all(f == "N" and row[3] == 2 * net.get_submodule(row[0]).num_features
                           for row, f in bn_rows)  # weight and bias only: buffers are not params
    net.freeze_to(-1, bn="train")
    assert all(f == "Y" for row, f in zip(summary.rows, summarize(net).trainable) if row[1] == "BatchNorm2d")


def test_a_summary_without_flags_prints_three_columns() -> None:
    summary = ModelSummary("M", [("fc", "Linear", "?", 6)], 6, 6, 0)
    assert str(summary).splitlines()[2].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#"]


def test_a_seq2seq_summary_keeps_the_trainable_column() -> None:
    net = create_model("seq2seq_bahdanau", src_vocab_size=20, tgt_vocab_size=12)
    net.freeze("encoder")
    summary = Seq2Seq(net).summary(print_fn=lambda *_: None)
    assert len(summary.trainable) == len(summary.rows) and "N" in summary.trainable and "Y" in summary.trainable
    frozen = next(g for g in net.group_status() if g.name == "encoder")
    assert summary.non_trainable_params == frozen.params > 0
    assert "Trainable" in str(summary)
