"""rnn_classifier: images read row by row, padded sequences, pooling, heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from dlkit.models import RNNClassifier, create_model

CELLS = ["rnn", "lstm", "gru"]
POOLINGS = ["last", "mean", "max"]


def build(seed: int = 0, **options) -> RNNClassifier:
    torch.manual_seed(seed)
    return create_model("rnn_classifier", **{"input_size": 5, "hidden_size": 6, "num_classes": 3, **options}).eval()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes_for_every_cell_pooling_and_direction(cell: str, pooling: str, bidirectional: bool) -> None:
    net = build(cell=cell, pooling=pooling, bidirectional=bidirectional, num_layers=2)
    x = torch.randn(4, 7, 5)
    assert net(x).shape == (4, 3)
    D = 2 if bidirectional else 1
    assert net.forward_features(x).shape == (4, 6 * D) == (4, net.num_features)
    assert net(x, lengths=torch.tensor([7, 1, 3, 5])).shape == (4, 3)


def test_images_are_read_row_by_row() -> None:
    net = build(input_size=None, img_size=4, in_chans=2)
    assert net.input_size == 8
    images = torch.randn(3, 2, 5, 4)  # (B, C, H, W)
    rows = images.permute(0, 2, 1, 3).reshape(3, 5, 8)  # step h reads both channels' row h
    assert_close(net(images), net(rows))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_steps_change_nothing(cell: str, pooling: str, bidirectional: bool) -> None:
    net = build(cell=cell, pooling=pooling, bidirectional=bidirectional)
    short = torch.randn(2, 3, 5)
    padded = torch.cat([short, torch.randn(2, 4, 5)], dim=1)  # garbage after step 3
    assert_close(net(padded, lengths=torch.tensor([3, 3])), net(short), atol=1e-6, rtol=1e-6)


def test_last_pooling_is_h_n_of_both_directions() -> None:
    net = build(cell="gru", bidirectional=True, pooling="last")
    x, lengths = torch.randn(2, 6, 5), torch.tensor([6, 4])
    outputs, _ = net.rnn(x, lengths=lengths)  # (B, T, 2H)
    features = net.forward_features(x, lengths)
    # Forward direction: output at each sequence's last valid step; backward: at step 0.
    assert_close(features[:, :6], outputs[torch.arange(2), lengths - 1, :6])
    assert_close(features[:, 6:], outputs[:, 0, 6:])


def test_mean_and_max_pool_over_valid_steps() -> None:
    x, lengths = torch.randn(2, 6, 5), torch.tensor([6, 2])
    for pooling, reduce in (("mean", lambda o: o.mean(0)), ("max", lambda o: o.amax(0))):
        net = build(pooling=pooling)
        outputs, _ = net.rnn(x, lengths=lengths)
        features = net.forward_features(x, lengths)
        assert_close(features[1], reduce(outputs[1, :2]))
        assert_close(features[0], reduce(outputs[0]))


def test_reset_classifier_and_backward() -> None:
    net = build(drop_rate=0.3).train()
    x = torch.randn(4, 7, 5, requires_grad=True)
    net(x).sum().backward()
    assert torch.isfinite(x.grad).all() and all(p.grad is not None for p in net.parameters())
    assert isinstance(net.get_classifier(), nn.Linear) and net.get_classifier().in_features == 6
    net.reset_classifier(7)
    assert net(x).shape == (4, 7) and net.num_classes == 7
    net.reset_classifier(0)
    assert net(x).shape == (4, 6) and isinstance(net.get_classifier(), nn.Identity)
    net.reset_classifier(2)
    assert net(x).shape == (4, 2)


def test_init_scheme_and_registry_defaults() -> None:
    net = create_model("rnn_classifier", img_size=28)
    assert net.cfg.cell == "lstm" and net.input_size == 28 and net.num_classes == 10
    zeroed = build(init="xavier_uniform")
    assert zeroed.rnn.bias_ih_l0.abs().sum() == 0


def test_bad_input_and_options_raise_clear_errors() -> None:
    net = build()
    with pytest.raises(ValueError, match=r"expected \(B, T, 5\) sequences .* got \(2, 7, 4\)"):
        net(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match=r"got \(2, 3, 8, 5\)"):
        net(torch.randn(2, 3, 8, 5))  # 3 channels, in_chans=1
    with pytest.raises(ValueError, match="needs model.input_size .* or model.img_size"):
        create_model("rnn_classifier")
    with pytest.raises(ValueError, match="model.num_classes must be an int >= 0, got None"):
        create_model("rnn_classifier", input_size=5, num_classes=None)
    with pytest.raises(ValueError, match="model.cell must be one of"):
        build(cell="transformer")
    with pytest.raises(ValueError, match="model.pooling must be one of"):
        build(pooling="attention")
