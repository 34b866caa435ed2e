"""WeightConstraint: the constraint holds after every optimiser step, from Python and from the config."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from sklearn.datasets import load_digits

from dlkit import Classifier, create_model
from dlkit.callbacks import WeightConstraint
from dlkit.layers import MaxNorm

pytestmark = pytest.mark.usefixtures("one_thread")


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x[:256] / 16.0).astype(np.float32), y[:256]


class Norms(L.Callback):
    """Test-only: the largest unit norm of every Linear after each batch (after the constraint)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append(max(float(m.weight.norm(dim=1).max()) for m in pl_module.net.modules()
                             if isinstance(m, torch.nn.Linear)))  # fmt: skip


@pytest.mark.parametrize("accumulate", [1, 2])
def test_max_norm_holds_after_every_step(accumulate: int) -> None:
    L.seed_everything(0, verbose=False)
    clf = Classifier(create_model("mlp", in_features=64, hidden_sizes=(32,), num_classes=10))
    clf.compile(optimizer="sgd", lr=1.0)  # a large rate pushes the rows past the bound
    norms = Norms()
    x, y = _digits()
    clf.fit(x, y, epochs=2, batch_size=32, callbacks=[WeightConstraint(MaxNorm(max_value=0.5)), norms],
            verbose=False, enable_model_summary=False, accumulate_grad_batches=accumulate)  # fmt: skip
    # Norms runs after the constraint: at every step's end the bound holds.
    stepped = norms.seen[accumulate - 1 :: accumulate]
    assert stepped and max(stepped) <= 0.5 + 1e-5


def test_without_the_constraint_the_bound_is_passed() -> None:
    # The test above would pass vacuously if SGD at lr 1 never left the bound.
    L.seed_everything(0, verbose=False)
    clf = Classifier(create_model("mlp", in_features=64, hidden_sizes=(32,), num_classes=10))
    clf.compile(optimizer="sgd", lr=1.0)
    norms = Norms()
    x, y = _digits()
    clf.fit(x, y, epochs=2, batch_size=32, callbacks=[norms], verbose=False, enable_model_summary=False)
    assert max(norms.seen) > 0.5


def test_the_config_option_builds_a_max_norm(compose_train) -> None:
    cfg = compose_train("callbacks=[default,max_norm]", "callbacks.max_norm.constraint.max_value=2.0")
    callback = instantiate(cfg.callbacks.max_norm)
    assert isinstance(callback, WeightConstraint) and isinstance(callback.constraint, MaxNorm)
    assert callback.constraint.max_value == 2.0


def test_a_constraint_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"expected a callable constraint \(e\.g\. dlkit\.layers\.MaxNorm"):
        WeightConstraint(3.0)
