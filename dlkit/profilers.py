"""A do-nothing profiler that costs nothing: the default of every dlkit run.

Lightning wraps every hook call of every training step in ``trainer.profiler.profile(name)``
(about 70 a step with three callbacks). Its default, ``PassThroughProfiler``, records
nothing, but its ``profile`` is a generator-based context manager, so each call still
builds a generator and an f-string name, around 60 us a step on the machines this
project measured (README, "Speed against torch.nn"). :class:`NullProfiler` hands back one
shared ``contextlib.nullcontext`` instead. ``trainer.profiler=simple`` (or
``debug=profiler``) and any profiler passed to ``fit`` replace it as before.
"""

from __future__ import annotations

import contextlib
from typing import Any

from lightning.pytorch.profilers import PassThroughProfiler

__all__ = ["NullProfiler"]

# One context manager for every call: nullcontext keeps no state between uses.
_NOTHING = contextlib.nullcontext()


class NullProfiler(PassThroughProfiler):
    """Lightning's ``PassThroughProfiler`` whose ``profile(name)`` allocates nothing.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(profiler=NullProfiler(), logger=False)
        >>> with trainer.profiler.profile("anything"):
        ...     pass
    """

    def profile(self, action_name: str) -> Any:
        return _NOTHING
