"""The math of the recurrent layers: cell equations, and the fast scan with its own BPTT.

:mod:`dlkit.layers.recurrent` builds its modules from the pieces here:

- the *cell equations* :func:`rnn_tanh_step`, :func:`rnn_relu_step`, :func:`lstm_step`
  and :func:`gru_step`: one time step, written for autograd. The ``*Cell`` modules call
  them, and so does the ``"autograd"`` back-end's time loop;
- the ``"bptt"`` back-end: :class:`RecurrentScan`, one ``torch.autograd.Function`` per
  layer-direction, and the cell *kernels* it runs (:class:`RNNKernel`,
  :class:`RNNReluKernel`, :class:`LSTMKernel`, :class:`GRUKernel`).

:class:`RecurrentScan`'s forward writes the input projections of all steps into a
preallocated buffer; each step adds its recurrent product into that buffer in place and
turns it into gate activations, without building an autograd graph. Its backward
(backpropagation through time, equations in :meth:`RecurrentScan.backward`) keeps only
the per-step product ``d gates_t @ W_hh`` inside the reverse loop and computes ``dX``,
``dW_ih``, ``dW_hh`` and the bias gradients each in one batched matmul (or sum) after it.
A kernel holds the cell-specific pieces: a forward step, and the local derivatives of a
step, computed for all steps at once before the reverse loop so that the loop needs a
single multiply per gate group.

The hand-written backward exists because autograd's per-step bookkeeping, not the
arithmetic, dominates a Python time loop's backward pass; without a graph, a step is a
few in-place tensor operations and the weight gradients become a few large matmuls.
Everything is plain tensor operations (matmul, addmm, elementwise ops); nothing calls
``torch.nn.LSTM``, ``torch.lstm`` or ``torch._VF``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dlkit.layers.native import lstm_ops

__all__ = [
    "GRUKernel",
    "LSTMKernel",
    "NativeLSTMKernel",
    "RNNKernel",
    "RNNReluKernel",
    "RecurrentKernel",
    "RecurrentScan",
    "State",
    "StepFn",
    "constant",
    "gru_step",
    "linear",
    "lstm_step",
    "rnn_relu_step",
    "rnn_tanh_step",
    "tanh_",
]

State = tuple[Tensor, ...]
"""A recurrent state: ``(h,)``, or ``(h, c)`` for LSTM, each ``(B, H)``."""
StepFn = Callable[[Tensor, State, Tensor, "Tensor | None"], State]
"""A cell equation ``step(gx, state, w_hh, b_hh) -> new_state``, e.g. :func:`lstm_step`."""


# --------------------------------------------------------------------------------------
# Cell equations (autograd-friendly; used by the *Cell modules and the "autograd" loop)
# --------------------------------------------------------------------------------------


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The affine map ``x @ weight^T + bias`` of a batch of vectors, in one ``addmm``.

    Args:
        x: Input, shape ``(B, I)``.
        weight: Weight, shape ``(G, I)``.
        bias: Bias, shape ``(G,)``, or None.

    Returns:
        ``(B, G)``.

    Example:
        >>> linear(torch.ones(2, 3), torch.ones(4, 3), torch.zeros(4)).shape
        torch.Size([2, 4])
    """
    if bias is None:
        return x @ weight.t()
    return torch.addmm(bias, x, weight.t())


def rnn_tanh_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None) -> State:
    """One Elman RNN step with tanh: ``h' = tanh(gx + h @ W_hh^T + b_hh)``.

    Args:
        gx: The input projection ``x @ W_ih^T + b_ih`` of this step, shape ``(B, H)``.
        state: ``(h,)`` with ``h`` of shape ``(B, H)``.
        w_hh: Recurrent weight, shape ``(H, H)``.
        b_hh: Recurrent bias, shape ``(H,)``, or None.

    Returns:
        ``(h',)``, shape ``(B, H)``.

    Example:
        >>> h, = rnn_tanh_step(torch.zeros(2, 4), (torch.zeros(2, 4),), torch.eye(4), None)
        >>> h.shape
        torch.Size([2, 4])
    """
    (h,) = state
    return ((gx + linear(h, w_hh, b_hh)).tanh(),)


def rnn_relu_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None) -> State:
    """One Elman RNN step with ReLU: ``h' = relu(gx + h @ W_hh^T + b_hh)``.

    Args:
        gx: The input projection of this step, shape ``(B, H)``.
        state: ``(h,)`` with ``h`` of shape ``(B, H)``.
        w_hh: Recurrent weight, shape ``(H, H)``.
        b_hh: Recurrent bias, shape ``(H,)``, or None.

    Returns:
        ``(h',)``, shape ``(B, H)``.

    Example:
        >>> h, = rnn_relu_step(-torch.ones(2, 4), (torch.zeros(2, 4),), torch.eye(4), None)
        >>> h.sum().item()
        0.0
    """
    (h,) = state
    return ((gx + linear(h, w_hh, b_hh)).relu(),)


def lstm_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None) -> State:
    """One LSTM step (gates in torch's order ``i, f, g, o``).

    ``i, f, o = σ(·)``, ``g = tanh(·)`` of ``gx + h @ W_hh^T + b_hh``;
    ``c' = f ⊙ c + i ⊙ g``; ``h' = o ⊙ tanh(c')``.

    Args:
        gx: The input projection ``x @ W_ih^T + b_ih``, shape ``(B, 4H)``.
        state: ``(h, c)``, each of shape ``(B, H)``.
        w_hh: Recurrent weight, shape ``(4H, H)``.
        b_hh: Recurrent bias, shape ``(4H,)``, or None.

    Returns:
        ``(h', c')``, each of shape ``(B, H)``.

    Example:
        >>> h0 = c0 = torch.zeros(2, 3)
        >>> h, c = lstm_step(torch.zeros(2, 12), (h0, c0), torch.zeros(12, 3), None)
        >>> h.shape, c.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """
    h, c = state
    gates = gx + linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h_new = o.sigmoid() * c_new.tanh()
    return h_new, c_new


def gru_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None) -> State:
    """One GRU step (gates in torch's order ``r, z, n``).

    ``r = σ(gx_r + gh_r)``, ``z = σ(gx_z + gh_z)``, ``n = tanh(gx_n + r ⊙ gh_n)`` with
    ``gh = h @ W_hh^T + b_hh``; ``h' = (1 − z) ⊙ n + z ⊙ h``. The reset gate scales the
    recurrent term *including* its bias, as in torch and cuDNN.

    Args:
        gx: The input projection ``x @ W_ih^T + b_ih``, shape ``(B, 3H)``.
        state: ``(h,)`` with ``h`` of shape ``(B, H)``.
        w_hh: Recurrent weight, shape ``(3H, H)``.
        b_hh: Recurrent bias, shape ``(3H,)``, or None.

    Returns:
        ``(h',)``, shape ``(B, H)``.

    Example:
        >>> h, = gru_step(torch.zeros(2, 9), (torch.ones(2, 3),), torch.zeros(9, 3), None)
        >>> h[0, 0].item()  # z = 0.5, n = 0: halfway between n and h
        0.5
    """
    (h,) = state
    gh = linear(h, w_hh, b_hh)
    x_r, x_z, x_n = gx.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return (n + z * (h - n),)


# --------------------------------------------------------------------------------------
# Fast back-end: kernels (one time step forward and backward) + one generic Function
# --------------------------------------------------------------------------------------


@functools.cache
def constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached 0-dim tensor holding ``value``, for the arithmetic of the time loops.

    An in-place op with a Python number (``x.mul_(2.0)``) first converts the number to
    a tensor of ``x``'s dtype, an extra ``aten::to`` copy that doubles the cost of an op
    on a ``(B, H)`` slice; a ready tensor of the same dtype skips it. Never modify the
    result in place.

    Example:
        >>> constant(2.0, torch.float32, torch.device("cpu"))
        tensor(2.)
    """
    return torch.tensor(value, dtype=dtype, device=device)


def tanh_(x: Tensor, out: Tensor | None = None) -> Tensor:
    """``tanh(x)`` as ``2 σ(2x) − 1``, written into ``out`` (default: ``x``, in place).

    On CPU torch's vectorised ``tanh`` is several times slower than its ``sigmoid``, so on
    the ``(B, H)`` slices of a recurrent step these four light kernels beat the one
    (figures: the README's "Speed against torch.nn"). The result differs from ``tanh``
    by a few float ulps of 1 (absolute), which the parity tests cover.

    Args:
        x: Any tensor.
        out: Where to write the result, of ``x``'s shape; ``x`` itself when None.

    Returns:
        ``out``, holding ``tanh(x)``.

    Example:
        >>> tanh_(torch.tensor([0.0, 20.0]))
        tensor([0., 1.])
    """
    one = constant(1.0, x.dtype, x.device)
    two = constant(2.0, x.dtype, x.device)
    return torch.mul(x, two, out=x if out is None else out).sigmoid_().mul_(two).sub_(one)



class RecurrentKernel:
    """Buffers and per-step views shared by the cell kernels of :class:`RecurrentScan`.

    A kernel is created for one call of one layer-direction. ``sizes[t]`` is the number
    of sequences still running at step ``t``; they are the first rows of the batch
    (sequences sorted by decreasing length), so every per-step view is a row prefix.
    Buffers that padded rows never write are zero-initialised when ``sizes`` is given,
    which makes padded outputs zero and padded gradients vanish.

    Subclasses set ``num_gates``, ``has_cell``, ``folds_hh_bias`` (``b_hh`` can be added
    to the input projection because no gate multiplies it), allocate ``gx`` (T, B, G),
    the buffer the Function writes the input projections into and each step accumulates
    its recurrent product into, and implement the step methods.

    Args:
        T: Number of time steps.
        w_hh: Recurrent weight, shape ``(G, H)`` with ``G = num_gates * H``.
        b_hh: Recurrent bias ``(G,)``, or None (also when it is folded into ``gx``).
        h0: Initial hidden state, shape ``(B, H)``; sets the buffers' dtype and device.
        c0: Initial cell state ``(B, H)`` for LSTM, None otherwise.
        sizes: Running sequences per step (non-increasing, length ``T``), or None when
            no sequence is padded.

    Attributes:
        y: The outputs ``h_t``, shape ``(T, B, H)``.
        gx: The input projections, ``(T, B, G)``, turned into gate values by the steps.

    Example:
        >>> k = LSTMKernel(5, torch.randn(8, 2), None, torch.zeros(3, 2), torch.zeros(3, 2), None)
        >>> k.gx.shape, k.y.shape
        (torch.Size([5, 3, 8]), torch.Size([5, 3, 2]))
    """

    num_gates: int = 1
    has_cell: bool = False
    folds_hh_bias: bool = True
    gx: Tensor

    def __init__(
        self,
        T: int,
        w_hh: Tensor,
        b_hh: Tensor | None,
        h0: Tensor,
        c0: Tensor | None,
        sizes: Sequence[int] | None,
    ) -> None:
        B, H = h0.shape
        self.T, self.B, self.H = T, B, H
        self.padded = sizes is not None
        self.sizes: Sequence[int] = sizes if sizes is not None else [B] * T
        self.template = h0  # dtype and device of every buffer
        # A contiguous W_hh^T keeps the per-step GEMM on the fast BLAS layout. It is a
        # private copy (contiguous() would return w_hh itself when H == 1), which
        # prepare_forward may scale in place.
        self.w_hh_t = w_hh.t().clone(memory_format=torch.contiguous_format)
        self.b_hh = b_hh
        self.h0 = h0
        # Outputs h_t; padded steps are never written, so they start (and stay) zero.
        self.y = self.buffer(T, B, H)

    # Per-step views, made on first use: a kernel whose loop is not stepped from Python
    # (NativeLSTMKernel) never pays for them.
    @functools.cached_property
    def h_next(self) -> Sequence[Tensor]:
        """``y[t, :n_t]``: where step ``t`` writes ``h_t``."""
        return self.steps(self.y)

    @functools.cached_property
    def h_prev(self) -> Sequence[Tensor]:
        """``h_{t-1}`` for step ``t``: ``h_0`` at ``t = 0``, then the previous output."""
        if self.padded:
            return [self.h0] + [self.y[t - 1, :n] for t, n in enumerate(self.sizes) if t > 0]
        return [self.h0, *self.h_next[:-1]]

    def buffer(self, *shape: int) -> Tensor:
        """A new buffer: zeros for padded batches, uninitialised otherwise."""
        if self.padded:
            return self.template.new_zeros(shape)
        return self.template.new_empty(shape)

    def steps(self, buf: Tensor) -> Sequence[Tensor]:
        """Views ``buf[t, :n_t]`` for every step ``t`` of a ``(T, B, ...)`` buffer."""
        if not self.padded:
            return buf.unbind(0)
        return [buf[t, :n] for t, n in enumerate(self.sizes)]

    def run_forward(self) -> None:
        """The whole forward loop, once the input projections are in ``gx``."""
        self.prepare_forward()
        for t in range(self.T):
            self.forward_step(t)

    def run_backward(self, dh_all: Tensor, w_hh: Tensor, dc_n: Tensor | None) -> Tensor:
        """The reverse loop: fills ``d_gx``/``d_gh``; returns ``dL/dh_0``.

        Args:
            dh_all: ``dL/dh_t`` from the outputs (and ``h_n``), ``(T, B, H)``; the loop
                adds the recurrent paths into it in place.
            w_hh: Recurrent weight ``(G, H)``.
            dc_n: ``dL/dc_n`` for LSTM, or None.
        """
        sizes, B, T = self.sizes, self.B, self.T
        self.prepare_backward(dc_n)
        d_gh = self.d_gh
        # Rows of h_{t-1} at step t: every row of h_0, then the rows running at t-1. Rows
        # that start (in reverse time) at t-1 have d gh_t = 0, so the product covers them.
        prev_rows = [B, *sizes[:-1]]
        dh_prev = [dh_all[t - 1, :n] for t, n in enumerate(prev_rows) if t > 0]
        d_gh_prev = [d_gh[t, :n] for t, n in enumerate(prev_rows)]
        dh = dh_all[T - 1, : sizes[T - 1]]
        for t in range(T - 1, -1, -1):
            direct = self.backward_step(t, dh)
            if t > 0:
                dh = dh_prev[t - 1].addmm_(d_gh_prev[t], w_hh)
            else:
                dh = torch.mm(d_gh_prev[0], w_hh)  # dL/dh_0
            if direct is not None:
                dh[: sizes[t]].add_(direct)
        return dh

    def prepare_forward(self) -> None:
        """Called once after the input projections are written into ``gx``, before step 0."""

    def forward_step(self, t: int) -> None:
        """Computes step ``t`` from ``gx[t]`` and ``h_prev[t]`` into ``h_next[t]``."""
        raise NotImplementedError

    def final_cell(self, last: Tensor | None) -> Tensor:
        """The cell state at each sequence's last step, ``(B, H)`` (LSTM only)."""
        raise NotImplementedError

    def prepare_backward(self, dc_n: Tensor | None) -> None:
        """Fills ``d_gx``/``d_gh`` with the per-step local derivative factors, batched."""
        raise NotImplementedError

    def backward_step(self, t: int, dh: Tensor) -> Tensor | None:
        """Turns ``dh = dL/dh_t`` (rows ``:n_t``) into ``d_gx[t]`` and ``d_gh[t]`` in place.

        Returns the part of ``dL/dh_{t-1}`` that does not go through ``W_hh`` (GRU's
        ``dh ⊙ z``), or None.
        """
        raise NotImplementedError

    # Filled by prepare_backward: d loss / d (input projection gx) and d loss / d (the
    # recurrent term gh = h_{t-1} @ W_hh^T + b_hh), both (T, B, G). They are the same
    # tensor for RNN and LSTM, where the two terms are simply added.
    d_gx: Tensor
    d_gh: Tensor
    dc0: Tensor | None = None


class RNNKernel(RecurrentKernel):
    """Elman RNN with tanh: ``h_t = tanh(gx_t + h_{t-1} @ W_hh^T)`` (``b_hh`` folded into ``gx``).

    ``gx`` is the output buffer ``y`` itself: each step turns its slice into ``h_t``.

    Args:
        T, w_hh, b_hh, h0, c0, sizes: As for :class:`RecurrentKernel`; ``w_hh`` is
            ``(H, H)`` and ``c0`` is None.

    Example:
        >>> k = RNNKernel(5, torch.randn(2, 2), None, torch.zeros(3, 2), None, None)
        >>> k.gx is k.y
        True
    """

    relu = False

    def __init__(
        self,
        T: int,
        w_hh: Tensor,
        b_hh: Tensor | None,
        h0: Tensor,
        c0: Tensor | None,
        sizes: Sequence[int] | None,
    ) -> None:
        super().__init__(T, w_hh, b_hh, h0, c0, sizes)
        self.gx = self.y

    def forward_step(self, t: int) -> None:
        h = self.h_next[t].addmm_(self.h_prev[t], self.w_hh_t)
        if self.relu:
            h.relu_()
        else:
            tanh_(h)

    def prepare_backward(self, dc_n: Tensor | None) -> None:
        # d h_t / d pre_t is the activation's derivative, written from the output h_t:
        # tanh' = 1 - h_t², relu' = [h_t > 0].
        y = self.y
        if self.relu:
            d = (y > 0).to(y.dtype)
        else:
            d = torch.addcmul(torch.ones_like(y), y, y, value=-1)
        if self.padded:
            _zero_rows_after(d, self.sizes)
        self.d_gx = self.d_gh = d
        self.d_pre = self.steps(d)

    def backward_step(self, t: int, dh: Tensor) -> Tensor | None:
        self.d_pre[t].mul_(dh)  # d pre_t = dh_t ⊙ act'(pre_t)
        return None


class RNNReluKernel(RNNKernel):
    """Elman RNN with ReLU: ``h_t = relu(gx_t + h_{t-1} @ W_hh^T)``; as :class:`RNNKernel`.

    Example:
        >>> RNNReluKernel.relu, RNNKernel.relu
        (True, False)
    """

    relu = True


class LSTMKernel(RecurrentKernel):
    """LSTM with gates ``i, f, g, o``; ``b_hh`` is folded into ``gx``.

    Forward buffers: ``gates`` (T, B, 4H), which holds ``gx`` and becomes the activated
    gates, ``c`` (T+1, B, H) cell states times ``cell_scale`` (2) with
    ``c[0] = 2 c_0``, ``tanh_c`` (T, B, H).

    Args:
        T, w_hh, b_hh, h0, c0, sizes: As for :class:`RecurrentKernel`; ``w_hh`` is
            ``(4H, H)`` and ``c0`` is ``(B, H)``.

    Example:
        >>> k = LSTMKernel(5, torch.randn(8, 2), None, torch.zeros(3, 2), torch.ones(3, 2), None)
        >>> k.c.shape, k.c[0, 0].tolist(), k.cell_scale
        (torch.Size([6, 3, 2]), [2.0, 2.0], 2.0)
    """

    num_gates = 4
    has_cell = True
    # The steps keep 2c, not c, in ``c`` (see prepare_forward); a power of two scales
    # every rounding exactly, so 2c here is bitwise twice torch's c.
    cell_scale = 2.0

    def __init__(
        self,
        T: int,
        w_hh: Tensor,
        b_hh: Tensor | None,
        h0: Tensor,
        c0: Tensor | None,
        sizes: Sequence[int] | None,
    ) -> None:
        super().__init__(T, w_hh, b_hh, h0, c0, sizes)
        B, H = self.B, self.H
        self.gx = self.gates = gates = self.buffer(T, B, 4 * H)
        self.c = self.buffer(T + 1, B, H)
        self.c[0] = c0
        self.c[0].mul_(self.cell_scale)
        self.tanh_c = self.buffer(T, B, H)
        i, f, g, o = gates.view(T, B, 4, H).unbind(2)  # (T, B, H) strided views
        self.g_all = self.steps(gates)
        self.g_if = self.steps(gates[:, :, : 2 * H])
        self.g_i, self.g_f, self.g_g, self.g_o = (self.steps(v) for v in (i, f, g, o))
        self.c_prev = self.steps(self.c[:-1])
        self.c_next = self.steps(self.c[1:])
        self.tc = self.steps(self.tanh_c)

    def prepare_forward(self) -> None:
        # tanh(z) = 2 σ(2z) − 1 (see tanh_), for g and for tanh(c). With pre_g doubled, one
        # sigmoid covers all four gates, leaving s_g = σ(2 pre_g) where g goes; doubled
        # here once for every step: the g columns of the private W_hh^T copy and the g
        # part of the input projections. The steps keep s_g and s_c = σ(2 c) and never
        # form g or tanh(c) themselves (two kernels saved per step), and the cell state
        # is kept doubled, c' = 2c, so that s_c = σ(c') needs no multiply (a third);
        # prepare_backward turns s_g, s_c and c' into g, tanh(c) and c for all steps at once.
        H = self.H
        self.two = constant(2.0, self.y.dtype, self.y.device)
        self.w_hh_t[:, 2 * H : 3 * H].mul_(self.two)
        self.gates[:, :, 2 * H : 3 * H].mul_(self.two)
        self.activated = False  # gates and tanh_c still hold s_g and s_c

    def forward_step(self, t: int) -> None:
        gates = self.g_all[t].addmm_(self.h_prev[t], self.w_hh_t)  # pre-activations, g doubled
        gates.sigmoid_()  # i, f, o and s_g
        i, o = self.g_i[t], self.g_o[t]
        # c'_t = 2 c_t = f ⊙ c'_{t-1} + 2 i ⊙ g, with g = 2 s_g − 1
        c2 = torch.mul(self.g_f[t], self.c_prev[t], out=self.c_next[t])
        c2.addcmul_(i, self.g_g[t], value=4.0).sub_(i, alpha=2.0)
        s_c = torch.sigmoid(c2, out=self.tc[t])
        # h_t = o ⊙ tanh(c_t) = o ⊙ (2 s_c − 1): lerp from −o towards o by s_c
        torch.neg(o, out=self.h_next[t]).lerp_(o, s_c)

    def final_cell(self, last: Tensor | None) -> Tensor:
        c_n = self.c[self.T] if last is None else self.c[last + 1, torch.arange(self.B, device=last.device)]
        return c_n / self.cell_scale if self.cell_scale != 1.0 else c_n.clone()

    def prepare_backward(self, dc_n: Tensor | None) -> None:
        # With dh = dL/dh_t (all paths) and dc = dL/dc_t (from c_{t+1} and c_n):
        #   dc     += dh ⊙ o ⊙ (1 - tanh²c)        (h = o ⊙ tanh c)
        #   do_pre  = dh ⊙ tanh c ⊙ o(1-o)  = dh ⊙ h(1-o)
        #   di_pre  = dc ⊙ g ⊙ i(1-i)
        #   df_pre  = dc ⊙ c_{t-1} ⊙ f(1-f)
        #   dg_pre  = dc ⊙ i ⊙ (1-g²)
        #   dc_{t-1} = dc ⊙ f
        # Everything right of dh/dc depends on the forward pass only, so it is computed
        # here for all steps at once; the loop then needs one multiply per gate group.
        T, B, H = self.T, self.B, self.H
        i, f, g, o = self.gates.view(T, B, 4, H).unbind(2)
        if not self.activated:  # once: a retained graph may run backward again
            one = constant(1.0, self.y.dtype, self.y.device)
            g.mul_(self.two).sub_(one)  # s_g -> g = tanh(pre_g)
            self.tanh_c.mul_(self.two).sub_(one)  # s_c -> tanh(c)
            self.activated = True
        c_prev, h, tc = self.c[:-1], self.y, self.tanh_c
        self.d_gx = d = torch.empty_like(self.gates)
        d_i, d_f, d_g, d_o = d.view(T, B, 4, H).unbind(2)
        torch.mul(i, g, out=d_i)
        torch.addcmul(i, d_i, g, value=-1, out=d_g)  # i (1-g²)
        d_i.addcmul_(d_i, i, value=-1)  # g i (1-i)
        torch.mul(f, c_prev, out=d_f)
        d_f.addcmul_(d_f, f, value=-1)  # c_{t-1} f (1-f), times cell_scale
        if self.cell_scale != 1.0:
            d_f.div_(self.cell_scale)
        torch.addcmul(h, h, o, value=-1, out=d_o)  # tanh c · o (1-o)
        self.k_c = torch.addcmul(o, h, tc, value=-1)  # o (1-tanh² c)
        if self.padded:
            _zero_rows_after(d, self.sizes)
        self.d_gh = d
        # One dc buffer for the whole batch: a row joins (in reverse time) at its last
        # valid step still holding its dL/dc_n, and ends holding dL/dc_0.
        self.dc = dc_n.clone() if dc_n is not None else self.y.new_zeros(B, H)
        self.dc0 = self.dc
        self.dc_rows = [self.dc[:n] for n in self.sizes]
        self.dc_rows3 = [r.unsqueeze(1) for r in self.dc_rows]  # (n, 1, H)
        self.d_ifg = self.steps(d.view(T, B, 4, H)[:, :, :3])  # (n, 3, H) per step
        self.d_o = self.steps(d_o)
        self.kc = self.steps(self.k_c)

    def backward_step(self, t: int, dh: Tensor) -> Tensor | None:
        dc = self.dc_rows[t]
        dc.addcmul_(dh, self.kc[t])
        self.d_ifg[t].mul_(self.dc_rows3[t])  # i, f and g all scale with dc
        self.d_o[t].mul_(dh)
        dc.mul_(self.g_f[t])  # dc_{t-1} = dc_t ⊙ f
        return None


class NativeLSTMKernel(LSTMKernel):
    """:class:`LSTMKernel`'s equations with the whole time loop in C++ (``backend="native"``).

    The buffers are :class:`LSTMKernel`'s, except that the forward stores the activated
    gates and ``tanh(c_t)`` directly; each step is ATen's ``addmm_`` for the recurrent
    product and one vectorised pass for the gate arithmetic
    (``dlkit/layers/native/lstm_scan.cpp``, built on first use by
    :func:`dlkit.layers.native.lstm_ops`). CPU only, float32 and float64.

    Args:
        T, w_hh, b_hh, h0, c0, sizes: As for :class:`LSTMKernel`.

    Example:
        >>> k = NativeLSTMKernel(5, torch.randn(8, 2), None, torch.zeros(3, 2), torch.ones(3, 2), None)
        >>> k.gates.shape, k.c[0, 0].tolist()
        (torch.Size([5, 3, 8]), [1.0, 1.0])
    """

    cell_scale = 1.0  # the C++ steps keep c itself

    def __init__(
        self,
        T: int,
        w_hh: Tensor,
        b_hh: Tensor | None,
        h0: Tensor,
        c0: Tensor | None,
        sizes: Sequence[int] | None,
    ) -> None:
        # LSTMKernel's buffers without its per-step views: no step runs from Python.
        RecurrentKernel.__init__(self, T, w_hh, b_hh, h0.contiguous(), c0, sizes)
        B, H = self.B, self.H
        self.gx = self.gates = self.buffer(T, B, 4 * H)
        self.c = self.buffer(T + 1, B, H)
        self.c[0] = c0
        self.tanh_c = self.buffer(T, B, H)

    def run_forward(self) -> None:
        lstm_ops().lstm_forward(self.gates, self.c, self.tanh_c, self.y, self.h0, self.w_hh_t, list(self.sizes))

    def run_backward(self, dh_all: Tensor, w_hh: Tensor, dc_n: Tensor | None) -> Tensor:
        # Rows a padded step does not run must hold no gradient: zeros first.
        self.d_gx = self.d_gh = d = torch.zeros_like(self.gates) if self.padded else torch.empty_like(self.gates)
        self.dc0 = dc = dc_n.clone(memory_format=torch.contiguous_format) if dc_n is not None else (
            self.y.new_zeros(self.B, self.H))
        dh0 = self.y.new_zeros(self.B, self.H)
        lstm_ops().lstm_backward(self.gates, self.c, self.tanh_c, dh_all, dc, d, w_hh.contiguous(), dh0,
                                 list(self.sizes))
        return dh0


class GRUKernel(RecurrentKernel):
    """GRU with gates ``r, z, n``; ``b_hh`` stays in the recurrent term (r scales it).

    Forward buffers: ``gh`` (T, B, 3H) recurrent terms ``h @ W_hh^T + b_hh``, and
    ``act`` (T, B, 3H), which holds ``gx`` and becomes the activated ``r, z, n``.

    Args:
        T, w_hh, b_hh, h0, c0, sizes: As for :class:`RecurrentKernel`; ``w_hh`` is
            ``(3H, H)``, ``b_hh`` ``(3H,)`` or None, and ``c0`` is None.

    Example:
        >>> k = GRUKernel(5, torch.randn(6, 2), torch.zeros(6), torch.zeros(3, 2), None, None)
        >>> k.gh.shape, GRUKernel.folds_hh_bias
        (torch.Size([5, 3, 6]), False)
    """

    num_gates = 3
    folds_hh_bias = False

    def __init__(
        self,
        T: int,
        w_hh: Tensor,
        b_hh: Tensor | None,
        h0: Tensor,
        c0: Tensor | None,
        sizes: Sequence[int] | None,
    ) -> None:
        super().__init__(T, w_hh, b_hh, h0, c0, sizes)
        B, H = self.B, self.H
        self.gh = self.buffer(T, B, 3 * H)
        self.gx = self.act = self.buffer(T, B, 3 * H)
        self.gh_all = self.steps(self.gh)
        self.gh_rz = self.steps(self.gh[:, :, : 2 * H])
        self.gh_n = self.steps(self.gh[:, :, 2 * H :])
        self.rz = self.steps(self.act[:, :, : 2 * H])
        self.r = self.steps(self.act[:, :, :H])
        self.z = self.steps(self.act[:, :, H : 2 * H])
        self.n = self.steps(self.act[:, :, 2 * H :])

    def forward_step(self, t: int) -> None:
        if self.b_hh is None:
            torch.mm(self.h_prev[t], self.w_hh_t, out=self.gh_all[t])
        else:
            torch.addmm(self.b_hh, self.h_prev[t], self.w_hh_t, out=self.gh_all[t])
        self.rz[t].add_(self.gh_rz[t]).sigmoid_()  # r, z = σ(gx + gh)
        n = tanh_(self.n[t].addcmul_(self.r[t], self.gh_n[t]))  # n = tanh(gx_n + r ⊙ gh_n)
        # h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}: a linear interpolation from n towards h_{t-1}.
        torch.lerp(n, self.h_prev[t], self.z[t], out=self.h_next[t])

    def prepare_backward(self, dc_n: Tensor | None) -> None:
        # With dh = dL/dh_t every pre-activation gradient is dh times a factor that
        # depends on the forward pass only:
        #   dn_pre = dh ⊙ (1-z)(1-n²)                     =: dh ⊙ P_n
        #   dz_pre = dh ⊙ (h_{t-1} - n) z(1-z)            =: dh ⊙ P_z
        #   dr_pre = dn_pre ⊙ gh_n ⊙ r(1-r)               =: dh ⊙ P_r
        #   d gx   = dh ⊙ [P_r, P_z, P_n]      d gh = dh ⊙ [P_r, P_z, P_n ⊙ r]
        #   dh_{t-1} = dh ⊙ z + d gh @ W_hh
        T, B, H = self.T, self.B, self.H
        r, z, n = self.act.view(T, B, 3, H).unbind(2)
        gh_n = self.gh[:, :, 2 * H :]
        self.d_gx = dx = torch.empty_like(self.act)
        self.d_gh = dg = torch.empty_like(self.act)
        dx_r, dx_z, dx_n = dx.view(T, B, 3, H).unbind(2)
        dg_r, dg_z, dg_n = dg.view(T, B, 3, H).unbind(2)
        one_minus_z = torch.ones_like(z).sub_(z)
        torch.addcmul(one_minus_z, one_minus_z, n * n, value=-1, out=dx_n)  # P_n
        torch.mul(dx_n, r, out=dg_n)
        # P_z, split at t = 0 because h_{-1} = h_0 is not part of y.
        torch.sub(self.h0.unsqueeze(0), n[:1], out=dx_z[:1])
        torch.sub(self.y[:-1], n[1:], out=dx_z[1:])
        dx_z.mul_(z).mul_(one_minus_z)
        torch.mul(dx_n, gh_n, out=dx_r).mul_(torch.addcmul(r, r, r, value=-1))  # P_r
        dg_r.copy_(dx_r)
        dg_z.copy_(dx_z)
        if self.padded:
            _zero_rows_after(dx, self.sizes)
            _zero_rows_after(dg, self.sizes)
        self.dx3 = self.steps(dx.view(T, B, 3, H))  # (n, 3, H) per step
        self.dg3 = self.steps(dg.view(T, B, 3, H))

    def backward_step(self, t: int, dh: Tensor) -> Tensor | None:
        dh3 = dh.unsqueeze(1)  # (n, 1, H): the same dh scales all three gates
        self.dx3[t].mul_(dh3)
        self.dg3[t].mul_(dh3)
        return dh * self.z[t]  # the direct path h_{t-1} → h_t


def _zero_rows_after(buf: Tensor, sizes: Sequence[int]) -> None:
    """Zeroes ``buf[t, n_t:]``: padded rows must carry no value and no gradient."""
    B = buf.shape[1]
    for t, n in enumerate(sizes):
        if n < B:
            buf[t, n:] = 0


class RecurrentScan(torch.autograd.Function):
    """One layer-direction: input projection + the time loop, with hand-written BPTT.

    Called as ``RecurrentScan.apply(kernel_cls, x, w_ih, b_ih, w_hh, b_hh, h0, c0,
    sizes, last)``. It supports one backward pass (no double backward); the
    ``"autograd"`` back-end of :class:`~dlkit.layers.RNNBase` does.

    Args:
        kernel_cls: The cell's kernel, e.g. :class:`LSTMKernel`.
        x: Input, time-major ``(T, B, C)``.
        w_ih: Input weight ``(G, C)``.
        b_ih: Input bias ``(G,)``, or None.
        w_hh: Recurrent weight ``(G, H)``.
        b_hh: Recurrent bias ``(G,)``, or None.
        h0: Initial hidden state ``(B, H)``.
        c0: Initial cell state ``(B, H)`` for LSTM, None otherwise.
        sizes: Running sequences per step for a padded batch sorted by decreasing
            length, or None.
        last: ``(B,)`` index of each sequence's last valid step, or None.

    Returns:
        ``(y, h_n)``, or ``(y, h_n, c_n)`` for LSTM: ``y`` ``(T, B, H)`` (zero at padded
        steps), ``h_n`` and ``c_n`` ``(B, H)`` at each sequence's last valid step.

    Example:
        >>> x, h0 = torch.randn(5, 3, 4), torch.zeros(3, 2)
        >>> y, h_n = RecurrentScan.apply(
        ...     GRUKernel, x, torch.randn(6, 4), None, torch.randn(6, 2), None, h0, None, None, None)
        >>> y.shape, h_n.shape
        (torch.Size([5, 3, 2]), torch.Size([3, 2]))
    """

    @staticmethod
    def forward(
        ctx,
        kernel_cls: type[RecurrentKernel],
        x: Tensor,
        w_ih: Tensor,
        b_ih: Tensor | None,
        w_hh: Tensor,
        b_hh: Tensor | None,
        h0: Tensor,
        c0: Tensor | None,
        sizes: Sequence[int] | None,
        last: Tensor | None,
    ):
        T, B, C = x.shape
        fold = kernel_cls.folds_hh_bias and b_hh is not None
        kernel = kernel_cls(T, w_hh, None if fold else b_hh, h0, c0, sizes)

        # Input projections of all steps in one matmul, written where the steps need them.
        x2d = x.reshape(T * B, C)
        gx2d = kernel.gx.view(T * B, -1)  # (T·B, G)
        bias = b_ih + b_hh if fold else b_ih  # b_hh sits outside every gate: fold it in
        if bias is None:
            torch.mm(x2d, w_ih.t(), out=gx2d)
        else:
            torch.addmm(bias, x2d, w_ih.t(), out=gx2d)

        kernel.run_forward()

        y = kernel.y
        if sizes is not None and kernel.gx is y:
            _zero_rows_after(y, sizes)  # padded steps got input projections, not outputs
        if last is None:
            h_n = y[T - 1].clone()
        else:
            h_n = y[last, torch.arange(B, device=last.device)]
        ctx.kernel, ctx.last, ctx.fold = kernel, last, fold
        # Through save_for_backward, an in-place change of these before backward raises.
        ctx.save_for_backward(x2d, w_ih, w_hh, h0, y)
        # The kernel (kept on ctx for backward) holds the buffer y. Returning y itself would
        # make a cycle output -> grad_fn -> ctx -> kernel -> output through C++ that
        # reference counting cannot free; an alias sharing y's storage and version counter
        # breaks it.
        if kernel.has_cell:
            return y.detach(), h_n, kernel.final_cell(last)
        return y.detach(), h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, dh_n: Tensor, *dc_n: Tensor):
        # Backpropagation through time, with gx_t = x_t @ W_ih^T + b_ih and
        # gh_t = h_{t-1} @ W_hh^T (+ b_hh). From the last step down to the first:
        #   dh_t           = dy_t (+ dh_n at a sequence's last step) + dh carried from t+1
        #   d gx_t, d gh_t = the cell's local derivatives times dh_t (kernel.run_backward)
        #   dh carried to t-1 = d gh_t @ W_hh (+ GRU's direct path dh_t ⊙ z_t)
        # then, over all steps at once, one matmul (or sum) each:
        #   dx = d gx @ W_ih    dW_ih = Σ_t d gx_t^T @ x_t    db_ih = Σ_t Σ_b d gx_t
        #   dW_hh = Σ_t d gh_t^T @ h_{t-1}                     db_hh = Σ_t Σ_b d gh_t
        kernel: RecurrentKernel = ctx.kernel
        x2d, w_ih, w_hh, h0, y = ctx.saved_tensors
        T, B, H = kernel.T, kernel.B, kernel.H
        last = ctx.last

        # A private, contiguous copy of dy that the loop accumulates dh into, in place.
        dh_all = dy.clone(memory_format=torch.contiguous_format)
        if last is None:
            dh_all[T - 1] += dh_n
        else:
            dh_all.index_put_((last, torch.arange(B, device=last.device)), dh_n,
                              accumulate=True)  # fmt: skip
        dh = kernel.run_backward(dh_all, w_hh, dc_n[0] if dc_n else None)
        d_gh = kernel.d_gh

        G = d_gh.shape[2]
        d_gx2d = kernel.d_gx.view(T * B, G)
        need = ctx.needs_input_grad  # (kernel_cls, x, w_ih, b_ih, w_hh, b_hh, h0, c0, ...)
        dx = (d_gx2d @ w_ih).view(T, B, -1) if need[1] else None
        dw_ih = d_gx2d.t() @ x2d if need[2] else None
        db_ih = d_gx2d.sum(0) if need[3] or (ctx.fold and need[5]) else None
        dw_hh = None
        if need[4]:
            dw_hh = d_gh[0].t() @ h0  # h_{-1} = h_0 is not part of y
            if T > 1:
                # (G, (T-1)·B) @ ((T-1)·B, H)
                dw_hh.addmm_(d_gh[1:].reshape(-1, G).t(), y[:-1].reshape(-1, H))
        if ctx.fold:
            db_hh = db_ih  # folded: both biases received the same gradient
        else:
            db_hh = d_gh.sum((0, 1)) if need[5] and kernel.b_hh is not None else None
        return None, dx, dw_ih, db_ih, dw_hh, db_hh, dh, kernel.dc0, None, None
