"""dlkit's C++ kernels: built on first use, opt-in, never on the default path.

One kernel today, ``lstm_scan.cpp``: the time loop of :class:`dlkit.layers.LSTM` with
``backend="native"``. Eager PyTorch cannot reach torch.nn.LSTM on a CPU where torch runs
oneDNN's fused LSTM: the matrix products alone take about what torch's whole layer takes
(``scripts/bench_layers.py``, case ``lstm-1layer-gemms-only``), and the Python loop adds a
dozen separate elementwise kernels per step, each a pass over that step's buffers. The C++
loop keeps the same matrix products (ATen's ``addmm_``) and does each step's gate
arithmetic in one vectorised pass.

``torch.compile`` was measured first and did not get there: a compiled cell step costs
more per call than the eager ops it fuses, and a compiled whole loop (one graph per
sequence length, tens of seconds to build) ran about as fast as the eager loop.

The module is compiled by ``torch.utils.cpp_extension.load`` the first time it is needed
(about 40 s on two cores; it needs a C++ compiler and ``ninja``) and cached by torch under
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), one build per CPU
instruction set, torch version and source; later processes load it in well under a second.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from pathlib import Path
from types import ModuleType

__all__ = ["NativeBuildError", "lstm_ops", "native_extension_name"]

log = logging.getLogger(__name__)

LSTM_SOURCE = Path(__file__).with_name("lstm_scan.cpp")

# Compiler flags per ATen CPU capability, so that at::vec::Vectorized takes the same
# instruction set as torch's own kernels on this CPU (and a build never runs on a CPU
# without it: the capability is part of the extension's name).
_ISA_FLAGS: dict[str, list[str]] = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
}  # fmt: skip


class NativeBuildError(RuntimeError):
    """dlkit's C++ kernel could not be built here; the message says what is missing."""


def native_extension_name() -> str:
    """The name the LSTM kernel is built and cached under on this machine.

    It holds the CPU capability ATen dispatches to, and a digest of the torch version
    and the source, so a cache shared between machines or upgrades never loads a build
    made for another.

    Example:
        >>> native_extension_name().startswith("dlkit_lstm_")
        True
    """
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    digest = hashlib.sha256(torch.__version__.encode() + LSTM_SOURCE.read_bytes()).hexdigest()[:12]
    return f"dlkit_lstm_{capability.lower()}_{digest}"


@functools.cache
def lstm_ops() -> ModuleType:
    """The compiled LSTM kernel (``lstm_forward``, ``lstm_backward``), built on first call.

    Returns:
        The extension module.

    Raises:
        NativeBuildError: No C++ compiler or ninja, or the build failed; the message
            names the fix and the way back to the default back-end.

    Example:
        >>> ops = lstm_ops()  # doctest: +SKIP
        >>> sorted(n for n in dir(ops) if n.startswith("lstm_"))  # doctest: +SKIP
        ['lstm_backward', 'lstm_forward']
    """
    import torch
    from torch.utils import cpp_extension

    capability = torch.backends.cpu.get_cpu_capability()
    name = native_extension_name()
    start = time.perf_counter()
    log.info("backend='native': loading dlkit's C++ LSTM kernel %s (the first time on a machine it is "
             "compiled, about 40 s)", name)  # fmt: skip
    try:
        module = cpp_extension.load(
            name=name,
            sources=[str(LSTM_SOURCE)],
            extra_cflags=["-O3", *_ISA_FLAGS.get(capability, ["-DCPU_CAPABILITY=DEFAULT"])],
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as error:
        raise NativeBuildError(
            f"LSTM(backend='native') needs its C++ kernel, which could not be built here: {error}. "
            "It needs a C++ compiler (Debian/Ubuntu: apt-get install g++) and ninja (pip install ninja). "
            "backend='bptt' (the default) needs neither."
        ) from error
    log.info("backend='native': %s ready after %.1f s", name, time.perf_counter() - start)
    return module
