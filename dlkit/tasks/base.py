"""The task base class: a LightningModule with Keras' ``compile/fit/evaluate/predict/summary``.

A task owns the *training problem* (loss, metrics, optimiser and schedule); the
network it trains is injected (``net``), and the optimiser and scheduler arrive as
factories (Hydra ``_partial_``), as in lightning-hydra-template. The loops,
devices, precision and checkpoint I/O are Lightning's; this class only wires them.

Subclasses (:class:`~dlkit.tasks.Classifier`, :class:`~dlkit.tasks.Regressor`) say
how outputs are read: which metrics fit, what a default loss is, what ``predict``
returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Union

import lightning as L
from omegaconf import OmegaConf
import torch
import torch.nn as nn
from torch import Tensor
from torchmetrics import MetricCollection

from dlkit.callbacks.history import History
from dlkit.callbacks.lr_logger import LearningRateLogger
from dlkit.callbacks.terminate_on_nan import TerminateOnNaN
from dlkit.checkpoint import resolve_ckpt_path
from dlkit.config import ConfigError, instantiate_option
from dlkit.data.checks import DataError, check_arrays
from dlkit.data.tensor import TensorBatchLoader, arrays_to_datamodule, as_loader, as_tensor, is_loader
from dlkit.layers import weight_penalty
from dlkit.losses import LossSpec, as_loss_module, combine_losses
from dlkit.tasks.best import BestValueLogging
from dlkit.tasks.epoch_means import EpochMeanLogging
from dlkit.tasks.fine_tune import fine_tune
from dlkit.tasks.keras_trainer import keras_trainer, lightning_info
from dlkit.tasks.lr_finder import LRFinderResult, find_lr
from dlkit.tasks.metrics import build_metric, metric_mode
from dlkit.tasks.param_groups import GroupRates, LRSpec, optimizer_groups, parse_lr
from dlkit.tasks.optim import (
    OptimizerFactory,
    SchedulerFactory,
    build_optimizer,
    check_lr,
    fill_schedule_defaults,
    schedule_interval,
)
from dlkit.tasks.checks import check_net_accepts
from dlkit.tasks.saving import SaveLoad, plain_compile_settings
from dlkit.tasks.summary import ModelSummary, summarize
from dlkit.validation import check_factory_arguments, check_options, check_value

__all__ = ["SINGLE_OUTPUT", "STAGES", "Task"]

MetricSpec = Union[Sequence[str], Mapping[str, Sequence[str]]]
DataSpec = Any  # a LightningDataModule, (x, y) arrays/tensors, or a loader
STAGES = ("train", "val", "test")
# Key of the loss/metrics of a network with one output (ModuleDict keys cannot be empty).
SINGLE_OUTPUT = "_"


def _on_accelerator(out: Any) -> bool:
    """Whether the network's output (a tensor, or a mapping of them) lives off the CPU."""
    tensor = next(iter(out.values()), None) if isinstance(out, Mapping) else out
    return isinstance(tensor, Tensor) and tensor.device.type != "cpu"


class Task(SaveLoad, BestValueLogging, EpochMeanLogging):
    """Base class of dlkit's tasks: loss, metrics, optimiser wiring and the Keras face.

    Args:
        net: The network to train; any ``nn.Module``. When it returns a dict of
            outputs, ``loss``/``metrics``/``loss_weights`` may be dicts keyed by output.
        optimizer: A factory ``f(params) -> Optimizer`` (Hydra ``_partial_``), or an
            optimiser name from ``conf/optimizer`` (``"adam"``, ``"sgd"``, ...).
            Defaults to Adam with lr 1e-3. Built by :func:`~dlkit.tasks.optim.build_optimizer`, which
            picks torch's fused kernel when one exists (``fused=False`` opts out).
        scheduler: A factory ``f(optimizer) -> LRScheduler`` or a name from
            ``conf/scheduler``, or None. Defaults to None.
        loss: A loss module/callable ``f(pred, target)``, a name from ``conf/loss``,
            or a dict of those per output. Defaults to the subclass' choice.
        metrics: Metric names (``["accuracy"]``) or a dict of such lists per output.
        loss_weights: Weight of each output's loss in the total. Defaults to 1 each.
        monitor: Logged metric that ``ReduceLROnPlateau`` (and the default
            checkpoint/early-stopping configs) follow. Defaults to ``"val/loss"``.
        monitor_mode: ``"min"`` or ``"max"`` for ``monitor``. Defaults to ``"min"``.
        scheduler_interval: Step the scheduler every ``"epoch"`` or ``"step"``, unless the
            scheduler's option fixes its own ``interval`` (``one_cycle``, ``noam`` and
            ``cosine_restarts`` say ``step``; see :func:`~dlkit.tasks.optim.schedule_interval`).
            Defaults to ``"epoch"``.
        l1: L1 penalty on weights added to the training loss. Defaults to 0.
        l2: L2 penalty on weights added to the training loss (unlike the optimiser's
            ``weight_decay``, it appears in ``train/loss``). Defaults to 0.
    """

    default_loss: str = "cross_entropy"
    default_metrics: tuple[str, ...] = ()

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | str | None = None,
        scheduler: SchedulerFactory | str | None = None,
        loss: LossSpec | Mapping[str, LossSpec] | None = None,
        metrics: MetricSpec | None = None,
        loss_weights: Mapping[str, float] | None = None,
        monitor: str = "val/loss",
        monitor_mode: Literal["min", "max"] = "min",
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        l1: float = 0.0,
        l2: float = 0.0,
    ) -> None:
        super().__init__()
        # The network and factories are not hyper-parameters; everything else is logged.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "loss"], logger=False)
        # Hydra passes ListConfig/DictConfig; checkpoints hold plain containers so that
        # torch.load(weights_only=True) can read them back.
        for key, value in list(self.hparams.items()):
            if OmegaConf.is_config(value):
                self.hparams[key] = OmegaConf.to_container(value, resolve=True)
        self.net = net
        if monitor_mode not in ("min", "max"):
            raise ValueError(f"task.monitor_mode must be 'min' or 'max', got {monitor_mode!r}.")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"task.scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}.")
        if l1 < 0 or l2 < 0:
            raise ValueError(f"task.l1 and task.l2 must be >= 0, got {l1} and {l2}.")
        self.monitor, self.monitor_mode, self.scheduler_interval = monitor, monitor_mode, scheduler_interval
        self.l1, self.l2 = l1, l2
        self.compile(
            optimizer=optimizer if optimizer is not None else "adam",
            scheduler=scheduler,
            loss=loss,
            metrics=metrics,
            loss_weights=loss_weights,
        )

    # ------------------------------------------------------------------ Keras face
    def compile(  # type: ignore[override]  # LightningModule has no compile; nn.Module's is torch.compile
        self,
        optimizer: OptimizerFactory | str = "adam",
        lr: LRSpec | None = None,
        loss: LossSpec | Mapping[str, LossSpec] | None = None,
        metrics: MetricSpec | None = None,
        scheduler: SchedulerFactory | str | None = None,
        loss_weights: Mapping[str, float] | None = None,
        **optimizer_kwargs: Any,
    ) -> Task:
        """Choose optimiser, loss, metrics and schedule, as in Keras.

        Args:
            optimizer: A name from ``conf/optimizer`` (``"sgd"``, ``"momentum"``,
                ``"nesterov"``, ``"adagrad"``, ``"rmsprop"``, ``"adadelta"``, ``"adam"``,
                ``"adamw"``, ``"nadam"``) or a factory ``f(params) -> Optimizer``.
                Defaults to ``"adam"``.
            lr: Learning rate; overrides the config's. ``slice(lo, hi)``,
                ``{"min": lo, "max": hi}`` or ``{"max": hi, "factor": f}`` give each layer
                group its own (discriminative rates, see :mod:`dlkit.tasks.param_groups`).
                Defaults to the config's.
            loss: Name from ``conf/loss``, a loss module, or a dict per output.
                Defaults to the task's default loss.
            metrics: Metric names, or a dict of lists per output.
            scheduler: Name from ``conf/scheduler`` or a factory ``f(optimizer)``.
            loss_weights: Weight per output in the total loss.
            **optimizer_kwargs: Further optimiser arguments (``weight_decay``...).
                ``fused=False`` or ``foreach=True`` overrides dlkit's choice of
                torch's fused kernel (see :func:`~dlkit.tasks.optim.build_optimizer`).

        Returns:
            The task itself, so calls chain.

        Example:
            >>> clf = Classifier(create_model("lenet5"))
            >>> clf.compile(optimizer="sgd", lr=0.1, momentum=0.9, metrics=["accuracy", "f1"])
        """
        self.compile_settings = plain_compile_settings(optimizer=optimizer, lr=lr, loss=loss, metrics=metrics,
                                                       scheduler=scheduler, loss_weights=loss_weights, **optimizer_kwargs)
        self.lr_spread: GroupRates | None = None
        if isinstance(lr, (slice, Mapping)):
            lr, self.lr_spread = parse_lr(lr)
        elif lr is not None:
            check_value("optimizer.lr", lr)
        check_options("optimizer", optimizer_kwargs)
        if penalties := sorted({"l1", "l2"} & set(optimizer_kwargs)):
            given = ", ".join(f"{k}={optimizer_kwargs[k]!r}" for k in penalties)
            raise ConfigError(
                f"compile({given}): {' and '.join(penalties)} are the task's weight penalties, not optimiser "
                f"arguments; give them to the task: {type(self).__name__}(net, {given}). (weight_decay=... is the "
                "optimiser's own L2.)"
            )
        if isinstance(optimizer, str):
            optimizer = instantiate_option("optimizer", optimizer, lr=lr, **optimizer_kwargs)
        elif lr is not None or optimizer_kwargs:
            optimizer = functools.partial(optimizer, **({"lr": lr} if lr else {}), **optimizer_kwargs)
        check_lr(optimizer)
        check_factory_arguments(optimizer, "optimizer")  # a misspelt keyword fails here, not inside fit
        self.optimizer_factory = optimizer
        self.scheduler_factory = (
            instantiate_option("scheduler", scheduler) if isinstance(scheduler, str) else scheduler
        )
        losses = loss if isinstance(loss, Mapping) else {SINGLE_OUTPUT: loss}
        self.loss_fns = nn.ModuleDict(
            {k: as_loss_module(v if v is not None else self.default_loss) for k, v in losses.items()}
        )
        self.loss_weights = dict(loss_weights or {})
        if unknown := set(self.loss_weights) - set(self.loss_fns):
            raise ValueError(
                f"loss_weights names outputs {sorted(unknown)} without a loss; outputs with a loss: "
                f"{sorted(self.loss_fns)}."
            )
        if metrics is None:
            metrics = {SINGLE_OUTPUT: self.default_metrics} if self.can_build_default_metrics() else {}
        per_output = metrics if isinstance(metrics, Mapping) else {SINGLE_OUTPUT: list(metrics)}
        self._build_metrics(per_output)
        return self

    def fit(  # type: ignore[override]
        self,
        data: DataSpec,
        y: Any = None,
        epochs: int = 1,
        batch_size: int = 32,
        callbacks: Sequence[L.Callback] = (),
        validation_data: Any = None,
        validation_split: float = 0.0,
        shuffle_seed: int = 0,
        verbose: bool = True,
        ckpt_path: str | None = None,
        **trainer_kwargs: Any,
    ) -> History:
        """Train, Keras-style; return the per-epoch :class:`History`.

        Args:
            data: A ``LightningDataModule``; or inputs ``x`` (array/tensor) with ``y``
                given; or a tuple ``(x, y)``; or a train loader.
            y: Targets when ``data`` is ``x``.
            epochs: Epochs to train. Defaults to 1.
            batch_size: Batch size for array data. Defaults to 32.
            callbacks: Lightning callbacks (``dlkit.callbacks.EarlyStopping``...).
            validation_data: ``(x_val, y_val)`` or a loader, for array data.
            validation_split: Fraction of array data held out (the last samples, as
                Keras does) when ``validation_data`` is not given. Defaults to 0.
            shuffle_seed: Seed of the shuffling order for array data. Defaults to 0.
            verbose: Show the progress bar. Defaults to True.
            ckpt_path: Resume from this checkpoint of an earlier ``fit`` (a ``.ckpt`` file, or a run
                folder: its ``last.ckpt``), as ``dlkit-train ckpt_path=`` does: training goes on from the
                epoch after it (Keras' ``initial_epoch``) up to ``epochs``. Defaults to None.
            **trainer_kwargs: Passed to ``lightning.Trainer`` (``accelerator``,
                ``precision``, ``logger``, ``default_root_dir``...). The Python face
                runs without logger and checkpoints unless you pass them.

        Returns:
            A :class:`History`; ``history.history["val/acc"]`` is a list per epoch.

        Example:
            >>> history = clf.fit(DigitsDataModule(resize=32), epochs=5)
            >>> history.history["val/acc"][-1]
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"epochs (trainer.max_epochs) must be > 0 and an integer, got {epochs!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        ckpt_path = resolve_ckpt_path(ckpt_path, prefer="last") if ckpt_path is not None else None
        history = History()
        callbacks = [*callbacks, *self.default_callbacks(callbacks), history]
        with lightning_info(verbose):
            trainer = keras_trainer(verbose, max_epochs=epochs, callbacks=callbacks, **trainer_kwargs)
            if isinstance(data, L.LightningDataModule):
                if hasattr(data, "example_input"):
                    self.check_example_input(data.example_input(), f"data {type(data).__name__}")
                trainer.fit(self, datamodule=data, ckpt_path=ckpt_path)
            elif is_loader(data):
                trainer.fit(self, train_dataloaders=data, val_dataloaders=validation_data, ckpt_path=ckpt_path)
            else:
                try:
                    dm = arrays_to_datamodule(data, y, batch_size, validation_data, validation_split, shuffle_seed)
                except TypeError as err:  # arrays of strings or objects
                    raise DataError(f"fit(x, y): x and y must hold numbers (int, float or bool): {err}") from err
                for split, (x, t) in dm.splits.items():  # every label checked before the first step
                    self.validate_targets(self.check_example_input(x[:2], f"the {split} arrays"), t, f"{split} y")
                trainer.fit(self, datamodule=dm, ckpt_path=ckpt_path)
        return history

    def fine_tune(self, data: DataSpec, epochs: int, freeze_epochs: int = 1, base_lr: float = 2e-3,
                  **kwargs: Any) -> History:
        """fastai's recipe: the head alone with the backbone frozen, then all with discriminative rates.

        Arguments and behaviour: :func:`dlkit.tasks.fine_tune.fine_tune`.

        Example:
            >>> history = clf.fine_tune(data, epochs=3, freeze_epochs=1, base_lr=2e-3)
        """
        return fine_tune(self, data, epochs, freeze_epochs=freeze_epochs, base_lr=base_lr, **kwargs)

    def evaluate(
        self,
        data: DataSpec,
        y: Any = None,
        batch_size: int = 256,
        verbose: bool = False,
        **trainer_kwargs: Any,
    ) -> dict[str, float]:
        """Loss and metrics on data, keyed by metric name without the stage prefix (``{"loss":, "acc":}``).

        The convention: ``evaluate(...)[name]`` is the ``test/<name>`` a run logs, and
        ``fit``'s History holds the same names per epoch as ``train/<name>`` and ``val/<name>``
        (plus ``val/<name>_best`` and ``train/lr``): ``history.history["val/" + k]`` for every key ``k``.

        Args:
            data: A DataModule (its test split), ``x`` with ``y``, ``(x, y)`` or a loader.
            y: Targets when ``data`` is ``x``.
            batch_size: Batch size for array data. Defaults to 256.
            verbose: Print Lightning's result table. Defaults to False.
            **trainer_kwargs: Passed to ``lightning.Trainer``.

        Example:
            >>> clf.evaluate(DigitsDataModule(resize=32))["acc"]
        """
        with lightning_info(verbose):
            trainer = keras_trainer(verbose, **trainer_kwargs)
            if isinstance(data, L.LightningDataModule):
                results = trainer.test(self, datamodule=data, verbose=verbose)
            else:
                results = trainer.test(self, dataloaders=as_loader(data, y, batch_size), verbose=verbose)
        return {k.removeprefix("test/"): float(v) for k, v in results[0].items()}

    @torch.no_grad()
    def predict(self, data: DataSpec, batch_size: int = 256) -> Any:  # type: ignore[override]
        """Run the network on inputs and return :meth:`postprocess`-ed outputs.

        Args:
            data: Inputs ``x`` (array/tensor), a DataModule (its predict/test split)
                or a loader.
            batch_size: Batch size for array inputs. Defaults to 256.

        Returns:
            Stacked outputs, ``(N, ...)`` (a dict of them for multi-output networks): NumPy
            arrays for NumPy (or list) inputs, as Keras returns, tensors otherwise.

        Example:
            >>> probs = clf.predict(x_test)          # (N, 10) class probabilities
        """
        as_numpy = not isinstance(data, (Tensor, L.LightningDataModule)) and not is_loader(data)
        out = self._predict(data, batch_size)
        if as_numpy:
            return {k: v.cpu().numpy() for k, v in out.items()} if isinstance(out, Mapping) else out.cpu().numpy()
        return out

    def _predict(self, data: DataSpec, batch_size: int) -> Tensor | dict[str, Tensor]:
        if isinstance(data, L.LightningDataModule):
            data.setup("predict")
            loader: Iterable[Any] = data.predict_dataloader()
        elif not is_loader(data):
            check_arrays(x := as_tensor(data), None, "predict data")
            loader = TensorBatchLoader(x, None, batch_size)
        else:
            loader = data
        was_training = self.training
        self.eval()
        outs = []
        try:
            for batch in loader:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                outs.append(self.postprocess(self(x.to(self.device))))
        finally:
            self.train(was_training)
        if isinstance(outs[0], Mapping):
            return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return torch.cat(outs)

    def summary(self, input_size: Sequence[int] | None = None, print_fn: Callable[[str], Any] = print) -> ModelSummary:
        """Print Keras' table of layers, output shapes and parameter counts.

        Args:
            input_size: Shape of an example batch, e.g. ``(1, 1, 32, 32)``. Defaults to
                ``example_input_array`` (set by ``fit``) or one the network describes
                (``in_chans``/``img_size``); without one, output shapes show ``?``.
            print_fn: Where the table goes. Defaults to ``print``.

        Returns:
            The :class:`~dlkit.tasks.summary.ModelSummary` (totals as attributes); its repr
            is one line, so a notebook shows the table once, as Keras' ``summary()`` does.
        """
        example = torch.zeros(*input_size) if input_size is not None else self._example_input()
        if isinstance(example, Tensor):
            example = example.to(self.device)
        result = summarize(self.net, example, title=type(self.net).__name__)
        print_fn(str(result))
        return result

    def find_lr(self, data: DataSpec, y: Any = None, batch_size: int = 32, **kwargs: Any) -> LRFinderResult:
        """Run a learning-rate range test and return the suggestion and the curve; nothing changes.

        Args:
            data: A DataModule, a train loader, or arrays as for :meth:`fit`.
            y: Targets when ``data`` is ``x``.
            batch_size: Batch size for array data. Defaults to 32.
            **kwargs: :func:`~dlkit.tasks.lr_finder.find_lr` options (``min_lr``,
                ``max_lr``, ``num_steps``, ``suggestion``...).

        Example:
            >>> result = clf.find_lr(DigitsDataModule(resize=32))  # doctest: +SKIP
            >>> clf.compile(optimizer="adam", lr=result.suggestion)  # doctest: +SKIP
        """
        if isinstance(data, L.LightningDataModule):
            return find_lr(self, datamodule=data, **kwargs)
        if is_loader(data):
            return find_lr(self, train_dataloaders=data, **kwargs)
        return find_lr(self, datamodule=arrays_to_datamodule(data, y, batch_size), **kwargs)

    # -------------------------------------------------------------- Lightning hooks
    def forward(self, x: Any) -> Any:
        return self.net(x)

    def postprocess(self, out: Any) -> Any:
        """Turn raw network outputs into what :meth:`predict` returns (identity here)."""
        return out

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train", batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test", batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.postprocess(self(x))

    def configure_optimizers(self) -> Any:
        # Every parameter, frozen ones included (no gradient, no update), one group per layer
        # group under a rate spread, else one group: unfreezing never changes the groups.
        in_net = {id(p) for p in self.net.parameters()}
        factory, params = optimizer_groups(
            self.optimizer_factory, self.net, [p for p in self.parameters() if id(p) not in in_net], self.lr_spread
        )
        # Under mixed precision Lightning unscales gradients (for clipping and for
        # callbacks that read them) only for optimisers that do not unscale themselves,
        # as fused ones do; and fused kernels refuse sparse gradients (SGD and Adagrad
        # accept them unfused). So neither case gets a fused optimiser.
        mixed = self._trainer is not None and str(self.trainer.precision).endswith("-mixed")
        sparse = any(getattr(m, "sparse", False) is True for m in self.modules())
        optimizer = build_optimizer(factory, params, prefer_fused=not (mixed or sparse))
        if self.scheduler_factory is None:
            return optimizer
        interval = schedule_interval(self.scheduler_factory, self.scheduler_interval)
        scheduler = fill_schedule_defaults(
            self.scheduler_factory,
            max_epochs=self.trainer.max_epochs,
            total_steps=lambda: self.trainer.estimated_stepping_batches,
            per_step=interval == "step",
            monitor_mode=self.monitor_mode,
            net=self.net,
        )(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": self.monitor},
        }

    # ------------------------------------------------------------------ internals
    def _build_metrics(self, per_output: Mapping[str, Sequence[str]]) -> None:
        collections: dict[str, MetricCollection] = {}
        best: dict[str, str] = {}
        self._headline = ""
        for output, names in per_output.items():
            if output not in self.loss_fns:
                raise ValueError(
                    f"metrics name output {output!r} that has no loss; outputs: {sorted(self.loss_fns)}."
                )
            built = dict(self.build_metric(output, n) for n in names)
            collections[output] = MetricCollection(built) if built else MetricCollection({})
            for short in built:
                key = short if output == SINGLE_OUTPUT else f"{output}_{short}"
                self._headline = self._headline or key
                best[key] = metric_mode(short)
        self.track_best(best, prog_bar=self._headline)
        # One ModuleDict per stage, as attributes: a "train" key would shadow nn.Module.train.
        for stage in STAGES:
            per_stage = {
                out: c.clone(prefix=f"{stage}/" if out == SINGLE_OUTPUT else f"{stage}/{out}_")
                for out, c in collections.items()
            }
            setattr(self, f"{stage}_metrics", nn.ModuleDict(per_stage))

    def can_build_default_metrics(self) -> bool:
        """Whether ``default_metrics`` apply (one output whose metrics need nothing unknown)."""
        return SINGLE_OUTPUT in self.loss_fns

    def build_metric(self, output: str, name: str) -> tuple[str, Any]:
        """Build metric ``name`` for ``output`` (subclasses decide the kind)."""
        return build_metric(name, "regression")

    def _split_auxiliary(self, out: Any) -> tuple[Any, dict[str, Any]]:
        """Separate auxiliary heads' outputs from the main one.

        Networks with auxiliary classifiers (GoogLeNet with ``aux_logits=True``) return
        ``{"logits": main, "aux1": ..., "aux2": ...}`` while training. With a single
        loss configured, the main output is scored as usual and each auxiliary output
        adds ``net.aux_loss_weight`` (default 0.3, as in Szegedy et al.) times its loss.
        """
        if isinstance(out, Mapping) and "logits" in out and SINGLE_OUTPUT in self.loss_fns:
            return out["logits"], {k: v for k, v in out.items() if k != "logits"}
        return out, {}

    def _shared_step(self, batch: Any, stage: str, batch_idx: int = 0) -> Tensor:
        x, y = batch
        out, auxiliary = self._split_auxiliary(self(x))
        if batch_idx == 0 or not _on_accelerator(out):
            self.validate_targets(out, y, f"{stage} batch {batch_idx}: y")
        y = self.prepare_targets(out, y)
        loss, parts = combine_losses(self.loss_fns, self.loss_weights, out, y, single_key=SINGLE_OUTPUT)
        if auxiliary:
            aux_loss = sum(self.loss_fns[SINGLE_OUTPUT](a, y) for a in auxiliary.values())
            loss = loss + getattr(self.net, "aux_loss_weight", 0.3) * aux_loss
            parts["aux"] = aux_loss  # type: ignore[assignment]
        if stage == "train":
            loss = self.add_regularization(loss)
        scalars = {f"{stage}/loss": loss, **{f"{stage}/{name}_loss": v for name, v in parts.items()}}
        metrics = {}
        for output, collection in getattr(self, f"{stage}_metrics").items():
            if not len(collection):
                continue
            o, t = (out, y) if output == SINGLE_OUTPUT else (out[output], y[output])
            self.update_metric(stage, collection, *self.metric_inputs(o, t))
            metrics[output] = collection
        self.log_epoch_means(stage, scalars, metrics, batch_size=len(x), prog_bar=(f"{stage}/loss",))
        return loss

    def add_regularization(self, loss: Tensor) -> Tensor:
        """The training loss plus the task's L1/L2 weight penalty (``l1``, ``l2``).

        Every task's ``training_step`` calls this, so the penalty appears in ``train/loss``.

        Args:
            loss: The batch's data loss, a 0-d tensor.

        Returns:
            ``loss + l1 * sum|w| + l2 * sum w^2`` over the network's weights, or ``loss``
            itself when both are 0.

        Example:
            >>> loss = self.add_regularization(self.loss_fns["_"](out, y))
        """
        if not (self.l1 or self.l2):
            return loss
        return loss + weight_penalty(self.net, l1=self.l1, l2=self.l2)

    def metric_inputs(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Adapt ``(output, target)`` to what the torchmetrics objects expect."""
        return out.detach(), target

    def validate_targets(self, out: Any, y: Any, where: str) -> None:
        """Raise a :class:`~dlkit.data.checks.DataError` when targets ``y`` do not fit outputs ``out``.

        Runs on every batch (``where`` names it: ``"train batch 3: y"``) and, in :meth:`fit`,
        on whole arrays before training. Subclasses check their kind of target; here, nothing.
        A check reads a few numbers back to the host: free on CPU, a pipeline stall on a
        GPU; so on an accelerator only the first batch of every epoch and stage is checked
        (array data is still checked whole before training).
        """

    def prepare_targets(self, out: Any, y: Any) -> Any:
        """Targets as the loss and metrics take them, after :meth:`validate_targets`; here ``y`` itself."""
        return y

    def check_example_input(self, example: Any, data: str) -> Any:
        """Run the network once on ``example`` (a few inputs of ``data``), so a mismatch fails before training.

        Returns:
            The outputs (main output only, for networks with auxiliary heads).

        Raises:
            dlkit.config.ConfigError: Naming the network, ``data`` and the input's shape.
        """
        example = example.to(self.device) if isinstance(example, Tensor) else example
        out = check_net_accepts(self.net, example, f"model {type(self.net).__name__}", data)
        return self._split_auxiliary(out)[0]

    def default_callbacks(self, given: Sequence[L.Callback]) -> list[L.Callback]:
        """Callbacks every training run gets beside ``given``: a TerminateOnNaN and a LearningRateLogger
        (``train/lr``), each unless ``given`` has one."""
        defaults = [TerminateOnNaN(), LearningRateLogger()]
        return [d for d in defaults if not any(isinstance(c, type(d)) for c in given)]

    def _example_input(self) -> Tensor | None:
        if self.example_input_array is not None:
            return self.example_input_array  # type: ignore[return-value]
        net = self.net
        cfg = getattr(net, "cfg", None)
        if getattr(cfg, "in_features", None):  # a vector model given its input size (MLP)
            return torch.zeros(1, cfg.in_features)
        in_chans, img = getattr(net, "in_chans", None), getattr(cfg, "img_size", None)
        if in_chans and img:
            return torch.zeros(1, in_chans, img, img)
        return None

