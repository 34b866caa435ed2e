"""Is every layer learning? Per-layer gradient norms and update-to-weight ratios, with warnings."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from dlkit.callbacks.figures import tensorboard_writer

__all__ = ["GradientHealth", "layer_groups_for_health"]


def layer_groups_for_health(module: nn.Module, max_layers: int = 32) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters of ``module`` grouped by layer, for per-layer diagnostics.

    A layer is a module that owns trainable parameters itself (a Linear, a convolution,
    a normalisation), so a weight and its bias count once. Names are module paths with
    the prefix common to all layers dropped (``net.features.0`` -> ``features.0`` in a
    task whose network is ``net``). When there are more than ``max_layers`` layers, they
    are merged into the blocks of the deepest module level that has at most
    ``max_layers`` (``layer1.0`` for a ResNet), and a block's parameters are measured
    together.

    Args:
        module: The model (a LightningModule or any ``nn.Module``).
        max_layers: Most groups returned, when the module levels allow. Defaults to 32.

    Returns:
        ``{name: [parameters]}`` in module order (the input side first).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> {k: len(v) for k, v in layer_groups_for_health(net).items()}
        {'0': 2, '2': 2}
    """
    layers: list[tuple[list[str], list[nn.Parameter]]] = []
    for name, m in module.named_modules():
        params = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if params:
            layers.append((name.split(".") if name else [type(m).__name__], params))
    if not layers:
        return {}
    # Drop the leading path components all layers share, keeping at least one each.
    common = 0
    while all(len(path) > common + 1 for path, _ in layers) and len({path[common] for path, _ in layers}) == 1:
        common += 1
    paths = [(path[common:], params) for path, params in layers]
    depth = max(len(path) for path, _ in paths)
    while depth > 1 and len({tuple(path[:depth]) for path, _ in paths}) > max_layers:
        depth -= 1
    groups: dict[str, list[nn.Parameter]] = {}
    for path, params in paths:
        groups.setdefault(".".join(path[:depth]), []).extend(params)
    return groups


def _norms(tensors: list[Tensor]) -> Tensor:
    """The L2 norm of several tensors taken together (0-d float32)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


class GradientHealth(L.Callback):
    """Watch each layer's gradient norm and update-to-weight ratio; warn when gradients vanish or explode.

    Every ``every_n_steps`` optimiser steps (first at step 0), for each layer (see
    :func:`layer_groups_for_health`; at most ``max_layers`` groups):

    - the gradient norm ``||g||`` is read in ``on_before_optimizer_step``: after
      mixed-precision unscaling, before gradient clipping;
    - the update-to-weight ratio ``||w_after - w_before|| / ||w_before||`` is the change
      the optimiser really made (momentum, Adam's scaling and weight decay included),
      measured from a copy of the weights taken before ``optimizer.step`` and compared
      in ``on_train_batch_end``; that copy costs one parameter's worth of memory on
      check steps only. Around 1e-3 is the usual healthy value; much smaller means the
      layer barely learns, much larger that the learning rate is too high for it.

    Both go to every logger as ``health/grad_norm/<layer>`` and
    ``health/update_ratio/<layer>`` (one chart per layer, in TensorBoard's ``health``
    group) at the step measured; with ``histograms`` the TensorBoard logger also gets
    ``health/grad_hist/<layer>`` and ``health/weight_hist/<layer>``.

    A layer whose gradient norm stays below ``vanish_threshold`` (or above
    ``explode_threshold``, or is not finite) for ``patience`` checks in a row is named
    in a warning, once per such streak, and listed in :attr:`vanishing` /
    :attr:`exploding` while the streak lasts. In a 10-layer sigmoid MLP with PyTorch's
    default initialisation the first layer's gradient norm is orders of magnitude below
    the last one's (each sigmoid passes on at most a quarter of the gradient); with ReLU
    and He initialisation, or BatchNorm, all layers stay within one order.

    Only the global-zero process measures (under DDP gradients are already averaged).
    With several optimisers, gradients are read before the first one steps.

    Args:
        every_n_steps: Measure every this many optimiser steps. Defaults to 50.
        vanish_threshold: Gradient norm below which a layer counts as vanishing.
            Defaults to 1e-5.
        explode_threshold: Gradient norm above which a layer counts as exploding.
            Defaults to 1e2.
        patience: Checks in a row beyond a threshold before warning. Defaults to 3.
        histograms: Also log gradient and weight histograms to TensorBoard.
            Defaults to True.
        max_layers: Most layers measured separately before merging into blocks.
            Defaults to 32.

    Attributes:
        history: One dict per check, ``{"step": int, "grad_norm": {layer: float},
            "update_ratio": {layer: float}}``.
        latest: The last entry of ``history`` (None before the first check).
        vanishing: Layers currently flagged as vanishing (module order).
        exploding: Layers currently flagged as exploding.

    Example:
        >>> health = GradientHealth(every_n_steps=10)
        >>> clf.fit(DigitsDataModule(flatten=True), epochs=2, callbacks=[health])
        >>> health.latest["grad_norm"]["features.0"], health.vanishing
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        vanish_threshold: float = 1e-5,
        explode_threshold: float = 1e2,
        patience: int = 3,
        histograms: bool = True,
        max_layers: int = 32,
    ) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("patience", patience), ("max_layers", max_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GradientHealth.{name} must be an integer >= 1, got {value!r}.")
        for name, value in (("vanish_threshold", vanish_threshold), ("explode_threshold", explode_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"GradientHealth.{name} must be a finite number > 0, got {value!r}.")
        if explode_threshold <= vanish_threshold:
            raise ValueError(
                f"GradientHealth.explode_threshold ({explode_threshold}) must be greater than "
                f"vanish_threshold ({vanish_threshold})."
            )
        self.every_n_steps, self.patience, self.max_layers = every_n_steps, patience, max_layers
        self.vanish_threshold, self.explode_threshold = float(vanish_threshold), float(explode_threshold)
        self.histograms = histograms
        self.history: list[dict[str, Any]] = []
        self._groups: dict[str, list[nn.Parameter]] = {}
        self._low: dict[str, int] = {}
        self._high: dict[str, int] = {}
        self._pending: dict[str, Any] | None = None

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None

    @property
    def vanishing(self) -> list[str]:
        return [name for name in self._groups if self._low.get(name, 0) >= self.patience]

    @property
    def exploding(self) -> list[str]:
        return [name for name in self._groups if self._high.get(name, 0) >= self.patience]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Each epoch, so layers unfrozen (or frozen) between epochs are followed.
        self._groups = layer_groups_for_health(pl_module, self.max_layers)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or not trainer.is_global_zero:
            return
        if self._pending is not None and self._pending["step"] == step:
            return  # a second optimiser in the same step
        grad_norms, weights = {}, {}
        for name, params in self._groups.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                grad_norms[name] = _norms(grads)
                weights[name] = [p.detach().clone() for p in params]
        self._pending = {"step": step, "grad_norm": grad_norms, "before": weights}
        if self.histograms:
            writer = tensorboard_writer(trainer)
            if writer is not None:
                for name in grad_norms:
                    params = self._groups[name]
                    grads = torch.cat([p.grad.detach().float().flatten().cpu() for p in params if p.grad is not None])
                    writer.add_histogram(f"health/grad_hist/{name}", grads, global_step=step)
                    values = torch.cat([p.detach().float().flatten().cpu() for p in params])
                    writer.add_histogram(f"health/weight_hist/{name}", values, global_step=step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        step, grad_norms = pending["step"], pending["grad_norm"]
        ratios: dict[str, Tensor] = {}
        for name, before in pending["before"].items():
            after = self._groups[name]
            change = _norms([a.detach() - b for a, b in zip(after, before)])
            ratios[name] = change / _norms(before).clamp_min(1e-12)
        grad_values = dict(zip(grad_norms, torch.stack(list(grad_norms.values())).tolist())) if grad_norms else {}
        ratio_values = dict(zip(ratios, torch.stack(list(ratios.values())).tolist())) if ratios else {}
        self.history.append({"step": step, "grad_norm": grad_values, "update_ratio": ratio_values})
        scalars = {f"health/grad_norm/{k}": v for k, v in grad_values.items()}
        scalars.update({f"health/update_ratio/{k}": v for k, v in ratio_values.items()})
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        self._check(step, grad_values)

    def _check(self, step: int, grad_norms: dict[str, float]) -> None:
        started: dict[str, list[str]] = {"vanishing": [], "exploding": []}
        for name, norm in grad_norms.items():
            low = norm < self.vanish_threshold
            high = not math.isfinite(norm) or norm > self.explode_threshold
            self._low[name] = self._low.get(name, 0) + 1 if low else 0
            self._high[name] = self._high.get(name, 0) + 1 if high else 0
            if self._low[name] == self.patience:
                started["vanishing"].append(name)
            if self._high[name] == self.patience:
                started["exploding"].append(name)
        for kind, names in started.items():
            if not names:
                continue
            bound = f"< {self.vanish_threshold:g}" if kind == "vanishing" else f"> {self.explode_threshold:g}"
            values = ", ".join(f"{n} {grad_norms[n]:.2g}" for n in names)
            rank_zero_warn(
                f"GradientHealth: {kind} gradients at step {step} in {len(names)} layer(s): {values} "
                f"(gradient norm {bound} for {self.patience} checks in a row)."
            )

    def state_dict(self) -> dict[str, Any]:
        return {"low": dict(self._low), "high": dict(self._high)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._low, self._high = dict(state_dict.get("low", {})), dict(state_dict.get("high", {}))
