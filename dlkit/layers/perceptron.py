"""Rosenblatt's perceptron: one threshold unit and the learning rule that trains it.

The unit computes ``y_hat = step(w . x + b)``, a 0/1 decision. The step has derivative 0
everywhere except at the threshold, where it has none, so backpropagation gets no
signal through it; the perceptron learning rule (Rosenblatt, 1958) trains it instead,
one sample at a time, and only when the unit is wrong::

    w <- w + lr * (y - y_hat) * x
    b <- b + lr * (y - y_hat)

On a linearly separable set the rule stops making mistakes after finitely many updates
(Novikoff, 1962); on a set that no line separates, such as XOR, it never does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Perceptron"]


class Perceptron(nn.Module):
    """A single step-function unit ``y_hat = step(w . x + b)`` with the perceptron learning rule.

    The parameters have the layout of ``torch.nn.Linear(in_features, 1)`` (``weight`` of
    shape ``(1, in_features)``, ``bias`` of shape ``(1,)``), so a state_dict loads from
    one into the other with ``strict=True``. Both start at zero, as in Rosenblatt's
    rule; from zero the learning rate only scales ``w`` and ``b``, never the decisions.

    The step is ``1`` where ``w . x + b >= 0`` and ``0`` elsewhere. Its output carries no
    gradient (the step is flat almost everywhere), which is why :meth:`fit_rule`
    exists; use :meth:`decision_function` for the raw, differentiable ``w . x + b``.

    Args:
        in_features: Number of input features.
        bias: Learn a bias ``b``. Defaults to True; False fixes it at 0 (the parameter
            is then None, as in ``nn.Linear(..., bias=False)``).
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None (the default float dtype).

    Call arguments:
        x: ``(B, in_features)`` float inputs.

    Returns:
        ``(B,)`` float tensor of 0.0/1.0 decisions (no gradient flows through it).

    Raises:
        ValueError: For an ``in_features`` below 1, or (in ``forward``,
            :meth:`decision_function` and :meth:`fit_rule`) for inputs of the wrong shape.

    Example:
        >>> p = Perceptron(2)
        >>> x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        >>> y = torch.tensor([0, 0, 0, 1])  # logical AND: linearly separable
        >>> p.fit_rule(x, y, epochs=20)  # mistakes per epoch, stops after a clean epoch
        [2, 3, 3, 2, 1, 0]
        >>> p(x)
        tensor([0., 0., 0., 1.])
        >>> p.decision_function(x).shape
        torch.Size([4])
    """

    def __init__(
        self,
        in_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"Perceptron(in_features) must be an integer >= 1, got {in_features!r}.")
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(1, in_features, device=device, dtype=dtype))
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(1, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set ``w`` and ``b`` back to zero, the rule's starting point."""
        with torch.no_grad():
            self.weight.zero_()
            if self.bias is not None:
                self.bias.zero_()

    def _check_x(self, x: Tensor, where: str) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"Perceptron.{where} expected a torch.Tensor x, got {type(x).__name__}.")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            one_sample = x.ndim == 1 and x.numel() == self.in_features
            raise ValueError(
                f"Perceptron.{where} expected x of shape (B, {self.in_features}) "
                f"(B samples of in_features={self.in_features}), got {tuple(x.shape)}."
                + (" Add the batch dimension: x.unsqueeze(0)." if one_sample else "")
            )

    def decision_function(self, x: Tensor) -> Tensor:
        """The raw score ``w . x + b``: positive (or zero) means class 1.

        Args:
            x: ``(B, in_features)`` inputs.

        Returns:
            ``(B,)`` scores; equal to ``nn.Linear(in_features, 1)(x).squeeze(-1)`` with
            the same state_dict.
        """
        self._check_x(x, "decision_function")
        score = x @ self.weight.T  # (B, in) @ (in, 1) -> (B, 1)
        if self.bias is not None:
            score = score + self.bias
        return score.squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        self._check_x(x, "forward")
        # The comparison is not differentiable: the result has no grad_fn.
        return (self.decision_function(x) >= 0).to(self.weight.dtype)

    @torch.no_grad()
    def fit_rule(
        self,
        x: Tensor,
        y: Tensor,
        epochs: int = 100,
        lr: float = 1.0,
        shuffle_seed: int | None = None,
    ) -> list[int]:
        """Train with the perceptron learning rule, in place, one sample at a time.

        For each sample (in order, or shuffled anew each epoch with ``shuffle_seed``):
        ``y_hat = step(w . x + b)``; on a mistake ``w += lr * (y - y_hat) * x`` and
        ``b += lr * (y - y_hat)`` (the bias only when there is one). Training stops after
        the first epoch without mistakes.

        Args:
            x: ``(B, in_features)`` inputs (converted to the parameters' dtype).
            y: ``(B,)`` labels, each 0 or 1 (int, float or bool).
            epochs: Most passes over the data. Defaults to 100.
            lr: Step size ``lr > 0``. Defaults to 1.0.
            shuffle_seed: Seed of a per-epoch random order; None keeps the given
                order. Defaults to None.

        Returns:
            Mistakes per epoch; it ends with 0 exactly when the rule converged.

        Raises:
            ValueError: For labels outside {0, 1}, ``x`` of the wrong shape, ``y`` not
                matching ``x``, ``epochs < 1`` or ``lr <= 0``.
        """
        self._check_x(x, "fit_rule")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"Perceptron.fit_rule(epochs) must be an integer >= 1, got {epochs!r}.")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"Perceptron.fit_rule(lr) must be a number > 0, got {lr!r}.")
        y = torch.as_tensor(y)
        if y.shape != (x.shape[0],):
            raise ValueError(
                f"Perceptron.fit_rule expected y of shape ({x.shape[0]},), one label per row of x, "
                f"got {tuple(y.shape)}."
            )
        labels = y.to(torch.float64)
        bad = labels[(labels != 0) & (labels != 1)]
        if bad.numel():
            found = sorted({float(v) for v in labels.unique().tolist()})
            raise ValueError(
                f"Perceptron.fit_rule expects labels y in {{0, 1}}, got the values {found[:10]}. "
                "Map them to 0/1 first: for -1/+1 labels use (y > 0).long(), for a class "
                "index c use (y == c).long()."
            )
        w = self.weight[0]  # (in_features,) view: updates land in the parameter
        x = x.to(device=w.device, dtype=w.dtype)
        targets = labels.to(device=w.device, dtype=w.dtype)
        generator = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
        history: list[int] = []
        for _ in range(epochs):
            order = range(len(x)) if generator is None else torch.randperm(len(x), generator=generator)
            mistakes = 0
            for i in order:
                xi, yi = x[i], targets[i]
                score = xi @ w + (self.bias[0] if self.bias is not None else 0.0)
                error = yi - (score >= 0).to(w.dtype)  # y - y_hat, one of -1, 0, 1
                if error != 0:
                    mistakes += 1
                    w.add_(xi, alpha=float(lr * error))
                    if self.bias is not None:
                        self.bias.add_(lr * error)
            history.append(mistakes)
            if mistakes == 0:
                break
        return history

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, bias={self.bias is not None}"
