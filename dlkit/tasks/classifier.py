"""Classification: logits in, probabilities out; accuracy and friends as metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch.nn as nn
from torch import Tensor

from dlkit.losses import BCELoss
from dlkit.tasks.base import SINGLE_OUTPUT, Task
from dlkit.tasks.checks import as_class_indices, check_class_targets
from dlkit.tasks.metrics import build_metric

__all__ = ["Classifier"]


class Classifier(Task):
    """Train a network that emits class logits; log ``train|val|test/{loss,acc}`` and ``val/acc_best``.

    Args:
        net: The network; outputs ``(B, C)`` logits, ``(B,)``/``(B, 1)`` for a binary
            problem, or a dict of such outputs.
        num_classes: Classes per output (int, or dict per output). Defaults to
            ``net.num_classes``.
        monitor: Defaults to ``"val/acc"``. monitor_mode: Defaults to ``"max"``.
        **kwargs: See :class:`~dlkit.tasks.base.Task` (``optimizer``, ``scheduler``,
            ``loss`` — default cross-entropy —, ``metrics`` — default accuracy —,
            ``loss_weights``, ``l1``, ``l2``...).

    Call arguments:
        x: whatever ``net`` takes, e.g. ``(B, 1, 32, 32)`` images.

    Example:
        >>> clf = Classifier(create_model("lenet5", num_classes=10))
        >>> clf.compile(optimizer="adam", lr=1e-3, metrics=["accuracy"])
        >>> history = clf.fit(DigitsDataModule(resize=32), epochs=10)
        >>> probs = clf.predict(x)            # (N, 10), rows sum to 1
    """

    default_loss = "cross_entropy"
    default_metrics = ("accuracy",)

    def __init__(
        self,
        net: nn.Module,
        num_classes: int | Mapping[str, int] | None = None,
        monitor: str = "val/acc",
        monitor_mode: Literal["min", "max"] = "max",
        **kwargs: Any,
    ) -> None:
        self._num_classes_arg = dict(num_classes) if isinstance(num_classes, Mapping) else num_classes
        super().__init__(net, monitor=monitor, monitor_mode=monitor_mode, **kwargs)
        self.hparams["num_classes"] = self._num_classes_arg
        # Set from the DataModule in setup(), or from a checkpoint; saved with the task.
        self.class_names: list[str] | None = None

    def setup(self, stage: str) -> None:
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
        if names is not None:
            self.class_names = [str(n) for n in names]

    def num_classes_of(self, output: str) -> int | None:
        """Classes of ``output`` (``SINGLE_OUTPUT`` for a single-output network)."""
        arg = self._num_classes_arg
        if isinstance(arg, dict):
            return arg.get(output)
        if arg is not None:
            return arg
        return getattr(self.net, "num_classes", None) if output == SINGLE_OUTPUT else None

    def _is_binary(self, output: str) -> bool:
        n = self.num_classes_of(output)
        return n == 1 or (n is None and isinstance(self.loss_fns[output], BCELoss))

    def can_build_default_metrics(self) -> bool:
        # Without a known class count (e.g. a custom net with no num_classes attribute)
        # accuracy cannot be built; explicit metrics=[...] then says what is missing.
        return super().can_build_default_metrics() and self.num_classes_of(SINGLE_OUTPUT) is not None

    def build_metric(self, output: str, name: str) -> tuple[str, Any]:
        kind = "binary" if self._is_binary(output) else "multiclass"
        return build_metric(name, kind, self.num_classes_of(output))

    def validate_targets(self, out: Any, y: Any, where: str) -> None:
        """Labels must be class indices in ``[0, C)`` (or probabilities); see :func:`~dlkit.tasks.checks.check_class_targets`."""
        if isinstance(out, Tensor) and isinstance(y, Tensor):
            check_class_targets(out, y, where, getattr(self.loss_fns[SINGLE_OUTPUT], "ignore_index", None))
        elif isinstance(out, Mapping) and isinstance(y, Mapping):
            for name in self.loss_fns.keys() & out.keys() & y.keys():
                check_class_targets(out[name], y[name], f"{where}[{name!r}]", getattr(self.loss_fns[name], "ignore_index", None))

    def prepare_targets(self, out: Any, y: Any) -> Any:
        """Integer-valued float class indices (``np.array([0., 2.])``) as int64; see :func:`~dlkit.tasks.checks.as_class_indices`."""
        if isinstance(out, Tensor) and isinstance(y, Tensor):
            return as_class_indices(out, y)
        if isinstance(out, Mapping) and isinstance(y, Mapping):
            return {k: as_class_indices(out[k], t) if k in out and isinstance(t, Tensor) else t for k, t in y.items()}
        return y

    def metric_inputs(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        out = out.detach()
        if out.ndim == 1 or out.shape[-1] == 1:  # one logit per sample: a binary problem
            return out.reshape(-1).sigmoid(), target.reshape(-1).round().long()
        if target.is_floating_point():  # soft labels: score against the most likely class
            target = target.argmax(-1)
        return out, target

    def postprocess(self, out: Any) -> Any:
        """Logits -> probabilities: softmax over classes, sigmoid for one-logit outputs."""
        if isinstance(out, Mapping):
            return {k: self.postprocess(v) for k, v in out.items()}
        if out.ndim == 1 or out.shape[-1] == 1:
            return out.sigmoid()
        return out.softmax(-1)
