"""Recurrent layers: Elman RNN, LSTM and GRU cells, and the layers that run them over time.

The public classes are drop-in replacements for their ``torch.nn`` namesakes: the same
constructor arguments, the same state_dict keys and shapes (``weight_ih_l0``,
``weight_hh_l0_reverse``, ...; gates stacked in torch's order: LSTM ``i, f, g, o``, GRU
``r, z, n``), the same initialisation (uniform in ``±1/sqrt(hidden_size)``) and the same
return values. Everything is written with plain tensor operations; nothing calls
``torch.nn.LSTM``, ``torch.lstm`` or ``torch._VF``. The math of one step and the fast
back-end's kernels are in :mod:`dlkit.layers.recurrent_kernels`.

How a layer runs
----------------
A layer is a *cell* (the equations of one time step) plus one generic loop over time,
as in Keras. For every layer and direction:

1. the input projections of all time steps, ``x_t @ W_ih^T + b_ih``, are computed in a
   single matmul before the loop, so only the recurrent product ``h_{t-1} @ W_hh^T``
   stays inside it;
2. the reverse direction reverses each sequence in time (within its own length when
   ``lengths`` is given) and then runs exactly like the forward direction;
3. the loop itself runs in one of three back-ends (the ``backend`` argument):

``"bptt"`` (default)
    :class:`~dlkit.layers.recurrent_kernels.RecurrentScan`, one
    ``torch.autograd.Function`` per layer-direction, which steps the cell's kernel
    without an autograd graph and has a hand-written backward (backpropagation through
    time) whose weight gradients are a few large matmuls. A single step (``T = 1``, a
    decoder called token by token) runs the cell equations under autograd in every
    back-end: with no loop, the Function's set-up would cost more than the step.
``"autograd"``
    the readable reference: the cell equations (:func:`rnn_tanh_step`,
    :func:`lstm_step`, :func:`gru_step`, the same functions the ``*Cell`` modules call)
    stepped in Python under autograd. It supports double backward and forward-mode AD;
    the tests check that every back-end agrees with torch.nn (and so with each other).
``"native"`` (LSTM only, CPU, float32/float64; opt-in)
    ``"bptt"``'s Function and equations with the whole time loop in C++
    (:class:`~dlkit.layers.recurrent_kernels.NativeLSTMKernel`,
    ``dlkit/layers/native/lstm_scan.cpp``): per step one ``addmm_`` and one vectorised
    pass for the gate arithmetic, instead of a Python step of a dozen tensor operations.
    It is compiled the first time it is used (about 40 s, once per machine: it needs a
    C++ compiler and ``ninja``; see :mod:`dlkit.layers.native`), so the default never
    pays for it. Where torch runs oneDNN's fused LSTM, it takes the layer from about
    1.7x torch.nn.LSTM's time to about 1.3x (``scripts/bench_layers.py``).

``scripts/bench_layers.py`` compares both with ``torch.nn``.

Padded batches
--------------
``forward(input, hx, lengths)`` accepts a 1-D tensor of valid lengths. Sequences are
sorted by length so that, at step ``t``, the sequences still running are the first
``n_t`` rows of the batch: each step then works on a row prefix (like
``torch.nn.utils.rnn.PackedSequence``) and no masking is needed. Outputs at padded steps
are zero, ``h_n``/``c_n`` hold the state at each sequence's last valid step, and the
reverse direction starts at each sequence's last valid step.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dlkit.layers.recurrent_kernels import (
    GRUKernel,
    LSTMKernel,
    NativeLSTMKernel,
    RecurrentKernel,
    RecurrentScan,
    RNNKernel,
    RNNReluKernel,
    State,
    StepFn,
    gru_step,
    linear,
    lstm_step,
    rnn_relu_step,
    rnn_tanh_step,
)

__all__ = [
    "RNNCellBase",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "RNNBase",
    "RNN",
    "LSTM",
    "GRU",
    "rnn_tanh_step",
    "rnn_relu_step",
    "lstm_step",
    "gru_step",
]


# --------------------------------------------------------------------------------------
# The generic time loop of the "autograd" back-end
# --------------------------------------------------------------------------------------


def _reference_scan(
    step: StepFn,
    gx: Tensor,
    state: State,
    w_hh: Tensor,
    b_hh: Tensor | None,
    valid: Tensor | None,
) -> tuple[Tensor, State]:
    """The generic time loop of the ``"autograd"`` back-end: the cell step under autograd.

    Args:
        step: A cell equation such as :func:`lstm_step`.
        gx: Input projections of all steps, shape ``(T, B, G)``.
        state: Initial state, a tuple of ``(B, H)`` tensors (``h`` first).
        w_hh: Recurrent weight, shape ``(G, H)``.
        b_hh: Recurrent bias, shape ``(G,)``, or None.
        valid: ``(T, B)`` booleans, True while step ``t`` is inside sequence ``b``; None
            when no sequence is padded.

    Returns:
        The outputs ``h_t`` stacked to ``(T, B, H)`` (zero at padded steps) and the state
        at each sequence's last valid step.
    """
    outputs = []
    for t in range(gx.shape[0]):
        new_state = step(gx[t], state, w_hh, b_hh)
        if valid is not None:
            running = valid[t].unsqueeze(1)  # (B, 1)
            # A finished sequence keeps its state and emits zeros, like pad_packed_sequence.
            new_state = tuple(torch.where(running, n, s) for n, s in zip(new_state, state))
            outputs.append(torch.where(running, new_state[0], 0.0))
        else:
            outputs.append(new_state[0])
        state = new_state
    return torch.stack(outputs), state


# --------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------


class RNNCellBase(nn.Module):
    """Parameters, initialisation and input checks shared by the recurrent cells.

    Args:
        input_size: Number of input features ``I``.
        hidden_size: Number of hidden units ``H``.
        bias: Whether to learn ``bias_ih`` and ``bias_hh``.
        num_chunks: Number of stacked gates ``k`` (weights have ``k·H`` rows).
        device: Device of the parameters. Defaults to None (the default device).
        dtype: Dtype of the parameters. Defaults to None (the default dtype).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        num_chunks: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        factory = {"device": device, "dtype": dtype}
        G = num_chunks * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G, **factory))
            self.bias_hh = nn.Parameter(torch.empty(G, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draws every parameter from ``U(-1/sqrt(H), 1/sqrt(H))``, torch's default."""
        _uniform_reset(self.parameters(), self.hidden_size)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def _check_input(self, input: Tensor) -> tuple[Tensor, bool]:
        """Returns the input as ``(B, I)`` and whether it was batched."""
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{name} expected a 1-D (unbatched) or 2-D (batched) input, "
                f"got shape {_shape(input)}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name} expected input with {self.input_size} features (last dim), "
                f"got shape {_shape(input)}"
            )
        batched = input.dim() == 2
        return (input if batched else input.unsqueeze(0)), batched

    def _check_state(self, state: Tensor | None, x: Tensor, batched: bool, what: str) -> Tensor:
        """Returns the state as ``(B, H)``, zeros when None."""
        B = x.shape[0]
        if state is None:
            return x.new_zeros(B, self.hidden_size)
        expected = (B, self.hidden_size) if batched else (self.hidden_size,)
        if _shape(state) != expected:
            raise ValueError(
                f"{type(self).__name__} expected {what} of shape {expected}, "
                f"got {_shape(state)}"
            )
        return state if batched else state.unsqueeze(0)


class RNNCell(RNNCellBase):
    """An Elman RNN cell: ``h' = tanh(x @ W_ih^T + b_ih + h @ W_hh^T + b_hh)``.

    Args:
        input_size: Number of input features ``I``.
        hidden_size: Number of hidden units ``H``.
        bias: Whether to learn ``bias_ih`` and ``bias_hh``. Defaults to True.
        nonlinearity: ``"tanh"`` or ``"relu"``. Defaults to ``"tanh"``.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.

    Call arguments:
        input: ``(B, I)`` or unbatched ``(I,)``.
        hx: Previous hidden state ``(B, H)`` or ``(H,)``. Defaults to zeros.

    Returns:
        The new hidden state ``h'``, shape ``(B, H)`` or ``(H,)``.

    Example:
        >>> cell = RNNCell(10, 20)
        >>> cell(torch.randn(3, 10)).shape
        torch.Size([3, 20])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_nonlinearity(nonlinearity)
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._check_input(input)
        h = self._check_state(hx, x, batched, "hx")
        step = rnn_tanh_step if self.nonlinearity == "tanh" else rnn_relu_step
        (h,) = step(linear(x, self.weight_ih, self.bias_ih), (h,), self.weight_hh, self.bias_hh)
        return h if batched else h.squeeze(0)


class LSTMCell(RNNCellBase):
    """A long short-term memory cell (gates ``i, f, g, o`` as in :func:`lstm_step`).

    Args:
        input_size: Number of input features ``I``.
        hidden_size: Number of hidden units ``H``.
        bias: Whether to learn ``bias_ih`` and ``bias_hh``. Defaults to True.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.

    Call arguments:
        input: ``(B, I)`` or unbatched ``(I,)``.
        hx: ``(h, c)``, each ``(B, H)`` or ``(H,)``. Defaults to zeros.

    Returns:
        ``(h', c')``, each ``(B, H)`` or ``(H,)``.

    Example:
        >>> cell = LSTMCell(10, 20)
        >>> h, c = cell(torch.randn(3, 10))
        >>> h.shape, c.shape
        (torch.Size([3, 20]), torch.Size([3, 20]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        x, batched = self._check_input(input)
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ValueError(f"LSTMCell expected hx=(h, c), got {type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else hx
        state = (self._check_state(h0, x, batched, "h"), self._check_state(c0, x, batched, "c"))
        h, c = lstm_step(linear(x, self.weight_ih, self.bias_ih), state, self.weight_hh,
                         self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(RNNCellBase):
    """A gated recurrent unit cell (gates ``r, z, n`` as in :func:`gru_step`).

    Args:
        input_size: Number of input features ``I``.
        hidden_size: Number of hidden units ``H``.
        bias: Whether to learn ``bias_ih`` and ``bias_hh``. Defaults to True.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.

    Call arguments:
        input: ``(B, I)`` or unbatched ``(I,)``.
        hx: Previous hidden state ``(B, H)`` or ``(H,)``. Defaults to zeros.

    Returns:
        The new hidden state ``h'``, shape ``(B, H)`` or ``(H,)``.

    Example:
        >>> cell = GRUCell(10, 20)
        >>> cell(torch.randn(3, 10)).shape
        torch.Size([3, 20])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._check_input(input)
        h = self._check_state(hx, x, batched, "hx")
        (h,) = gru_step(linear(x, self.weight_ih, self.bias_ih), (h,), self.weight_hh,
                        self.bias_hh)
        return h if batched else h.squeeze(0)


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


def _dropout(x: Tensor, p: float) -> Tensor:
    """Inverted dropout: zeroes elements with probability ``p``, scales the rest by 1/(1-p)."""
    if p >= 1.0:
        return x * 0.0
    keep = torch.empty_like(x).bernoulli_(1.0 - p)
    return x * keep.div_(1.0 - p)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_sizes(name: str, input_size: int, hidden_size: int) -> None:
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} expected an int {arg}, got {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} expected {arg} > 0, got {value}")


def _check_nonlinearity(nonlinearity: str) -> None:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _uniform_reset(params: Sequence[nn.Parameter] | object, hidden_size: int) -> None:
    bound = 1.0 / math.sqrt(hidden_size)
    with torch.no_grad():
        for p in params:  # type: ignore[union-attr]
            p.uniform_(-bound, bound)


class _Padding:
    """Everything the loops need to know about a padded batch (sequences sorted by length).

    Attributes:
        sizes: Number of sequences still running at each step (non-increasing).
        last: ``(B,)`` index of each sequence's last valid step.
        valid: ``(T, B)`` booleans, True inside each sequence.
        reverse: ``(T, B)`` time index that reverses each sequence within its length and
            leaves padded steps in place.
    """

    def __init__(self, lengths: Sequence[int], T: int, device: torch.device) -> None:
        B = len(lengths)
        self.sizes: list[int] = []
        running = B
        for t in range(T):
            while running > 0 and lengths[running - 1] <= t:
                running -= 1
            self.sizes.append(running)
        lens = torch.tensor(lengths, device=device)
        steps = torch.arange(T, device=device).unsqueeze(1)  # (T, 1)
        self.last = lens - 1
        self.valid = steps < lens  # (T, B)
        self.reverse = torch.where(self.valid, self.last - steps, steps)  # (T, B)

    def reverse_time(self, x: Tensor) -> Tensor:
        """Reverses each sequence of ``x`` (T, B, C) in time within its own length."""
        return x.gather(0, self.reverse.unsqueeze(2).expand_as(x))


class RNNBase(nn.Module):
    """Stacked, optionally bidirectional recurrent layers; the base of RNN, LSTM and GRU.

    Args:
        mode: ``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"`` or ``"GRU"``.
        input_size: Number of input features ``I``.
        hidden_size: Number of hidden units ``H``.
        num_layers: Number of stacked layers ``L``. Defaults to 1.
        bias: Whether to learn ``bias_ih_l*`` and ``bias_hh_l*``. Defaults to True.
        batch_first: Whether inputs and outputs are ``(B, T, ·)`` instead of
            ``(T, B, ·)``. Defaults to False.
        dropout: Dropout probability on the outputs of every layer but the last, applied
            in training only. Defaults to 0.
        bidirectional: Whether to add a reverse-time direction (``D = 2``).
            Defaults to False.
        proj_size: LSTM projections; only 0 is supported. Defaults to 0.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.
        backend: ``"bptt"`` (fast custom autograd Function with a hand-written backward),
            ``"autograd"`` (the cell equations stepped under autograd; supports double
            backward) or, for LSTM on the CPU, ``"native"`` (the ``"bptt"`` equations
            with the time loop in C++, compiled on first use). Keyword-only. Defaults
            to ``"bptt"``.
    """

    _steps: dict[str, StepFn] = {
        "RNN_TANH": rnn_tanh_step,
        "RNN_RELU": rnn_relu_step,
        "LSTM": lstm_step,
        "GRU": gru_step,
    }
    _kernels: dict[str, type[RecurrentKernel]] = {
        "RNN_TANH": RNNKernel,
        "RNN_RELU": RNNReluKernel,
        "LSTM": LSTMKernel,
        "GRU": GRUKernel,
    }

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "bptt",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if mode not in self._kernels:
            raise ValueError(f"mode must be one of {sorted(self._kernels)}, got {mode!r}")
        _check_sizes(name, input_size, hidden_size)
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"{name} expected num_layers > 0, got {num_layers!r}")
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, numbers.Number)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(f"{name} expected dropout in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout acts between stacked layers, so dropout={dropout} has no "
                f"effect with num_layers=1",
                stacklevel=2,
            )
        if proj_size != 0:
            raise NotImplementedError(f"{name}: proj_size != 0 is not supported yet")
        if backend not in ("bptt", "autograd", "native"):
            raise ValueError(f"{name} expected backend 'bptt', 'autograd' or 'native', got {backend!r}")
        if backend == "native" and mode != "LSTM":
            raise ValueError(f"{name}: backend 'native' exists for LSTM only; {name} trains at torch.nn's "
                             "speed with backend 'bptt' (the default)")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend

        num_gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
        G, H = num_gates * hidden_size, hidden_size
        D = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        # Registration order = torch's parameter order (optimizer state stays portable).
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else H * D
            for direction in range(D):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {f"weight_ih{suffix}": (G, layer_input), f"weight_hh{suffix}": (G, H)}
                if bias:
                    shapes |= {f"bias_ih{suffix}": (G,), f"bias_hh{suffix}": (G,)}
                for pname, shape in shapes.items():
                    setattr(self, pname, nn.Parameter(torch.empty(shape, **factory)))
                self._all_weights.append(list(shapes))
        self.reset_parameters()

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters of every layer-direction, as ``[[w_ih, w_hh, b_ih, b_hh], ...]``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def reset_parameters(self) -> None:
        """Draws every parameter from ``U(-1/sqrt(H), 1/sqrt(H))``, torch's default."""
        _uniform_reset(self.parameters(), self.hidden_size)

    def flatten_parameters(self) -> None:
        """Does nothing: there is no cuDNN weight buffer to compact (kept for drop-in use)."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # ---- input checks ------------------------------------------------------------------

    def _check_input(self, input: Tensor) -> tuple[Tensor, bool]:
        """Returns the input time-major as ``(T, B, I)`` and whether it was batched."""
        name = type(self).__name__
        if input.dim() not in (2, 3):
            raise ValueError(
                f"{name} expected a 2-D (unbatched) or 3-D (batched) input, "
                f"got shape {_shape(input)}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name} expected input with {self.input_size} features (last dim), "
                f"got shape {_shape(input)}"
            )
        if input.dim() == 2:
            return input.unsqueeze(1), False  # (T, I) -> (T, 1, I)
        return (input.transpose(0, 1) if self.batch_first else input), True

    def _check_state(self, state: Tensor | None, x: Tensor, batched: bool, what: str) -> Tensor:
        """Returns an initial state as ``(L·D, B, H)``, zeros when None."""
        B = x.shape[1]
        LD = self.num_layers * (2 if self.bidirectional else 1)
        if state is None:
            return x.new_zeros(LD, B, self.hidden_size)
        expected = (LD, B, self.hidden_size) if batched else (LD, self.hidden_size)
        if not isinstance(state, Tensor) or _shape(state) != expected:
            got = _shape(state) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(
                f"{type(self).__name__} expected {what} of shape {expected}, got {got}"
            )
        return state if batched else state.unsqueeze(1)

    def _check_lengths(self, lengths: Tensor | Sequence[int], T: int, B: int) -> list[int]:
        name = type(self).__name__
        lengths = torch.as_tensor(lengths)
        if lengths.dtype.is_floating_point or lengths.dtype in (torch.bool, torch.complex64,
                                                                 torch.complex128):
            raise ValueError(f"{name} expected integer lengths, got dtype {lengths.dtype}")
        if _shape(lengths) != (B,):
            raise ValueError(f"{name} expected lengths of shape ({B},), got {_shape(lengths)}")
        values = lengths.tolist()
        if min(values) < 1 or max(values) > T:
            raise ValueError(
                f"{name} expected lengths in [1, {T}] (the input has {T} steps), "
                f"got values from {min(values)} to {max(values)}"
            )
        return values

    # ---- the run -----------------------------------------------------------------------

    def _initial_states(
        self, hx: Tensor | tuple[Tensor, Tensor] | None, x: Tensor, batched: bool
    ) -> tuple[Tensor, Tensor | None]:
        if self.mode != "LSTM":
            return self._check_state(hx, x, batched, "h_0"), None
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ValueError(f"LSTM expected hx=(h_0, c_0), got {type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else hx
        return (
            self._check_state(h0, x, batched, "h_0"),
            self._check_state(c0, x, batched, "c_0"),
        )

    def forward(
        self,
        input: Tensor,
        hx: Tensor | tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        x, batched = self._check_input(input)
        T, B, _ = x.shape  # time-major from here on
        h0, c0 = self._initial_states(hx, x, batched)

        padding, order = None, None
        if lengths is not None:
            lens = self._check_lengths(lengths, T, B)
            # Sort by decreasing length so the running sequences are always a row prefix.
            ranked = sorted(range(B), key=lambda b: -lens[b])
            if ranked != list(range(B)):
                order = torch.tensor(ranked, device=x.device)
                x, h0 = x.index_select(1, order), h0.index_select(1, order)
                c0 = c0.index_select(1, order) if c0 is not None else None
                lens = [lens[b] for b in ranked]
            if min(lens) < T:
                padding = _Padding(lens, T, x.device)

        D = 2 if self.bidirectional else 1
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                k = layer * D + direction
                y, state = self._run_direction(
                    layer_input, layer, direction, h0[k], None if c0 is None else c0[k], padding
                )
                outputs.append(y)
                h_n.append(state[0])
                if c0 is not None:
                    c_n.append(state[1])
            layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=2)  # (T, B, D·H)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                layer_input = _dropout(layer_input, self.dropout)

        output = layer_input
        h = torch.stack(h_n)  # (L·D, B, H)
        c = torch.stack(c_n) if c0 is not None else None
        if order is not None:
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(B, device=order.device)
            output, h = output.index_select(1, inverse), h.index_select(1, inverse)
            c = c.index_select(1, inverse) if c is not None else None
        if not batched:
            output, h = output.squeeze(1), h.squeeze(1)
            c = c.squeeze(1) if c is not None else None
        elif self.batch_first:
            output = output.transpose(0, 1)  # (B, T, D·H)
        return output, (h if c is None else (h, c))

    def _run_direction(
        self,
        x: Tensor,
        layer: int,
        direction: int,
        h0: Tensor,
        c0: Tensor | None,
        padding: _Padding | None,
    ) -> tuple[Tensor, State]:
        """Runs one layer in one direction over ``x`` (T, B, C); returns y (T, B, H), state."""
        w_ih, w_hh, *biases = self.all_weights[layer * (2 if self.bidirectional else 1) + direction]
        b_ih, b_hh = biases if biases else (None, None)
        if direction == 1:
            x = x.flip(0) if padding is None else padding.reverse_time(x)
        if self.backend == "native":
            _check_native_input(x)
        # A single step (a decoder called token by token) has no time loop to run or
        # backpropagate through, and setting up the scan costs more than the step itself:
        # the cell equations under autograd take it (12 one-step GRU calls, forward and
        # backward: 7.0 ms against the scan's 10.6 and nn.GRU's 6.6).
        if self.backend in ("bptt", "native") and x.shape[0] > 1:
            sizes = None if padding is None else padding.sizes
            last = None if padding is None else padding.last
            kernel = self._kernels[self.mode]
            if self.backend == "native":
                kernel = NativeLSTMKernel
            y, *state = RecurrentScan.apply(kernel, x, w_ih, b_ih, w_hh, b_hh, h0, c0, sizes, last)
            state = tuple(state)
        else:
            T, B, C = x.shape
            gx = linear(x.reshape(T * B, C), w_ih, b_ih).view(T, B, -1)  # (T, B, G)
            init = (h0,) if c0 is None else (h0, c0)
            valid = None if padding is None else padding.valid
            y, state = _reference_scan(self._steps[self.mode], gx, init, w_hh, b_hh, valid)

        if direction == 1:
            y = y.flip(0) if padding is None else padding.reverse_time(y)
        return y, state


def _check_native_input(x: Tensor) -> None:
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"LSTM(backend='native') runs on CPU float32/float64 tensors, got a {x.dtype} tensor on "
            f"{x.device}: use backend='bptt' (the default) there."
        )


class RNN(RNNBase):
    """A multi-layer Elman RNN: ``h_t = act(x_t @ W_ih^T + b_ih + h_{t-1} @ W_hh^T + b_hh)``.

    Args:
        input_size: Number of input features ``I``.
        hidden_size: Number of hidden units ``H``.
        num_layers: Number of stacked layers ``L``. Defaults to 1.
        nonlinearity: ``"tanh"`` or ``"relu"``. Defaults to ``"tanh"``.
        bias: Whether to learn ``bias_ih_l*`` and ``bias_hh_l*``. Defaults to True.
        batch_first: Inputs and outputs as ``(B, T, ·)``. Defaults to False.
        dropout: Dropout between stacked layers, training only. Defaults to 0.
        bidirectional: Add a reverse-time direction (``D = 2``). Defaults to False.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.
        backend: ``"bptt"`` or ``"autograd"`` (see :class:`RNNBase`). Defaults to "bptt".

    Call arguments:
        input: ``(T, B, I)``, ``(B, T, I)`` if ``batch_first``, or unbatched ``(T, I)``.
        hx: Initial state ``h_0`` of shape ``(L·D, B, H)`` (``(L·D, H)`` unbatched).
            Defaults to zeros.
        lengths: Valid length of every sequence, shape ``(B,)``, values in ``[1, T]``.
            Defaults to None (no padding).

    Returns:
        ``(output, h_n)``: ``output`` ``(T, B, D·H)`` (``(B, T, D·H)`` if
        ``batch_first``; zero at padded steps) and ``h_n`` ``(L·D, B, H)``.

    Example:
        >>> rnn = RNN(10, 20, num_layers=2)
        >>> output, h_n = rnn(torch.randn(5, 3, 10))
        >>> output.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "bptt",
    ) -> None:
        _check_nonlinearity(nonlinearity)
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU",
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            0, device, dtype, backend=backend,
        )  # fmt: skip
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """A multi-layer long short-term memory network (gates ``i, f, g, o``).

    Args:
        input_size: Number of input features ``I``.
        hidden_size: Number of hidden units ``H``.
        num_layers: Number of stacked layers ``L``. Defaults to 1.
        bias: Whether to learn ``bias_ih_l*`` and ``bias_hh_l*``. Defaults to True.
        batch_first: Inputs and outputs as ``(B, T, ·)``. Defaults to False.
        dropout: Dropout between stacked layers, training only. Defaults to 0.
        bidirectional: Add a reverse-time direction (``D = 2``). Defaults to False.
        proj_size: Must be 0 (projections are not implemented). Defaults to 0.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.
        backend: ``"bptt"``, ``"autograd"`` or ``"native"`` (C++ time loop, CPU; see
            :class:`RNNBase`). Defaults to "bptt".

    Call arguments:
        input: ``(T, B, I)``, ``(B, T, I)`` if ``batch_first``, or unbatched ``(T, I)``.
        hx: ``(h_0, c_0)``, each ``(L·D, B, H)`` (``(L·D, H)`` unbatched).
            Defaults to zeros.
        lengths: Valid length of every sequence, shape ``(B,)``, values in ``[1, T]``.
            Defaults to None (no padding).

    Returns:
        ``(output, (h_n, c_n))``: ``output`` ``(T, B, D·H)`` (``(B, T, D·H)`` if
        ``batch_first``; zero at padded steps), ``h_n`` and ``c_n`` ``(L·D, B, H)``.

    Example:
        >>> lstm = LSTM(10, 20, batch_first=True, bidirectional=True)
        >>> output, (h_n, c_n) = lstm(torch.randn(3, 5, 10), lengths=torch.tensor([5, 2, 4]))
        >>> output.shape, h_n.shape
        (torch.Size([3, 5, 40]), torch.Size([2, 3, 20]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "bptt",
    ) -> None:
        super().__init__(
            "LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, proj_size, device, dtype, backend=backend,
        )  # fmt: skip


class GRU(RNNBase):
    """A multi-layer gated recurrent unit network (gates ``r, z, n``).

    Args:
        input_size: Number of input features ``I``.
        hidden_size: Number of hidden units ``H``.
        num_layers: Number of stacked layers ``L``. Defaults to 1.
        bias: Whether to learn ``bias_ih_l*`` and ``bias_hh_l*``. Defaults to True.
        batch_first: Inputs and outputs as ``(B, T, ·)``. Defaults to False.
        dropout: Dropout between stacked layers, training only. Defaults to 0.
        bidirectional: Add a reverse-time direction (``D = 2``). Defaults to False.
        device: Device of the parameters. Defaults to None.
        dtype: Dtype of the parameters. Defaults to None.
        backend: ``"bptt"`` or ``"autograd"`` (see :class:`RNNBase`). Defaults to "bptt".

    Call arguments:
        input: ``(T, B, I)``, ``(B, T, I)`` if ``batch_first``, or unbatched ``(T, I)``.
        hx: Initial state ``h_0`` of shape ``(L·D, B, H)`` (``(L·D, H)`` unbatched).
            Defaults to zeros.
        lengths: Valid length of every sequence, shape ``(B,)``, values in ``[1, T]``.
            Defaults to None (no padding).

    Returns:
        ``(output, h_n)``: ``output`` ``(T, B, D·H)`` (``(B, T, D·H)`` if
        ``batch_first``; zero at padded steps) and ``h_n`` ``(L·D, B, H)``.

    Example:
        >>> gru = GRU(10, 20, num_layers=2)
        >>> output, h_n = gru(torch.randn(5, 3, 10))
        >>> output.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "bptt",
    ) -> None:
        super().__init__(
            "GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, 0, device, dtype, backend=backend,
        )  # fmt: skip