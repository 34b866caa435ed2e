"""Times dlkit models against their torch.nn twins, and how the cost grows with size.

A *twin* is the same architecture built from torch.nn modules (``nn.ReLU``,
``nn.BatchNorm2d``, ``nn.Dropout``, ``nn.LSTM``, ``nn.GRU``, ``nn.TransformerEncoder``...)
with the dlkit model's weights loaded ``strict=True``. Before any timing, each pair is
checked on one batch: the same outputs in eval mode, and the same loss and parameter
gradients in training mode where no dropout is active (otherwise the random masks differ).

Parts, each printed as a markdown table under the machine line (CPU model and ISA,
torch and oneDNN versions, threads, load average):

* ``models``: a training step (forward + loss + backward + Adam step) of each model and
  its twin, alternated within one process after a warm-up; median and min-max of each,
  and the median of the per-round ratios dlkit / twin.
* ``batch``: LeNet-5 epoch time on digits-sized inputs (1 x 32 x 32) against the batch
  size, with a least-squares fit ``ms/step = fixed + per-sample x B`` for each contender.
* ``seqlen``: ``dlkit.layers.LSTM`` vs ``nn.LSTM`` forward + backward against the length.
* ``attention``: ``dlkit.layers.MultiheadAttention`` vs ``nn.MultiheadAttention`` time
  and peak memory against the length, with and without returned attention weights.
* ``rnnmem``: peak memory of the recurrent forward + backward, dlkit vs torch.nn.

Memory is measured in a fresh subprocess per point: the peak resident set size during one
forward + backward (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) minus the resident size just before it, so it counts
every byte torch's CPU allocator and oneDNN's scratch pads touched (tracemalloc sees
none of them), at the kernel's page granularity.

Usage::

    python scripts/bench_models.py --quick                       # smoke run, a few minutes
    python scripts/bench_models.py --only lenet5,rnn_lstm,rnn_gru # model names or part names
    python scripts/bench_models.py --rounds 30 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _bench_common import cpu_description, onednn_version
from torch import Tensor, nn

from dlkit import create_model, layers

# ---- Twins ------------------------------------------------------------------------------


class LeNet5Twin(nn.Module):
    """LeNet-5, modern variant (ReLU, max pooling), in torch.nn; dlkit's module names."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 32) -> None:
        super().__init__()
        side = ((img_size - 4) // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(),  # (B, 16, s, s) -> (B, 16*s*s)
            fc1=nn.Linear(16 * side * side, 120), act1=nn.ReLU(), drop1=nn.Dropout(0.0),
            fc2=nn.Linear(120, 84), act2=nn.ReLU(), drop2=nn.Dropout(0.0),
            fc3=nn.Linear(84, num_classes),
        ))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class _BasicBlockTwin(nn.Module):
    """torchvision's BasicBlock, with dlkit's names (``act1``/``act2``)."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + shortcut)


class ResNet18Twin(nn.Module):
    """ResNet-18 with the small-input stem (3x3 stride-1 conv, no max-pool) in torch.nn."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU()
        widths, channels = (64, 128, 256, 512), 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(
                _BasicBlockTwin(channels, width, stride), _BasicBlockTwin(width, width)
            )
            self.add_module(f"layer{i + 1}", stage)
            channels = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))  # (B, 512, h, w) -> (B, 512) -> (B, classes)


class VGG11BNTwin(nn.Module):
    """VGG-11 with batch norm, small-input variant (no last max-pool, 512-wide classifier)."""

    LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.5) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        channels = in_chans
        for v in self.LAYOUT:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
                continue
            mods += [nn.Conv2d(channels, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
            channels = int(v)
        self.features = nn.Sequential(*mods)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(drop_rate),
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(drop_rate),
            nn.Linear(512, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(
            self.avgpool(self.features(x)).flatten(1)
        )  # (B, 512, h, w) -> (B, 512)


class RNNClassifierTwin(nn.Module):
    """``rnn_classifier`` with its defaults (one layer, one direction, last state) in torch.nn."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_classes: int = 10) -> None:
        super().__init__()
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](input_size, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        _, state = self.rnn(x)  # (B, T, I) -> h_n (1, B, H)
        h_n = state[0] if isinstance(state, tuple) else state
        return self.fc(h_n[-1])


class _PackedLSTM(nn.LSTM):
    """nn.LSTM that takes dlkit's ``lengths=`` keyword through a packed sequence."""

    def forward(self, x: Tensor, hx=None, lengths: Tensor | None = None):  # type: ignore[override]
        return _packed(super().forward, x, hx, lengths)


class _PackedGRU(nn.GRU):
    """nn.GRU that takes dlkit's ``lengths=`` keyword through a packed sequence."""

    def forward(self, x: Tensor, hx=None, lengths: Tensor | None = None):  # type: ignore[override]
        return _packed(super().forward, x, hx, lengths)


def _packed(run: Callable, x: Tensor, hx, lengths: Tensor | None):
    if lengths is None:
        return run(x, hx)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths).cpu(), batch_first=True,
                                               enforce_sorted=False)  # fmt: skip
    out, state = run(packed, hx)
    out, _ = nn.utils.rnn.pad_packed_sequence(
        out, batch_first=True, total_length=x.shape[1]
    )  # (B, T, H)
    return out, state


def swap_recurrent(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose dlkit LSTM/GRU layers are torch.nn ones with the same weights."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            kind = {layers.LSTM: _PackedLSTM, layers.GRU: _PackedGRU}.get(type(child))
            if kind is None:
                continue
            new = kind(
                child.input_size,
                child.hidden_size,
                num_layers=child.num_layers,
                bias=child.bias,
                batch_first=child.batch_first,
                dropout=child.dropout,
                bidirectional=child.bidirectional,
            )
            new.load_state_dict(child.state_dict(), strict=True)
            setattr(parent, name, new)
    return twin


class TransformerStacks(nn.Module):
    """The encoder and decoder stacks of ``transformer_seq2seq`` on embedded inputs.

    Call arguments:
        src: ``(B, S, d)``, tgt: ``(B, T, d)`` embedded tokens; src_pad ``(B, S)`` and
        tgt_pad ``(B, T)`` bool padding masks; causal ``(T, T)`` float mask.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(
        self, src: Tensor, tgt: Tensor, src_pad: Tensor, tgt_pad: Tensor, causal: Tensor
    ) -> Tensor:
        memory = self.encoder(src, src_key_padding_mask=src_pad)  # (B, S, d)
        return self.decoder(tgt, memory, tgt_mask=causal, tgt_key_padding_mask=tgt_pad,
                            memory_key_padding_mask=src_pad, tgt_is_causal=True)  # fmt: skip


def torch_stacks(model: nn.Module) -> TransformerStacks:
    """torch.nn encoder/decoder stacks with the weights of a dlkit ``transformer_seq2seq``."""
    cfg = model.cfg
    kw = {"dim_feedforward": cfg.dim_feedforward, "dropout": cfg.dropout, "activation": cfg.activation,
          "batch_first": True, "norm_first": cfg.norm_first}  # fmt: skip
    enc_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else None
    dec_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else None
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(cfg.d_model, cfg.nhead, **kw), cfg.num_encoder_layers,
                                norm=enc_norm, enable_nested_tensor=False)  # fmt: skip
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(cfg.d_model, cfg.nhead, **kw), cfg.num_decoder_layers,
                                norm=dec_norm)  # fmt: skip
    enc.load_state_dict(model.encoder.layers.state_dict(), strict=True)
    dec.load_state_dict(model.decoder.layers.state_dict(), strict=True)
    return TransformerStacks(enc, dec)


# ---- Pairs --------------------------------------------------------------------------------


@dataclass
class Pair:
    """A dlkit model, its torch.nn twin, one batch and the loss of a training step.

    Args:
        name: ``--only`` key.
        dlkit: The dlkit model.
        twin: The torch.nn twin, holding the same weights.
        inputs: Positional call arguments (both take the same).
        target: What ``loss`` compares the output with.
        loss: ``loss(output, target) -> scalar``.
        note: What is compared, when it is less than the whole model.
        dropout: Whether dropout is active in training (no train-mode equality check).
    """

    name: str
    dlkit: nn.Module
    twin: nn.Module
    inputs: tuple
    target: Tensor
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
    note: str = ""
    dropout: bool = False


def _images(B: int, C: int, side: int, classes: int = 10) -> tuple[tuple[Tensor], Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, C, side, side, generator=g),), torch.randint(
        0, classes, (B,), generator=g
    )


def pair_lenet5(quick: bool = False) -> Pair:
    torch.manual_seed(0)
    ours = create_model("lenet5", variant="modern", num_classes=10, in_chans=1)
    twin = LeNet5Twin()
    twin.load_state_dict(ours.state_dict(), strict=True)
    inputs, target = _images(8 if quick else 64, 1, 32)
    return Pair("lenet5", ours, twin, inputs, target)


def pair_resnet18(quick: bool = False) -> Pair:
    torch.manual_seed(0)
    ours = create_model("resnet18", small_input=True, num_classes=10)
    twin = ResNet18Twin()
    twin.load_state_dict(ours.state_dict(), strict=True)
    inputs, target = _images(2 if quick else 32, 3, 16 if quick else 32)
    return Pair("resnet18", ours, twin, inputs, target)


def pair_vgg11_bn(quick: bool = False) -> Pair:
    torch.manual_seed(0)
    ours = create_model("vgg11_bn", small_input=True, num_classes=10)
    twin = VGG11BNTwin(drop_rate=ours.cfg.drop_rate)
    twin.load_state_dict(ours.state_dict(), strict=True)
    inputs, target = _images(2 if quick else 32, 3, 16 if quick else 32)
    return Pair("vgg11_bn", ours, twin, inputs, target, dropout=ours.cfg.drop_rate > 0)


def _pair_rnn(cell: str, quick: bool, backend: str = "bptt") -> Pair:
    torch.manual_seed(0)
    T, I, H = (6, 8, 16) if quick else (28, 28, 128)  # full: MNIST rows
    ours = create_model("rnn_classifier", cell=cell, input_size=I, hidden_size=H, num_classes=10,
                        rnn_backend=backend)  # fmt: skip
    twin = RNNClassifierTwin(cell, I, H)
    twin.load_state_dict(ours.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    B = 4 if quick else 64
    name = f"rnn_{cell}" if backend == "bptt" else f"rnn_{cell}_{backend}"
    return Pair(name, ours, twin, (torch.randn(B, T, I, generator=g),),
                torch.randint(0, 10, (B,), generator=g),
                note="" if backend == "bptt" else f"model.rnn_backend={backend} (opt-in)")  # fmt: skip


def pair_rnn_lstm(quick: bool = False) -> Pair:
    return _pair_rnn("lstm", quick)


def pair_rnn_lstm_native(quick: bool = False) -> Pair:
    return _pair_rnn("lstm", quick, backend="native")


def pair_rnn_gru(quick: bool = False) -> Pair:
    return _pair_rnn("gru", quick)


def _token_batch(
    B: int, S: int, T: int, src_v: int, tgt_v: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sources with lengths S down to S // 2 (padded with 0), targets ``(B, T + 1)`` split in/out."""
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, src_v, (B, S), generator=g)
    lengths = torch.linspace(S, max(S // 2, 1), B).round().long()
    src = src.masked_fill(torch.arange(S) >= lengths.unsqueeze(1), 0)  # (B, S)
    tgt = torch.randint(3, tgt_v, (B, T + 1), generator=g)
    tgt[:, 0] = 1  # bos
    return src, lengths, tgt[:, :-1], tgt[:, 1:]


def _seq_loss(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())  # (B, T, V) -> (B*T, V)


def pair_seq2seq_bahdanau(quick: bool = False) -> Pair:
    torch.manual_seed(0)
    V, sizes = (17, {"embed_dim": 8, "hidden_size": 12}) if quick else (1000, {})
    ours = create_model("seq2seq_bahdanau", src_vocab_size=V, tgt_vocab_size=V, **sizes)
    B, S, T = (3, 7, 5) if quick else (32, 20, 20)
    src, lengths, tgt_in, tgt_out = _token_batch(B, S, T, V, V)
    return Pair("seq2seq_bahdanau", ours, swap_recurrent(ours), (src, lengths, tgt_in), tgt_out, _seq_loss,
                note="twin: the same model with its GRU layers swapped for nn.GRU (packed source); "
                     "the additive attention has no torch.nn namesake and stays dlkit's")  # fmt: skip


def pair_transformer_seq2seq(quick: bool = False) -> Pair:
    torch.manual_seed(0)
    sizes = {"d_model": 16, "nhead": 2, "dim_feedforward": 24} if quick else {}
    model = create_model("transformer_seq2seq", src_vocab_size=20, tgt_vocab_size=20, **sizes)
    ours = TransformerStacks(model.encoder.layers, model.decoder.layers)
    B, S, T, d = (3, 7, 5, model.cfg.d_model) if quick else (32, 20, 20, model.cfg.d_model)
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randn(B, S, d, generator=g), torch.randn(B, T, d, generator=g)
    src_pad = torch.arange(S) >= torch.linspace(S, max(S // 2, 1), B).round().long().unsqueeze(
        1
    )  # (B, S)
    tgt_pad = torch.zeros(B, T, dtype=torch.bool)
    causal = nn.Transformer.generate_square_subsequent_mask(T)  # (T, T)
    return Pair("transformer_seq2seq", ours, torch_stacks(model), (src, tgt, src_pad, tgt_pad, causal),
                torch.randn(B, T, d, generator=g), F.mse_loss, dropout=model.cfg.dropout > 0,
                note="encoder + decoder stacks only (dlkit Transformer{Encoder,Decoder}[Layer] vs "
                     "nn.Transformer{Encoder,Decoder}[Layer]); embeddings, positions and the output "
                     "layer are plain nn modules in both")  # fmt: skip


PAIRS: dict[str, Callable[[bool], Pair]] = {
    "lenet5": pair_lenet5,
    "resnet18": pair_resnet18,
    "vgg11_bn": pair_vgg11_bn,
    "rnn_lstm": pair_rnn_lstm,
    "rnn_lstm_native": pair_rnn_lstm_native,
    "rnn_gru": pair_rnn_gru,
    "seq2seq_bahdanau": pair_seq2seq_bahdanau,
    "transformer_seq2seq": pair_transformer_seq2seq,
}


def check_twin(pair: Pair, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Assert the twin is one: same eval outputs; same loss and gradients in training mode
    when no dropout is active. Leaves both models in training mode with cleared gradients."""
    for m in (pair.dlkit, pair.twin):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            pair.dlkit(*pair.inputs), pair.twin(*pair.inputs), rtol=rtol, atol=atol
        )
    for m in (pair.dlkit, pair.twin):
        m.train()
    if not pair.dropout:
        # Gradients are compared in float64: two correct float32 backward passes through
        # a deep network differ by more than any tolerance that would still catch a bug.
        inputs = tuple(t.double() if t.is_floating_point() else t for t in pair.inputs)
        target = pair.target.double() if pair.target.is_floating_point() else pair.target
        losses, grads = [], []
        for m in (copy.deepcopy(pair.dlkit).double(), copy.deepcopy(pair.twin).double()):
            m.zero_grad(set_to_none=True)
            loss = pair.loss(m(*inputs), target)
            loss.backward()
            losses.append(loss.detach())
            grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
        torch.testing.assert_close(losses[0], losses[1], rtol=rtol, atol=atol)
        assert grads[0].keys() == grads[1].keys(), (
            f"{pair.name}: different parameters got gradients"
        )
        for n, grad in grads[0].items():
            torch.testing.assert_close(
                grad, grads[1][n], rtol=1e-7, atol=1e-9, msg=f"{pair.name}: gradient of {n}"
            )
    for m in (pair.dlkit, pair.twin):
        m.zero_grad(set_to_none=True)


# ---- Timing --------------------------------------------------------------------------------


class TrainStep:
    """One model, its Adam and a batch: ``()`` runs and times forward + loss + backward + step."""

    def __init__(self, model: nn.Module, inputs: tuple, target: Tensor, loss: Callable) -> None:
        self.model, self.inputs, self.target, self.loss = model.train(), inputs, target, loss
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def __call__(self) -> float:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(*self.inputs), self.target).backward()
        self.opt.step()
        return time.perf_counter() - start


def interleave(
    runs: dict[str, Callable[[], float]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Call each run once per round, alternating the order; the first ``warmup`` rounds are dropped."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    keys = list(runs)
    for r in range(warmup + rounds):
        for k in keys if r % 2 == 0 else keys[::-1]:
            t = runs[k]()
            if r >= warmup:
                times[k].append(t)
    return times


def _ms(ts: Sequence[float]) -> str:
    return f"{1e3 * statistics.median(ts):.2f} ({1e3 * min(ts):.2f}–{1e3 * max(ts):.2f})"


def _ratio(a: Sequence[float], b: Sequence[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def bench_models(names: Sequence[str], rounds: int, warmup: int, quick: bool) -> None:
    rows = [
        "| model | B | dlkit ms/step, median (min–max) | twin ms/step | dlkit / twin |",
        "|---|---:|---:|---:|---:|",
    ]
    notes = []
    for name in names:
        pair = PAIRS[name](quick)
        check_twin(pair)
        runs = {"dlkit": TrainStep(pair.dlkit, pair.inputs, pair.target, pair.loss),
                "twin": TrainStep(pair.twin, pair.inputs, pair.target, pair.loss)}  # fmt: skip
        t = interleave(runs, rounds, warmup)
        rows.append(f"| {name} | {len(pair.target)} | {_ms(t['dlkit'])} | {_ms(t['twin'])} | "
                    f"{_ratio(t['dlkit'], t['twin']):.3f} |")  # fmt: skip
        print(
            f"  {name}: twin checked, ratio {_ratio(t['dlkit'], t['twin']):.3f}",
            file=sys.stderr,
            flush=True,
        )
        if pair.note:
            notes.append(f"- {name}: {pair.note}.")
    _table("Training step (forward + loss + backward + Adam), twin checked equal first; "
           f"{rounds} interleaved rounds after {warmup} warm-up", rows, notes)  # fmt: skip


def bench_batch(rounds: int, quick: bool) -> None:
    """LeNet-5 epochs on ``N`` digits-sized images against the batch size."""
    N = 256 if quick else 1440  # the digits training split, 32x32
    sizes = (8, 32, 128) if quick else (8, 32, 128, 512)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(N, 1, 32, 32, generator=g), torch.randint(0, 10, (N,), generator=g)
    rows = ["| batch | steps/epoch | dlkit epoch ms | twin epoch ms | dlkit ms/step | twin ms/step | dlkit / twin |",
            "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    per_step: dict[str, list[float]] = {"dlkit": [], "twin": []}
    for B in sizes:
        pair = pair_lenet5()
        batches = [(x[i : i + B], y[i : i + B]) for i in range(0, N, B)]
        steps = {
            k: TrainStep(m, (), y, F.cross_entropy)
            for k, m in (("dlkit", pair.dlkit), ("twin", pair.twin))
        }

        def epoch(step: TrainStep, batches: list[tuple[Tensor, Tensor]] = batches) -> float:
            start = time.perf_counter()
            for xb, yb in batches:
                step.inputs, step.target = (xb,), yb
                step()
            return time.perf_counter() - start

        t = interleave({k: (lambda s=s: epoch(s)) for k, s in steps.items()}, rounds, 1)
        n = len(batches)
        for k, ms in per_step.items():
            ms.append(1e3 * statistics.median(t[k]) / n)
        rows.append(f"| {B} | {n} | {_ms(t['dlkit'])} | {_ms(t['twin'])} | {per_step['dlkit'][-1]:.3f} | "
                    f"{per_step['twin'][-1]:.3f} | {_ratio(t['dlkit'], t['twin']):.3f} |")  # fmt: skip
    notes = []
    for k, ms in per_step.items():
        fixed, slope = _linear_fit(sizes, ms)
        notes.append(
            f"- {k}: ms/step ≈ {fixed:.3f} fixed + {1e3 * slope:.2f} µs × batch (least squares)."
        )
    _table(f"LeNet-5 (modern) epoch on {N} images 1x32x32 against the batch size, {rounds} interleaved "
           "epochs each after 1 warm-up", rows, notes)  # fmt: skip


def _linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


class FwdBwd:
    """A module, its inputs and a fixed upstream gradient: ``()`` times one forward + backward."""

    def __init__(self, module: nn.Module, inputs: tuple) -> None:
        self.module, self.inputs = module, inputs
        out = self._out()
        self.grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))

    def _out(self) -> Tensor:
        out = self.module(*self.inputs)
        return out[0] if isinstance(out, tuple) else out

    def __call__(self) -> float:
        self.module.zero_grad(set_to_none=True)
        for t in self.inputs:
            t.grad = None
        start = time.perf_counter()
        self._out().backward(self.grad)
        return time.perf_counter() - start


_LSTM_B, _LSTM_I, _LSTM_H = 64, 32, 128


def _lstm_pair(T: int) -> tuple[nn.Module, nn.Module, tuple]:
    torch.manual_seed(0)
    ref = nn.LSTM(_LSTM_I, _LSTM_H)
    ours = layers.LSTM(_LSTM_I, _LSTM_H)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(
        T, _LSTM_B, _LSTM_I, generator=torch.Generator().manual_seed(1)
    ).requires_grad_()  # (T, B, I)
    return ours, ref, (x,)


def bench_seqlen(rounds: int, quick: bool) -> None:
    lengths = (10, 20) if quick else (25, 50, 100, 200)
    rows = ["| T | dlkit ms | torch ms | dlkit µs / step of T | torch µs / step of T | dlkit / torch |",
            "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for T in lengths:
        ours, ref, inputs = _lstm_pair(T)
        t = interleave({"dlkit": FwdBwd(ours, inputs), "torch": FwdBwd(ref, inputs)}, rounds, 2)
        us = {k: 1e6 * statistics.median(v) / T for k, v in t.items()}
        rows.append(f"| {T} | {_ms(t['dlkit'])} | {_ms(t['torch'])} | {us['dlkit']:.1f} | {us['torch']:.1f} | "
                    f"{_ratio(t['dlkit'], t['torch']):.3f} |")  # fmt: skip
    _table(f"LSTM forward + backward against the length: B {_LSTM_B}, input {_LSTM_I}, hidden {_LSTM_H}, "
           f"(T, B, I); {rounds} interleaved rounds. Linear in T = a constant µs per step of T", rows)  # fmt: skip


_ATT_B, _ATT_E, _ATT_H = 4, 128, 4


def _attention_pair(T: int, need_weights: bool) -> tuple[nn.Module, nn.Module, tuple]:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(_ATT_E, _ATT_H, batch_first=True)
    ours = layers.MultiheadAttention(_ATT_E, _ATT_H, batch_first=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(
        _ATT_B, T, _ATT_E, generator=torch.Generator().manual_seed(1)
    ).requires_grad_()  # (B, T, E)
    return _SelfAttention(ours, need_weights), _SelfAttention(ref, need_weights), (x,)


class _SelfAttention(nn.Module):
    """Self-attention (query is key is value: the packed projection) returning its output."""

    def __init__(self, attention: nn.Module, need_weights: bool) -> None:
        super().__init__()
        self.attention, self.need_weights = attention, need_weights

    def forward(self, x: Tensor) -> Tensor:
        return self.attention(x, x, x, need_weights=self.need_weights)[0]


def bench_attention(rounds: int, quick: bool, threads: int) -> None:
    lengths = (32, 64) if quick else (64, 128, 256, 512, 1024)
    rows = ["| T | weights | dlkit ms | torch ms | dlkit / torch | dlkit peak MB | torch peak MB |",
            "|---:|:---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for T in lengths:
        for w in (False, True):
            ours, ref, inputs = _attention_pair(T, w)
            t = interleave({"dlkit": FwdBwd(ours, inputs), "torch": FwdBwd(ref, inputs)}, rounds, 2)
            mem = {k: _probe(f"attention:{k}:{T}:{int(w)}", threads) for k in ("dlkit", "torch")}
            rows.append(f"| {T} | {'yes' if w else 'no'} | {_ms(t['dlkit'])} | {_ms(t['torch'])} | "
                        f"{_ratio(t['dlkit'], t['torch']):.3f} | {mem['dlkit']} | {mem['torch']} |")  # fmt: skip
    _table(f"MultiheadAttention self-attention forward + backward against the length: B {_ATT_B}, E {_ATT_E}, "
           f"{_ATT_H} heads, batch_first; 'weights' = need_weights (the (B, T, T) weights are returned); "
           f"{rounds} interleaved rounds", rows, [_MEM_NOTE])  # fmt: skip


def bench_rnnmem(quick: bool, threads: int) -> None:
    lengths = (10, 20) if quick else (50, 100, 200)
    rows = ["| T | dlkit peak MB | torch peak MB | dlkit / torch |", "|---:|---:|---:|---:|"]
    for T in lengths:
        mem = {k: _probe(f"lstm:{k}:{T}", threads) for k in ("dlkit", "torch")}
        ratio = f"{float(mem['dlkit']) / float(mem['torch']):.2f}" if _numeric(mem) else ""
        rows.append(f"| {T} | {mem['dlkit']} | {mem['torch']} | {ratio} |")
    _table(f"LSTM forward + backward peak memory: B {_LSTM_B}, input {_LSTM_I}, hidden {_LSTM_H}; "
           f"the input and output alone are {_lstm_floor_mb(max(lengths)):.1f} MB at T {max(lengths)}",
           rows, [_MEM_NOTE])  # fmt: skip


def _lstm_floor_mb(T: int) -> float:
    return 4 * T * _LSTM_B * (_LSTM_I + _LSTM_H) / 2**20


def _numeric(mem: dict[str, str]) -> bool:
    return all(re.fullmatch(r"[\d.]+", v) for v in mem.values()) and float(mem["torch"]) > 0


_MEM_NOTE = ("- peak MB: a fresh subprocess per cell; peak resident set size during one forward + backward "
             "(VmHWM, reset through /proc/self/clear_refs) minus the resident size just before it. Counts what torch's CPU allocator and "
             "oneDNN touched; includes the gradients of the weights; page-granular, ± ~1 MB.")  # fmt: skip


def _probe(spec: str, threads: int) -> str:
    """Run ``--probe spec`` in a fresh interpreter; its peak memory in MB, as text."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--probe",
        spec,
        "--threads",
        str(threads),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return "failed: " + done.stderr.strip().splitlines()[-1][:60]
    return done.stdout.strip().splitlines()[-1]


def probe(spec: str) -> None:
    """Print the peak memory (MB) of one forward + backward of ``spec`` = ``kind:impl:T[:weights]``."""
    kind, impl, T, *rest = spec.split(":")
    if kind == "lstm":
        ours, ref, inputs = _lstm_pair(int(T))
    else:
        ours, ref, inputs = _attention_pair(int(T), bool(int(rest[0])))
    module = ours if impl == "dlkit" else ref
    out = module(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    grad = torch.randn(out.shape)
    del out
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    except OSError:
        print("n/a (no /proc/self/clear_refs)")
        return
    before_kb = _status_kb("VmRSS")
    out = module(*inputs)
    (out[0] if isinstance(out, tuple) else out).backward(grad)
    print(f"{(_status_kb('VmHWM') - before_kb) / 1024:.1f}")


def _status_kb(key: str) -> int:
    """A ``/proc/self/status`` field in kB (``VmRSS``: resident now, ``VmHWM``: its peak)."""
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


# ---- Output --------------------------------------------------------------------------------



def machine_line() -> str:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{cpu_description()}\ntorch {torch.__version__}, {onednn_version()}, {torch.get_num_threads()} threads, "
            f"load average {load} (1, 5, 15 min)")  # fmt: skip


def _table(title: str, rows: Sequence[str], notes: Sequence[str] = ()) -> None:
    print(f"\n### {title}\n\n{machine_line()}\n")
    print("\n".join(rows))
    if notes:
        print("\n" + "\n".join(notes))
    sys.stdout.flush()


PARTS = ("batch", "seqlen", "attention", "rnnmem")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated models ({', '.join(PAIRS)}) and parts ({', '.join(PARTS)})",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed rounds per contender (default 20; quick 3)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and few rounds: a smoke run"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        probe(args.probe)
        return 0
    wanted = args.only.split(",") if args.only else [*PAIRS, *PARTS]
    unknown = [w for w in wanted if w not in PAIRS and w not in PARTS]
    if unknown:
        parser.error(f"unknown --only {unknown}; models: {list(PAIRS)}, parts: {list(PARTS)}")
    rounds = args.rounds or (3 if args.quick else 20)
    threads = torch.get_num_threads()
    models = [w for w in wanted if w in PAIRS]
    if models:
        bench_models(models, rounds, 2 if args.quick else 5, args.quick)
    if "batch" in wanted:
        bench_batch(max(rounds // 4, 2), args.quick)
    if "seqlen" in wanted:
        bench_seqlen(rounds, args.quick)
    if "attention" in wanted:
        bench_attention(rounds, args.quick, threads)
    if "rnnmem" in wanted:
        bench_rnnmem(args.quick, threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
