"""Recurrent layers: Elman RNN, LSTM and GRU cells, and the layers that run them over time.

The public classes are drop-in replacements for their ``torch.nn`` namesakes: the same
constructor arguments, the same state_dict keys and shapes (``weight_ih_l0``,
``weight_hh_l0_reverse``, ...; gates stacked in torch's order: LSTM ``i, f, g, o``, GRU
``r, z, n``), the same initialisation (uniform in ``±1/sqrt(hidden_size)``) and the same
return values. Everything is written with plain tensor operations (matmul, addmm,
elementwise ops); nothing calls ``torch.nn.LSTM``, ``torch.lstm`` or ``torch._VF``.

How a layer runs
----------------
A layer is a *cell* (the equations of one time step) plus one generic loop over time,
as in Keras. For every layer and direction:

1. the input projections of all time steps, ``x_t @ W_ih^T + b_ih``, are computed in a
   single matmul before the loop, so only the recurrent product ``h_{t-1} @ W_hh^T``
   stays inside it;
2. the reverse direction reverses each sequence in time (within its own length when
   ``lengths`` is given) and then runs exactly like the forward direction;
3. the loop itself runs in one of two back-ends (the ``backend`` argument):

``"bptt"`` (default)
    :class:`_RecurrentScan`, one ``torch.autograd.Function`` per layer-direction. Its
    forward writes the input projections into a preallocated buffer, and each step adds
    its recurrent product into that buffer in place and turns it into gate activations,
    without building an autograd graph. Its hand-written backward (backpropagation
    through time, equations in :meth:`_RecurrentScan.backward`) keeps only the
    per-step product ``d gates_t @ W_hh`` inside the reverse loop and computes ``dX``,
    ``dW_ih``, ``dW_hh`` and the bias gradients each in one batched matmul (or sum)
    after it. The cell-specific pieces live in small kernels (:class:`_RNNKernel`,
    :class:`_LSTMKernel`, :class:`_GRUKernel`): a forward step, and the local
    derivatives of a step, computed for all steps at once before the reverse loop so
    that the loop needs a single multiply per gate group.
``"autograd"``
    the readable reference: the cell equations (:func:`rnn_tanh_step`,
    :func:`lstm_step`, :func:`gru_step`, the same functions the ``*Cell`` modules call)
    stepped in Python under autograd. It supports double backward and forward-mode AD;
    the tests check that both back-ends agree with torch.nn (and so with each other).

Why a hand-written backward
---------------------------
Measured with 1 thread (CPU time; batch 64, 50 steps, 32 inputs, 128 hidden units,
forward + backward), the ``"autograd"`` back-end costs ≈ 2.4× (GRU) to 4× (LSTM)
``torch.nn``, mostly autograd's per-step bookkeeping in the backward pass (about 15
graph nodes per step); the ``"bptt"`` back-end is within ≈ 1.0–1.1× of ``torch.nn``
there: 8 tensor operations per forward step and 5 per backward step for LSTM, no graph,
and the weight gradients in large matmuls that run at full BLAS speed.

With 2 threads, ``torch.nn.LSTM`` runs oneDNN's fused LSTM kernel (≈ 9 ms on the
machine this was written on, against ≈ 19 ms for its own ATen loop), which parallelises
each step across cores. Here the per-step GEMMs are small (64×128×512) and scale poorly,
and the elementwise step operations run on one core, so the gap is larger with 2 threads
than with 1: on an idle 2-core AVX2 machine 1.3–1.5× ``torch.nn.LSTM`` (1 layer, 2 layers,
bidirectional; repeated runs spread by ±0.1), while GRU, which torch runs as an ATen
loop, stays at about 0.7–0.75×. On the same machine busy with other jobs the LSTM ratio
rose to 1.8×: torch's fused kernel suffers less from stolen cycles than 400 small
kernels a pass do. ``scripts/bench_layers.py`` reports the current ratios.

Tried and dropped: computing the local derivatives inside the forward step (data still in
cache) cost more than the batched pass it replaced; ``torch.jit.script`` does not remove
Python's per-operation cost (FACTS.md); keeping LSTM's gates in the order ``o, i, f, g``
(one sigmoid a step instead of two, weights permuted per call) and running the time loop
on one thread both measured no better, within the ±0.1 spread.

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
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

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

State = tuple[Tensor, ...]
StepFn = Callable[[Tensor, State, Tensor, "Tensor | None"], State]


# --------------------------------------------------------------------------------------
# Cell equations (autograd-friendly; used by the *Cell modules and the reference loop)
# --------------------------------------------------------------------------------------


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Returns ``x @ weight^T + bias`` for a 2-D ``x``."""
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
    return ((gx + _linear(h, w_hh, b_hh)).tanh(),)


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
    return ((gx + _linear(h, w_hh, b_hh)).relu(),)


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
    gates = gx + _linear(h, w_hh, b_hh)
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
    gh = _linear(h, w_hh, b_hh)
    x_r, x_z, x_n = gx.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return (n + z * (h - n),)


# --------------------------------------------------------------------------------------
# Fast back-end: kernels (one time step forward and backward) + one generic Function
# --------------------------------------------------------------------------------------


class _Kernel:
    """Buffers and per-step views shared by the cell kernels of :class:`_RecurrentScan`.

    A kernel is created for one call of one layer-direction. ``sizes[t]`` is the number
    of sequences still running at step ``t``; they are the first rows of the batch
    (sequences sorted by decreasing length), so every per-step view is a row prefix.
    Buffers that padded rows never write are zero-initialised when ``sizes`` is given,
    which makes padded outputs zero and padded gradients vanish.

    Subclasses set ``num_gates``, ``has_cell``, ``folds_hh_bias`` (``b_hh`` can be added
    to the input projection because no gate multiplies it), allocate ``gx`` (T, B, G),
    the buffer the Function writes the input projections into and each step accumulates
    its recurrent product into, and implement the step methods.
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
        # A contiguous W_hh^T keeps the per-step GEMM on the fast BLAS layout.
        self.w_hh_t = w_hh.t().contiguous()
        self.b_hh = b_hh
        self.h0 = h0
        # Outputs h_t; padded steps are never written, so they start (and stay) zero.
        self.y = self.buffer(T, B, H)
        self.h_next = self.steps(self.y)
        # h_{t-1} for step t: h_0 at t = 0, then the previous output.
        if self.padded:
            self.h_prev = [h0] + [self.y[t - 1, :n] for t, n in enumerate(self.sizes) if t > 0]
        else:
            self.h_prev = [h0, *self.h_next[:-1]]

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


class _RNNKernel(_Kernel):
    """Elman RNN: ``h_t = act(gx_t + h_{t-1} @ W_hh^T)`` (``b_hh`` folded into ``gx``).

    ``gx`` is the output buffer ``y`` itself: each step turns its slice into ``h_t``.
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
            h.tanh_()

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


class _RNNReluKernel(_RNNKernel):
    relu = True


class _LSTMKernel(_Kernel):
    """LSTM with gates ``i, f, g, o``; ``b_hh`` is folded into ``gx``.

    Forward buffers: ``gates`` (T, B, 4H), which holds ``gx`` and becomes the activated
    gates, ``c`` (T+1, B, H) cell states with ``c[0] = c_0``, ``tanh_c`` (T, B, H).
    """

    num_gates = 4
    has_cell = True

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
        self.tanh_c = self.buffer(T, B, H)
        i, f, g, o = gates.view(T, B, 4, H).unbind(2)  # (T, B, H) strided views
        self.g_all = self.steps(gates)
        self.g_if = self.steps(gates[:, :, : 2 * H])
        self.g_i, self.g_f, self.g_g, self.g_o = (self.steps(v) for v in (i, f, g, o))
        self.c_prev = self.steps(self.c[:-1])
        self.c_next = self.steps(self.c[1:])
        self.tc = self.steps(self.tanh_c)

    def forward_step(self, t: int) -> None:
        self.g_all[t].addmm_(self.h_prev[t], self.w_hh_t)  # pre-activations
        self.g_if[t].sigmoid_()
        self.g_g[t].tanh_()
        self.g_o[t].sigmoid_()
        c = torch.mul(self.g_f[t], self.c_prev[t], out=self.c_next[t])
        c.addcmul_(self.g_i[t], self.g_g[t])  # c_t = f ⊙ c_{t-1} + i ⊙ g
        tc = torch.tanh(c, out=self.tc[t])
        torch.mul(self.g_o[t], tc, out=self.h_next[t])  # h_t = o ⊙ tanh(c_t)

    def final_cell(self, last: Tensor | None) -> Tensor:
        if last is None:
            return self.c[self.T].clone()
        return self.c[last + 1, torch.arange(self.B, device=last.device)]

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
        c_prev, h, tc = self.c[:-1], self.y, self.tanh_c
        self.d_gx = d = torch.empty_like(self.gates)
        d_i, d_f, d_g, d_o = d.view(T, B, 4, H).unbind(2)
        torch.mul(i, g, out=d_i)
        torch.addcmul(i, d_i, g, value=-1, out=d_g)  # i (1-g²)
        d_i.addcmul_(d_i, i, value=-1)  # g i (1-i)
        torch.mul(f, c_prev, out=d_f)
        d_f.addcmul_(d_f, f, value=-1)  # c_{t-1} f (1-f)
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


class _GRUKernel(_Kernel):
    """GRU with gates ``r, z, n``; ``b_hh`` stays in the recurrent term (r scales it).

    Forward buffers: ``gh`` (T, B, 3H) recurrent terms ``h @ W_hh^T + b_hh``, and
    ``act`` (T, B, 3H), which holds ``gx`` and becomes the activated ``r, z, n``.
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
        n = self.n[t].addcmul_(self.r[t], self.gh_n[t]).tanh_()  # n = tanh(gx_n + r ⊙ gh_n)
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


class _RecurrentScan(torch.autograd.Function):
    """One layer-direction: input projection + the generic time loop, with hand-written BPTT.

    ``apply(kernel_cls, x, w_ih, b_ih, w_hh, b_hh, h0, c0, sizes, last)`` with ``x``
    (T, B, C), the layer-direction's parameters (biases may be None), ``h0``/``c0`` (B, H)
    (``c0`` None unless LSTM), ``sizes`` the number of running sequences per step (or
    None) and ``last`` (B,) the index of each sequence's last valid step (or None).
    Returns ``y`` (T, B, H), ``h_n`` (B, H) and, for LSTM, ``c_n`` (B, H).
    """

    @staticmethod
    def forward(  # noqa: ANN205
        ctx,  # noqa: ANN001
        kernel_cls: type[_Kernel],
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

        for t in range(T):
            kernel.forward_step(t)

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
        # make a cycle output -> grad_fn -> ctx -> kernel -> output that passes through C++
        # and is never freed (about one graph per call leaked); an alias sharing y's storage
        # and version counter breaks it.
        if kernel.has_cell:
            return y.detach(), h_n, kernel.final_cell(last)
        return y.detach(), h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, dh_n: Tensor, *dc_n: Tensor):  # noqa: ANN001, ANN205
        # Backpropagation through time, with gx_t = x_t @ W_ih^T + b_ih and
        # gh_t = h_{t-1} @ W_hh^T (+ b_hh). From the last step down to the first:
        #   dh_t           = dy_t (+ dh_n at a sequence's last step) + dh carried from t+1
        #   d gx_t, d gh_t = the cell's local derivatives times dh_t (kernel.backward_step)
        #   dh carried to t-1 = d gh_t @ W_hh (+ GRU's direct path dh_t ⊙ z_t)
        # then, over all steps at once, one matmul (or sum) each:
        #   dx = d gx @ W_ih    dW_ih = Σ_t d gx_t^T @ x_t    db_ih = Σ_t Σ_b d gx_t
        #   dW_hh = Σ_t d gh_t^T @ h_{t-1}                     db_hh = Σ_t Σ_b d gh_t
        kernel: _Kernel = ctx.kernel
        x2d, w_ih, w_hh, h0, y = ctx.saved_tensors
        T, B, H = kernel.T, kernel.B, kernel.H
        sizes, last = kernel.sizes, ctx.last

        # A private, contiguous copy of dy that the loop accumulates dh into, in place.
        dh_all = dy.clone(memory_format=torch.contiguous_format)
        if last is None:
            dh_all[T - 1] += dh_n
        else:
            dh_all.index_put_((last, torch.arange(B, device=last.device)), dh_n,
                              accumulate=True)  # fmt: skip
        kernel.prepare_backward(dc_n[0] if dc_n else None)
        d_gh = kernel.d_gh

        # Rows of h_{t-1} at step t: every row of h_0, then the rows running at t-1. Rows
        # that start (in reverse time) at t-1 have d gh_t = 0, so the product covers them.
        prev_rows = [B, *sizes[:-1]]
        dh_prev = [dh_all[t - 1, :n] for t, n in enumerate(prev_rows) if t > 0]
        d_gh_prev = [d_gh[t, :n] for t, n in enumerate(prev_rows)]
        dh = dh_all[T - 1, : sizes[T - 1]]
        for t in range(T - 1, -1, -1):
            direct = kernel.backward_step(t, dh)
            if t > 0:
                dh = dh_prev[t - 1].addmm_(d_gh_prev[t], w_hh)
            else:
                dh = torch.mm(d_gh_prev[0], w_hh)  # dL/dh_0
            if direct is not None:
                dh[: sizes[t]].add_(direct)

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


def _dropout(x: Tensor, p: float) -> Tensor:
    """Inverted dropout: zeroes elements with probability ``p``, scales the rest by 1/(1-p)."""
    if p >= 1.0:
        return x * 0.0
    keep = torch.empty_like(x).bernoulli_(1.0 - p)
    return x * keep.div_(1.0 - p)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


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
        (h,) = step(_linear(x, self.weight_ih, self.bias_ih), (h,), self.weight_hh, self.bias_hh)
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
        h, c = lstm_step(_linear(x, self.weight_ih, self.bias_ih), state, self.weight_hh,
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
        (h,) = gru_step(_linear(x, self.weight_ih, self.bias_ih), (h,), self.weight_hh,
                        self.bias_hh)
        return h if batched else h.squeeze(0)


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


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
        backend: ``"bptt"`` (fast custom autograd Function with a hand-written backward)
            or ``"autograd"`` (the cell equations stepped under autograd; supports double
            backward). Keyword-only. Defaults to ``"bptt"``.
    """

    _steps: dict[str, StepFn] = {
        "RNN_TANH": rnn_tanh_step,
        "RNN_RELU": rnn_relu_step,
        "LSTM": lstm_step,
        "GRU": gru_step,
    }
    _kernels: dict[str, type[_Kernel]] = {
        "RNN_TANH": _RNNKernel,
        "RNN_RELU": _RNNReluKernel,
        "LSTM": _LSTMKernel,
        "GRU": _GRUKernel,
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
        if backend not in ("bptt", "autograd"):
            raise ValueError(f"{name} expected backend 'bptt' or 'autograd', got {backend!r}")
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
        if self.backend == "bptt":
            sizes = None if padding is None else padding.sizes
            last = None if padding is None else padding.last
            y, *state = _RecurrentScan.apply(
                self._kernels[self.mode], x, w_ih, b_ih, w_hh, b_hh, h0, c0, sizes, last
            )
            state = tuple(state)
        else:
            T, B, C = x.shape
            gx = _linear(x.reshape(T * B, C), w_ih, b_ih).view(T, B, -1)  # (T, B, G)
            init = (h0,) if c0 is None else (h0, c0)
            valid = None if padding is None else padding.valid
            y, state = _reference_scan(self._steps[self.mode], gx, init, w_hh, b_hh, valid)

        if direction == 1:
            y = y.flip(0) if padding is None else padding.reverse_time(y)
        return y, state


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
        backend: ``"bptt"`` or ``"autograd"`` (see :class:`RNNBase`). Defaults to "bptt".

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
