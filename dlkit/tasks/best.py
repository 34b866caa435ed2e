"""The best validation value of each metric so far, logged as ``val/<name>_best``.

Keras' ``ModelCheckpoint`` and lightning-hydra-template's ``val/acc_best`` answer the same
question: how good did this run get? The answer must survive a resume: a run killed after
its best epoch and resumed reports that epoch's value, as the uninterrupted run does, so
the trackers' values travel in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch.nn as nn
from torchmetrics import MaxMetric, MinMetric

__all__ = ["BestValueLogging"]


class BestValueLogging(L.LightningModule):
    """Mixin for a LightningModule: tracks and logs the best ``val/<name>`` of the run.

    Call :meth:`track_best` with the metrics to follow (after ``__init__``); every
    validation epoch then logs ``val/<name>_best`` (the maximum or minimum so far). The sanity check does not
    count, and a resumed run continues from the values stored in its checkpoint.

    Example:
        >>> class MyTask(BestValueLogging):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.track_best({"acc": "max", "loss": "min"}, prog_bar="acc")
        >>> sorted(MyTask().best_trackers)
        ['acc', 'loss']
    """

    # Checkpoint key of the best values so far.
    BEST_STATE_KEY = "dlkit_best_values"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.best_trackers = nn.ModuleDict()
        self._best_prog_bar = ""
        self._resumed_best: dict[str, Any] = {}

    def track_best(self, modes: Mapping[str, str], prog_bar: str = "") -> None:
        """Log ``val/<name>_best`` every validation epoch, for these metrics only.

        Args:
            modes: Metric name after ``val/`` -> ``"max"`` or ``"min"`` (which way is
                better), e.g. ``{"acc": "max"}``. Replaces what was tracked before.
            prog_bar: The name shown in the progress bar, if any.
        """
        self.best_trackers = nn.ModuleDict(
            {name: MaxMetric() if mode == "max" else MinMetric() for name, mode in modes.items()}
        )
        self._best_prog_bar = prog_bar

    def best_values(self) -> dict[str, Any]:
        """Each tracked metric's best value so far (a 0-d tensor); untouched ones are left out."""
        return {
            name: tracker.compute().detach().cpu()
            for name, tracker in self.best_trackers.items()
            if tracker.update_called
        }

    def on_train_start(self) -> None:
        super().on_train_start()
        # The sanity check (run before this hook) must not count as the best epoch; a
        # resumed run starts from what its checkpoint stored instead.
        for name, tracker in self.best_trackers.items():
            tracker.reset()
            if name in self._resumed_best:
                tracker.update(self._resumed_best[name].to(tracker.device))
        self._resumed_best = {}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        for name, tracker in self.best_trackers.items():
            current = self.trainer.callback_metrics.get(f"val/{name}")
            if current is not None:
                tracker.update(current.detach().to(tracker.device))
                self.log(f"val/{name}_best", tracker.compute(), prog_bar=name == self._best_prog_bar)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[self.BEST_STATE_KEY] = self.best_values()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resumed_best = dict(checkpoint.get(self.BEST_STATE_KEY, {}))
