"""The correctness half of ``scripts/bench_models.py``: every torch.nn twin is one.

Each twin holds its dlkit model's weights and must give the same eval outputs, and the
same loss and gradients in training mode (where no dropout is active), on a tiny batch.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

pytestmark = pytest.mark.usefixtures("one_thread")


def _load_script():
    # The script imports its sibling ``_bench_common``, as it does when run from scripts/.
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("bench_models", SCRIPTS / "bench_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


bench_models = _load_script()


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
