"""Training values accumulated over an epoch, to be logged once at its end.

Lightning's ``self.log(on_epoch=True)`` and a torchmetrics ``update`` each cost a fixed
amount of bookkeeping per call whatever the batch size, which is a visible share of a
small model's step. A task therefore sums its training values itself (weighted by batch
size) and keeps metric inputs to hand them over concatenated; :class:`EpochAccumulator`
holds that state for one epoch, and :class:`EpochMeanLogging`, the base of every dlkit
task, logs through it: per epoch for training, per batch (Lightning's own
accumulation) for validation and test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

__all__ = ["EpochAccumulator", "EpochMeanLogging"]


class EpochAccumulator:
    """Batch-size-weighted sums of scalars, and deferred metric inputs, for one epoch.

    Args:
        metric_buffer: Elements of metric inputs kept before they are handed to their
            metrics (so memory stays bounded on long epochs). Defaults to 4 Mi
            (16 MB of float32).

    Example:
        >>> acc = EpochAccumulator()
        >>> acc.add_scalars({"train/loss": torch.tensor(2.0)}, batch_size=3)
        >>> acc.add_scalars({"train/loss": torch.tensor(1.0)}, batch_size=1)
        >>> acc.means()["train/loss"]
        tensor(1.7500)
    """

    def __init__(self, metric_buffer: int = 1 << 22) -> None:
        self.metric_buffer = metric_buffer
        self.reset()

    def reset(self) -> None:
        """Forget everything: the start of a new epoch."""
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.metrics: dict[str, Metric | MetricCollection] = {}
        self.prog_bar: set[str] = set()
        self._pending: dict[int, tuple[Metric | MetricCollection, list[Tensor], list[Tensor]]] = {}
        self._pending_elements = 0

    def add_scalars(self, scalars: Mapping[str, Tensor], batch_size: int, prog_bar: Sequence[str] = ()) -> None:
        """Add one batch's values (0-d tensors, batch means) with weight ``batch_size``.

        Args:
            scalars: Logged name -> batch mean, e.g. ``{"train/loss": loss}``.
            batch_size: Samples in the batch.
            prog_bar: Names to show in the progress bar.
        """
        for name, value in scalars.items():
            weighted = value.detach() * batch_size
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
        self.count += batch_size
        self.prog_bar = set(prog_bar)

    def add_metric_inputs(self, metric: Metric | MetricCollection, preds: Tensor, target: Tensor) -> None:
        """Keep ``metric.update(preds, target)``'s inputs; hand them over when the buffer is full.

        Args:
            metric: The metric to update.
            preds: Its first update argument, batch first, e.g. logits ``(B, C)``.
            target: Its second, batch first, e.g. class indices ``(B,)``.
        """
        entry = self._pending.setdefault(id(metric), (metric, [], []))
        entry[1].append(preds.detach())
        entry[2].append(target.detach())
        self._pending_elements += preds.numel()
        if self._pending_elements >= self.metric_buffer:
            self.update_metrics()

    def log_metrics(self, metrics: Mapping[str, Metric | MetricCollection]) -> None:
        """Remember metric objects to log at the epoch's end, by name."""
        self.metrics.update(metrics)

    def update_metrics(self) -> None:
        """Hand every kept metric input to its metric, concatenated."""
        for metric, preds, targets in self._pending.values():
            if preds:
                metric.update(torch.cat(preds), torch.cat(targets))
                preds.clear()
                targets.clear()
        self._pending_elements = 0

    def means(self) -> dict[str, Tensor]:
        """Each scalar's epoch mean, weighted by batch size."""
        return {name: total / self.count for name, total in self.sums.items()}


class EpochMeanLogging(L.LightningModule):
    """A LightningModule that logs epoch means of its batch values and metrics cheaply.

    Tasks call :meth:`update_metric` and :meth:`log_epoch_means` from their steps;
    everything a user sees is the same as with ``self.log(..., on_epoch=True)`` per batch.
    The attribute Lightning sets around every hook call skips ``nn.Module``'s bookkeeping.
    """

    # Elements of training-metric inputs kept before they are handed to the metrics
    # (see update_metric): 4 Mi float32 = 16 MB.
    TRAIN_METRIC_BUFFER: int = 1 << 22

    # Checkpoint key of a training epoch cut short by a mid-epoch checkpoint.
    EPOCH_STATE_KEY = "dlkit_epoch_means"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._train_epoch = EpochAccumulator(self.TRAIN_METRIC_BUFFER)
        self._resumed_epoch: dict[str, Any] | None = None
        self._keep_resumed = False

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name (a str or None) before and after every hook it
        # calls, about 45 times a training step; nn.Module.__setattr__ first looks for a
        # parameter, module or buffer of that name (isinstance checks through their
        # metaclasses), about 2.5 us each time. It can never be one, so it goes straight in.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def on_train_start(self) -> None:
        super().on_train_start()
        # After a checkpoint is restored and before the first batch: a run resumed
        # mid-epoch continues that epoch's sums (Lightning may not restart the epoch hooks).
        self._keep_resumed = False
        if self._resumed_epoch:
            self._train_epoch = EpochAccumulator(self.TRAIN_METRIC_BUFFER)
            self.load_epoch_state(self._resumed_epoch)
            self._keep_resumed = True
        self._resumed_epoch = None

    def on_train_epoch_start(self) -> None:
        if self._keep_resumed:
            self._keep_resumed = False
            return
        self._train_epoch = EpochAccumulator(self.TRAIN_METRIC_BUFFER)

    def epoch_state(self) -> dict[str, Any]:
        """The training epoch so far: sums, sample count and the training metrics' states.

        Empty between epochs. A checkpoint written mid-epoch holds it, so a run resumed
        from there logs the same epoch means as one that was never interrupted.
        """
        acc = self._train_epoch
        if not acc.count:
            return {}
        acc.update_metrics()
        members: list[Metric] = []
        for metric in acc.metrics.values():
            members += list(metric.values()) if isinstance(metric, MetricCollection) else [metric]
        wanted = {id(m) for m in members}
        states = {}
        for name, module in self.named_modules():
            if isinstance(module, Metric) and id(module) in wanted:
                module.persistent(True)  # torchmetrics' public way to put states in state_dict
                states[name] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                module.persistent(False)
        return {
            "sums": {k: v.detach().cpu() for k, v in acc.sums.items()},
            "count": acc.count,
            "prog_bar": sorted(acc.prog_bar),
            "metric_states": states,
        }

    def load_epoch_state(self, state: Mapping[str, Any]) -> None:
        """Continue the training epoch :meth:`epoch_state` describes."""
        if not state:
            return
        acc = self._train_epoch
        acc.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        acc.count, acc.prog_bar = state["count"], set(state["prog_bar"])
        modules = dict(self.named_modules())
        for name, metric_state in state["metric_states"].items():
            metric = modules[name]
            metric.persistent(True)
            metric.load_state_dict(metric_state, strict=False)
            metric.persistent(False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self.epoch_state()
        if state:
            checkpoint[self.EPOCH_STATE_KEY] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resumed_epoch = checkpoint.get(self.EPOCH_STATE_KEY)

    def on_train_epoch_end(self) -> None:
        # An epoch a callback stops early never reaches its last batch: loggers still get
        # its means, callbacks only after their own on_train_epoch_end.
        if self._train_epoch.count:
            self._flush_train_logs()

    def update_metric(self, stage: str, metric: Metric | MetricCollection, preds: Tensor, target: Tensor) -> None:
        """``metric.update(preds, target)``, deferred and batched while training.

        A torchmetrics update costs a dozen small tensor operations whatever the batch
        size, so training batches are kept (detached) and handed to the metric
        concatenated (:class:`EpochAccumulator`), every ``TRAIN_METRIC_BUFFER`` elements
        and at the end of the epoch; metrics built from sums over samples (accuracy, F1, MAE, R², ...) come out the
        same. Validation and test update at once.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            metric: The ``Metric`` or ``MetricCollection`` to update.
            preds: Its first update argument, batch first, e.g. logits ``(B, C)``.
            target: Its second, batch first, e.g. class indices ``(B,)``.

        Example:
            >>> self.update_metric("train", self.train_metrics["_"], logits.detach(), y)
        """
        if stage != "train":
            metric.update(preds, target)
            return
        self._train_epoch.add_metric_inputs(metric, preds, target)

    def log_epoch_means(
        self,
        stage: str,
        scalars: Mapping[str, Tensor],
        metrics: Mapping[str, Metric | MetricCollection] | None = None,
        batch_size: int = 1,
        prog_bar: Sequence[str] = (),
    ) -> None:
        """Log per-epoch means of batch values and the epoch's torchmetrics results.

        Every value is logged as its epoch mean weighted by ``batch_size`` (Lightning's
        ``on_step=False, on_epoch=True``) and the metric objects, already updated by the
        caller, are computed over the whole epoch. Validation and test go through
        ``self.log`` per batch. Training does the same sums itself and calls ``self.log``
        once, on the last batch of the epoch, because each ``self.log`` call has a fixed
        bookkeeping cost that is a visible share of a small model's step. The values
        callbacks see at ``on_train_epoch_end`` are the same either way.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            scalars: Logged name -> batch mean (a 0-d tensor), e.g. ``{"train/loss": loss}``.
            metrics: Metric objects updated on this batch (with :meth:`update_metric`), to log for the
                epoch: a ``Metric`` under its key, a ``MetricCollection`` under its
                members' own (prefixed) names.
            batch_size: Samples in the batch: the weight of its values in the mean.
            prog_bar: Names shown in the progress bar; metrics show there outside training.

        Example:
            >>> self.log_epoch_means("train", {"train/loss": loss}, {"acc": self.train_metrics["_"]}, len(x))
        """
        if stage != "train":
            for name, value in scalars.items():
                # sync_dist: under DDP every rank holds a shard of the data, and the value
                # logged is the mean over all of them (a no-op in one process).
                self.log(name, value, on_step=False, on_epoch=True, prog_bar=name in prog_bar, batch_size=batch_size,
                         sync_dist=True)
            for name, metric in (metrics or {}).items():
                self._log_metric(name, metric, prog_bar=True)
            return
        self._train_epoch.add_scalars(scalars, batch_size, prog_bar)
        self._train_epoch.log_metrics(metrics or {})
        if self._epoch_ends_after_this_batch():
            self._flush_train_logs()

    def _epoch_ends_after_this_batch(self) -> bool:
        trainer = self._trainer
        if trainer is None or trainer.is_last_batch:
            return True
        # max_steps stops inside an epoch. Under gradient accumulation this may flush a
        # few batches early; the rest is flushed at epoch end and Lightning's weighted
        # mean over both calls is still the epoch mean.
        return 0 < trainer.max_steps <= trainer.global_step + 1

    def _flush_train_logs(self) -> None:
        epoch = self._train_epoch
        epoch.update_metrics()
        for name, mean in epoch.means().items():
            # sync_dist: the epoch value is the mean over processes too (no-op on one).
            self.log(name, mean, on_step=False, on_epoch=True, prog_bar=name in epoch.prog_bar,
                     batch_size=epoch.count, sync_dist=True)
        for name, metric in epoch.metrics.items():
            self._log_metric(name, metric, prog_bar=False)
        self._train_epoch = EpochAccumulator(self.TRAIN_METRIC_BUFFER)

    def _log_metric(self, name: str, metric: Metric | MetricCollection, prog_bar: bool) -> None:
        if isinstance(metric, MetricCollection):
            self.log_dict(metric, on_step=False, on_epoch=True, prog_bar=prog_bar)
        else:
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=prog_bar)
