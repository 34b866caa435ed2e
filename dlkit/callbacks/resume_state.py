"""What a checkpoint needs beyond Lightning's own state for a resumed run to continue identically."""

from __future__ import annotations

import math
import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch

__all__ = ["ResumeState"]


class ResumeState(L.Callback):
    """Save and restore the global random generators and the metrics logged so far.

    Lightning's checkpoint restores weights, optimiser, schedulers, loops, callbacks
    and the DataModule, but not the global random generators that dropout and
    augmentation without a generator of its own draw from. This callback stores
    Python's, NumPy's and torch's (CPU and CUDA) generator states in every checkpoint
    and sets them back when a run resumes, so the draws after a resume are the ones
    the uninterrupted run made. It also stores the metrics logged so far: a run
    resumed after its last epoch (killed while testing) has no epoch left to log them
    again, and reports the stored ones.

    It is a callback rather than part of the task so that any LightningModule gets it,
    and so that its state lives beside the other callbacks' in the checkpoint. A resume
    with another number of torch threads gets a warning: CPU kernels split their sums
    by thread, so results then match only up to float rounding.

    Example:
        >>> trainer = L.Trainer(callbacks=[ResumeState(), ModelCheckpoint()])
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._restored_metrics: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        version, py_state, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state: dict[str, Any] = {
            # Plain ints and tensors only, so the checkpoint loads with weights_only=True.
            "python": [version, torch.tensor(py_state, dtype=torch.int64), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
            "metrics": self._metrics(),
            "threads": torch.get_num_threads(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, py_state, gauss = state_dict["python"]
        random.setstate((version, tuple(py_state.tolist()), gauss))
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        self._restored_metrics = dict(state_dict.get("metrics", {}))
        threads = state_dict.get("threads")
        if threads is not None and threads != torch.get_num_threads():
            warnings.warn(
                f"The checkpoint was written by a run with {threads} torch threads and this one has "
                f"{torch.get_num_threads()}: CPU kernels split their sums by thread, so the resumed run "
                "matches the uninterrupted one only up to float rounding (set OMP_NUM_THREADS as before).",
                stacklevel=2,
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Metrics this fit did not log again (it resumed after its last epoch).
        for name, value in self._restored_metrics.items():
            if name not in trainer.callback_metrics:
                trainer.callback_metrics[name] = torch.tensor(value)
        self._restored_metrics = {}

    def _metrics(self) -> dict[str, float]:
        if self._trainer is None:
            return {}
        out = {}
        for name, value in self._trainer.callback_metrics.items():
            if getattr(value, "numel", lambda: 1)() == 1:
                number = float(value)
                if math.isfinite(number):
                    out[name] = number
        return out
