"""Times dlkit layers against their torch.nn namesakes, forward + backward.

Every case builds the torch.nn module, builds the dlkit module and loads the torch
module's state_dict into it with ``strict=True``, so both do identical work on the same
weights and inputs. Each repeat times one forward + backward of each module, in
alternating order, so both see the same load on a shared machine; the table shows the
median time of each and the median of the per-repeat ratios (dlkit / torch). On a
machine whose cores are shared with other jobs, ``--stat min`` reports the fastest
repeat of each instead (interference only ever adds time) and their ratio.

Usage::

    python scripts/bench_layers.py                 # all cases, CPU (+ CUDA if available)
    python scripts/bench_layers.py --quick         # fewer repeats
    python scripts/bench_layers.py --only lstm gru # cases whose name contains a word
    python scripts/bench_layers.py --no-mkldnn     # torch without oneDNN kernels
    python scripts/bench_layers.py --stat min      # fastest repeats, for a busy machine
    python scripts/bench_layers.py --repeats 1 --warmup 0 --threads 1  # smoke run, numbers meaningless

``lstm-1layer-gemms-only`` is not a layer: it runs only the matrix products of dlkit's
LSTM (same shapes and calls, no gate arithmetic) against the whole ``torch.nn.LSTM``,
so its ratio is the floor under ``lstm-1layer`` for any eager implementation here.

Adding a layer family: append ``Case`` objects to ``CASES`` in a new section below the
existing ones (one section per family, marked by a ``# ---- Family`` comment).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from _bench_common import cpu_description
from torch import Tensor, nn

from dlkit import layers


@dataclass(frozen=True)
class Case:
    """One benchmark: a dlkit module against its torch.nn namesake.

    Args:
        name: Short unique name, e.g. ``"lstm-2layer"``; ``--only`` matches on it.
        make_dlkit: Builds the dlkit module (its weights are then overwritten).
        make_torch: Builds the torch.nn module.
        make_inputs: Returns the positional call arguments on a device. Tensors that
            should receive gradients must have ``requires_grad=True``.
        target: The dlkit / torch time ratio the case must stay under. Defaults to 1.5.
        floor: The "dlkit" side is not a layer but the least work any implementation
            in eager tensor ops must do (a floor, printed without a verdict).
    """

    name: str
    make_dlkit: Callable[[], nn.Module]
    make_torch: Callable[[], nn.Module]
    make_inputs: Callable[[torch.device], tuple]
    target: float = 1.5
    floor: bool = False


CASES: list[Case] = []

# ---- Recurrent: dlkit.layers.RNN / LSTM / GRU ---------------------------------------
# Batch 64, 50 steps, 32 input features, 128 hidden units; the shape of a small
# sequence model. Inputs need gradients, as they do for any layer inside a network.

_RNN_T, _RNN_B, _RNN_I, _RNN_H = 50, 64, 32, 128


def _sequence(device: torch.device) -> tuple[Tensor]:
    x = torch.randn(_RNN_T, _RNN_B, _RNN_I, device=device)  # (T, B, I)
    return (x.requires_grad_(),)


_LSTM = functools.partial(layers.LSTM, _RNN_I, _RNN_H)
_TORCH_LSTM = functools.partial(nn.LSTM, _RNN_I, _RNN_H)


class _LSTMGemms(torch.autograd.Function):
    """Only the matrix products of dlkit's LSTM scan, same shapes, same calls, same order.

    Forward: the input projections of all steps in one ``addmm``, then one ``addmm_`` of
    ``h_{t-1} @ W_hh^T`` per step. Backward: one ``addmm_`` of ``d gates_t @ W_hh`` per
    step, then ``dx``, ``dW_ih``, ``dW_hh`` and the bias sums over all steps at once. No
    gate activation, no cell update: what is left is the time every eager
    implementation spends whatever its elementwise code, so ``this / torch.nn.LSTM``
    is the floor of the ``lstm-1layer`` ratio.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w_ih: Tensor, w_hh: Tensor, b: Tensor) -> Tensor:  # noqa: ANN001
        T, B, C = x.shape
        G, H = w_hh.shape
        w_hh_t = w_hh.t().clone(memory_format=torch.contiguous_format)
        gates = x.new_empty(T, B, G)
        torch.addmm(b, x.reshape(T * B, C), w_ih.t(), out=gates.view(T * B, G))
        y = x.new_zeros(T, B, H)  # stands for the outputs h_t, which no product writes here
        h0 = x.new_zeros(B, H)
        for t in range(T):
            gates[t].addmm_(y[t - 1] if t else h0, w_hh_t)
        ctx.save_for_backward(x, w_ih, w_hh, gates, y, h0)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):  # noqa: ANN001, ANN205
        x, w_ih, w_hh, d_gates, y, h0 = ctx.saved_tensors  # the gate buffer stands for d gates
        T, B, C = x.shape
        G, H = w_hh.shape
        dh_all = dy.clone(memory_format=torch.contiguous_format)
        for t in range(T - 1, 0, -1):
            dh_all[t - 1].addmm_(d_gates[t], w_hh)
        torch.mm(d_gates[0], w_hh)  # dL/dh_0
        d2d = d_gates.view(T * B, G)
        dx = (d2d @ w_ih).view(T, B, C)
        dw_ih = d2d.t() @ x.reshape(T * B, C)
        dw_hh = d_gates[0].t() @ h0
        dw_hh.addmm_(d_gates[1:].reshape(-1, G).t(), y[:-1].reshape(-1, H))
        return dx, dw_ih, dw_hh, d2d.sum(0)


class LSTMGemmsOnly(nn.Module):
    """An ``nn.LSTM``-shaped module (same state_dict) that runs only :class:`_LSTMGemms`."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        g = 4 * hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(g))
        self.bias_hh_l0 = nn.Parameter(torch.empty(g))

    def forward(self, x: Tensor) -> Tensor:
        return _LSTMGemms.apply(x, self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0 + self.bias_hh_l0)


_GRU = functools.partial(layers.GRU, _RNN_I, _RNN_H)
_TORCH_GRU = functools.partial(nn.GRU, _RNN_I, _RNN_H)
_TWO, _BIDIR = {"num_layers": 2}, {"bidirectional": True}

CASES += [
    Case("lstm-1layer", _LSTM, _TORCH_LSTM, _sequence),
    Case("lstm-1layer-gemms-only", functools.partial(LSTMGemmsOnly, _RNN_I, _RNN_H), _TORCH_LSTM, _sequence,
         floor=True),
    Case("lstm-2layer", functools.partial(_LSTM, **_TWO), functools.partial(_TORCH_LSTM, **_TWO),
         _sequence),
    Case("lstm-bidir", functools.partial(_LSTM, **_BIDIR),
         functools.partial(_TORCH_LSTM, **_BIDIR), _sequence),
    # backend="native": the same layer with its time loop in C++ (opt-in; main() builds or
    # loads the extension before any timing and prints how long that took).
    Case("lstm-1layer-native", functools.partial(_LSTM, backend="native"), _TORCH_LSTM, _sequence),
    Case("lstm-2layer-native", functools.partial(_LSTM, backend="native", **_TWO),
         functools.partial(_TORCH_LSTM, **_TWO), _sequence),
    Case("lstm-bidir-native", functools.partial(_LSTM, backend="native", **_BIDIR),
         functools.partial(_TORCH_LSTM, **_BIDIR), _sequence),
    Case("gru-1layer", _GRU, _TORCH_GRU, _sequence),
    Case("gru-2layer", functools.partial(_GRU, **_TWO), functools.partial(_TORCH_GRU, **_TWO),
         _sequence),
    Case("gru-bidir", functools.partial(_GRU, **_BIDIR), functools.partial(_TORCH_GRU, **_BIDIR),
         _sequence),
]  # fmt: skip


# ---- Attention: dlkit.layers.MultiheadAttention / TransformerEncoderLayer -------------
# Batch 32, 128 tokens, d_model 256, 8 heads, batch_first: one block of a small
# Transformer. Self-attention (query is key is value), so both layers use the packed
# (3E, E) input projection. MultiheadAttention keeps torch's default need_weights=True,
# so both run the explicit matmul + softmax and backpropagate through the returned
# weights too; the encoder layer asks for no weights (scaled_dot_product_attention in
# both) and keeps torch's defaults: dim_feedforward 2048, dropout 0.1, relu, post-LN.

_ATT_B, _ATT_T, _ATT_E, _ATT_H = 32, 128, 256, 8


def _tokens(device: torch.device) -> tuple[Tensor]:
    x = torch.randn(_ATT_B, _ATT_T, _ATT_E, device=device)  # (B, T, E)
    return (x.requires_grad_(),)


def _self_attention(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    (x,) = _tokens(device)
    return (x, x, x)  # one tensor: the packed-projection path


CASES += [
    Case(
        name="multihead-attention",
        make_dlkit=lambda: layers.MultiheadAttention(_ATT_E, _ATT_H, batch_first=True),
        make_torch=lambda: nn.MultiheadAttention(_ATT_E, _ATT_H, batch_first=True),
        make_inputs=_self_attention,
        target=1.1,
    ),
    Case(
        name="transformer-encoder-layer",
        make_dlkit=lambda: layers.TransformerEncoderLayer(_ATT_E, _ATT_H, batch_first=True),
        make_torch=lambda: nn.TransformerEncoderLayer(_ATT_E, _ATT_H, batch_first=True),
        make_inputs=_tokens,
        target=1.1,
    ),
]


# ---- Pooling: dlkit.layers.MaxPool2d -------------------------------------------------
# The 2x2, stride-2 window on LeNet-5's two pooled activations (batch 64) and VGG's
# first (batch 32, 64 channels at 32x32). The input needs a gradient: both layers sit
# between two trained layers.


def _activation(*shape: int) -> Callable[[torch.device], tuple[Tensor]]:
    def make(device: torch.device) -> tuple[Tensor]:
        return (torch.randn(*shape, device=device).relu_().requires_grad_(),)  # after a ReLU: ties

    return make


CASES += [
    Case("maxpool2x2-lenet-1", lambda: layers.MaxPool2d(2), lambda: nn.MaxPool2d(2), _activation(64, 6, 28, 28),
         target=1.0),
    Case("maxpool2x2-lenet-2", lambda: layers.MaxPool2d(2), lambda: nn.MaxPool2d(2), _activation(64, 16, 10, 10),
         target=1.2),  # 1024 planes of 10x10: fixed costs weigh here; 1.01-1.23 measured
    Case("maxpool2x2-vgg-1", lambda: layers.MaxPool2d(2), lambda: nn.MaxPool2d(2), _activation(32, 64, 32, 32),
         target=1.0),
]  # fmt: skip


# ---- (new layer families go here, one section each) ---------------------------------


# ---- Harness --------------------------------------------------------------------------


def _tensors(out: object) -> list[Tensor]:
    """Every tensor in a (nested) module output."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _tensors(item)]
    return []


class _Runner:
    """One module, its inputs and fixed upstream gradients: ``step()`` = fwd + bwd."""

    def __init__(self, module: nn.Module, inputs: tuple, device: torch.device) -> None:
        self.module, self.inputs, self.device = module, inputs, device
        outputs = [t for t in _tensors(module(*inputs)) if t.requires_grad]
        g = torch.Generator(device=device).manual_seed(0)
        # Dense random upstream gradients, as a loss above the layer would send.
        self.grads = [torch.randn(t.shape, generator=g, device=device, dtype=t.dtype)
                      for t in outputs]  # fmt: skip

    def step(self) -> None:
        outputs = [t for t in _tensors(self.module(*self.inputs)) if t.requires_grad]
        torch.autograd.backward(outputs, self.grads)

    def timed_step(self) -> float:
        """Seconds for one forward + backward (gradients cleared beforehand)."""
        self.module.zero_grad(set_to_none=True)
        for x in self.inputs:
            if isinstance(x, Tensor):
                x.grad = None
        self._sync()
        start = time.perf_counter()
        self.step()
        self._sync()
        return time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class Result:
    case: Case
    device: torch.device
    dlkit_ms: float
    torch_ms: float
    ratio: float

    @property
    def met(self) -> bool:
        return self.case.floor or self.ratio <= self.case.target


def run_case(
    case: Case, device: torch.device, repeats: int, warmup: int, stat: str = "median"
) -> Result:
    """Times ``case`` on ``device``: warm-up, then ``repeats`` alternating paired runs.

    ``stat="median"``: median times and the median of the per-repeat ratios;
    ``stat="min"``: the fastest time of each and their ratio.
    """
    torch.manual_seed(0)
    reference = case.make_torch().to(device)
    ours = case.make_dlkit().to(device)
    ours.load_state_dict(reference.state_dict(), strict=True)  # same weights, same work
    inputs = case.make_inputs(device)
    runners = {"dlkit": _Runner(ours, inputs, device), "torch": _Runner(reference, inputs, device)}
    for _ in range(warmup):
        for runner in runners.values():
            runner.step()
    times: dict[str, list[float]] = {"dlkit": [], "torch": []}
    for r in range(repeats):
        order = ("dlkit", "torch") if r % 2 == 0 else ("torch", "dlkit")
        for key in order:
            times[key].append(runners[key].timed_step())
    if stat == "min":
        ours_s, torch_s = min(times["dlkit"]), min(times["torch"])
        ratio = ours_s / torch_s
    else:
        ours_s, torch_s = statistics.median(times["dlkit"]), statistics.median(times["torch"])
        ratio = statistics.median(a / b for a, b in zip(times["dlkit"], times["torch"]))
    return Result(case, device, dlkit_ms=1e3 * ours_s, torch_ms=1e3 * torch_s, ratio=ratio)


def markdown_table(results: Sequence[Result]) -> str:
    rows = [
        "| case | device | dlkit ms | torch ms | ratio | target | met |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.case.name} | {r.device.type} | {r.dlkit_ms:.2f} | {r.torch_ms:.2f} | "
            f"{r.ratio:.2f} | {'floor' if r.case.floor else f'≤ {r.case.target:.2f}'} | "
            f"{'floor' if r.case.floor else 'yes' if r.met else 'NO'} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats, 2 warm-ups")
    parser.add_argument("--repeats", type=int, default=None, help="paired repeats (default 21; quick 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps of each module first (default 5; quick 2)")
    parser.add_argument("--only", nargs="+", default=None, metavar="WORD",
                        help="run cases whose name contains any of these words")  # fmt: skip
    parser.add_argument("--device", choices=["cpu", "cuda"], action="append", default=None,
                        help="devices to run on (default: cpu, and cuda if available)")  # fmt: skip
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="median of paired repeats, or the fastest repeat of each")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-mkldnn", action="store_true",
                        help="disable oneDNN for the whole run (torch.nn.LSTM then runs its "
                             "ATen loop instead of the fused oneDNN kernel)")  # fmt: skip
    args = parser.parse_args(argv)

    repeats = args.repeats or (5 if args.quick else 21)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    devices = [torch.device(d) for d in (args.device or ["cpu"])]
    if args.device is None and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    cases = [c for c in CASES if not args.only or any(w in c.name for w in args.only)]
    if not cases:
        parser.error(f"no case matches {args.only}; cases: {[c.name for c in CASES]}")

    onednn = "off" if args.no_mkldnn else "on"
    print(cpu_description())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN {onednn}, "
          f"{repeats} repeats, {args.stat}\n")  # fmt: skip
    if any("native" in c.name for c in cases):
        from dlkit.layers.native import lstm_ops, native_extension_name

        start = time.perf_counter()
        lstm_ops()
        print(f"backend='native': C++ kernel {native_extension_name()} built or loaded in "
              f"{time.perf_counter() - start:.1f} s (a build happens once per machine, CPU and torch)\n")
    results = []
    for device in devices:
        for case in cases:
            results.append(run_case(case, device, repeats, warmup, args.stat))
            print(f"  {case.name} ({device.type}): ratio {results[-1].ratio:.2f}", flush=True)
    print()
    print(markdown_table(results))
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
