"""Speed switches of a run: ``compile=true`` (torch.compile), ``channels_last`` for CNNs on a GPU,
and a precision the CPU only emulates.

``dlkit-train compile=true`` compiles the network in place (``nn.Module.compile``: the
state_dict keeps its names, so checkpoints stay loadable without it). Compiling happens
on the first calls, so :class:`~dlkit.callbacks.StepTimer` states the one-off cost in
the log: the first training step's time against the median of the next ones.

``channels_last: auto`` (the default) stores a convolutional network's weights in the
NHWC memory format when it trains on a CUDA GPU, where cuDNN's convolutions (and tensor
cores under mixed precision) are fastest in it; on the CPU oneDNN chooses its own layouts
and the switch stays off. ``channels_last=true``/``false`` forces it.

``trainer.precision=bf16-mixed`` runs bfloat16 matrix products natively only on CPUs
with AVX-512 BF16 or AMX; elsewhere oneDNN converts to float32 and back, which is slower
than float32 itself. :func:`check_precision` measures that on the machine and warns.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["check_precision", "compile_network", "native_bf16", "pin_memory_for", "use_channels_last"]

log = logging.getLogger(__name__)

# /proc/cpuinfo flags of bfloat16 arithmetic in hardware.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16() -> bool | None:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX); None when unknown (not Linux).

    Example:
        >>> native_bf16() in (True, False, None)
        True
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in BF16_FLAGS)


def _matmul_seconds(dtype: Any, size: int = 256, repeats: int = 20) -> float:
    import torch  # dlkit-train --cfg job and --help must not import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        a @ b  # warm-up: oneDNN picks and caches its kernel
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
    return time.perf_counter() - start


def check_precision(precision: str | int | None, accelerator: str | None = "cpu") -> float | None:
    """Warn when a bfloat16 precision runs on a CPU without bfloat16 hardware, with the measured cost.

    Args:
        precision: ``trainer.precision`` (``"bf16-mixed"``, ``"bf16-true"``, ``"32-true"``...).
        accelerator: ``trainer.accelerator``; only the CPU is checked (``"auto"`` counts as
            the CPU when no GPU is there).

    Returns:
        bfloat16 matmul time / float32 matmul time when it was measured (no native
        bfloat16), else None.

    Example:
        >>> check_precision("32-true") is None
        True
    """
    if "bf16" not in str(precision):
        return None
    import torch

    if accelerator not in (None, "cpu", "auto") or (accelerator == "auto" and torch.cuda.is_available()):
        return None
    if native_bf16() is not False:
        return None
    ratio = _matmul_seconds(torch.bfloat16) / _matmul_seconds(torch.float32)
    warnings.warn(
        f"trainer.precision={precision} on a CPU without bfloat16 hardware (no {' / '.join(BF16_FLAGS)}): "
        f"it is emulated, and a 256x256 matmul measured {ratio:.1f}x the float32 time here. Use "
        "trainer.precision=32-true unless you need bfloat16's memory savings.",
        stacklevel=2,
    )
    return ratio


def compile_network(net: nn.Module) -> nn.Module:
    """Compile ``net`` in place with ``torch.compile`` (its first calls compile; names unchanged).

    Args:
        net: The network.

    Returns:
        ``net`` itself, compiled.

    Example:
        >>> import torch
        >>> net = compile_network(torch.nn.Linear(2, 1))
        >>> list(net.state_dict())
        ['weight', 'bias']
    """
    net.compile()
    log.info("compile=true: %s is compiled by torch.compile on its first calls (the first step's time "
             "says what that cost).", type(net).__name__)
    return net


def use_channels_last(net: nn.Module, setting: bool | str | None, accelerator: str | None) -> bool:
    """Put a convolutional network in the channels-last memory format when it pays.

    Args:
        net: The network (changed in place; its state_dict keeps names and shapes).
        setting: ``"auto"`` (on a CUDA GPU, for networks with 2-D convolutions), ``True``
            or ``False``.
        accelerator: ``trainer.accelerator`` (``"gpu"``, ``"cuda"``, ``"cpu"``, ``"auto"``).

    Returns:
        Whether the network was converted.

    Raises:
        ValueError: A ``setting`` other than ``"auto"``, true or false.

    Example:
        >>> import torch
        >>> use_channels_last(torch.nn.Conv2d(1, 2, 3), "auto", "cpu")  # the CPU: left as it is
        False
    """
    import torch

    if setting not in ("auto", True, False, None):
        raise ValueError(f"channels_last must be auto, true or false, got {setting!r}.")
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    on_gpu = str(accelerator).lower() in ("gpu", "cuda") or (
        str(accelerator).lower() == "auto" and torch.cuda.is_available())
    if setting is True or (setting == "auto" and has_conv and on_gpu):
        net.to(memory_format=torch.channels_last)
        log.info("channels_last: %s keeps its convolution weights in NHWC.", type(net).__name__)
        return True
    return False


def pin_memory_for(datamodule: Any, trainer: Any) -> bool:
    """Turn on the DataModule's page-locked batches when the run trains on a CUDA GPU.

    Pinned host memory lets Lightning's copy of each batch to the GPU run asynchronously;
    on the CPU it would only cost a copy. DataModules without a ``pin_memory`` attribute
    (the sequence data) are left as they are.

    Args:
        datamodule: The run's DataModule.
        trainer: The Lightning Trainer (its ``accelerator``).

    Returns:
        Whether pinning was turned on.

    Example:
        >>> pin_memory_for(DigitsDataModule(), L.Trainer(accelerator="cpu"))  # doctest: +SKIP
        False
    """
    from lightning.pytorch.accelerators import CUDAAccelerator

    if isinstance(getattr(trainer, "accelerator", None), CUDAAccelerator) and hasattr(datamodule, "pin_memory"):
        datamodule.pin_memory = True
        return True
    return False
