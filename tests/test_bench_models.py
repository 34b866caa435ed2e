"""The correctness half of ``scripts/bench_models.py``: every torch.nn twin is one.

Each twin holds its dlkit model's weights and must give the same eval outputs, and the
same loss and gradients in training mode (where no dropout is active), on a tiny batch.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import load_script

pytestmark = pytest.mark.usefixtures("one_thread")


bench_models = load_script("bench_models")


@pytest.mark.parametrize("name", list(bench_models.PAIRS))
def test_twin_matches_its_dlkit_model(name: str) -> None:
    pair = bench_models.PAIRS[name](quick=True)
    bench_models.check_twin(pair)


def test_a_changed_weight_is_caught() -> None:
    pair = bench_models.pair_lenet5(quick=True)
    with torch.no_grad():
        pair.twin.head.fc3.bias.add_(0.1)
    with pytest.raises(AssertionError):
        bench_models.check_twin(pair)


def test_swapped_recurrent_layers_are_torch_nn() -> None:
    pair = bench_models.pair_seq2seq_bahdanau(quick=True)
    kinds = {
        type(m).__mro__[1]
        for m in pair.twin.modules()
        if isinstance(m, (torch.nn.GRU, torch.nn.LSTM))
    }
    assert kinds == {torch.nn.GRU}
    assert not any(
        type(m).__module__.startswith("dlkit.layers.recurrent") for m in pair.twin.modules()
    )
