"""dlkit: a Keras-style deep-learning framework on PyTorch Lightning.

The top-level names load lazily, so ``import dlkit`` (and ``dlkit-train --help``)
does not pay for importing torch and Lightning until something is used.

Example:
    >>> from dlkit import Classifier, create_model, callbacks
    >>> from dlkit.data import DigitsDataModule
    >>> clf = Classifier(create_model("lenet5", num_classes=10, in_chans=1))
    >>> clf.compile(optimizer="adam", lr=1e-3, metrics=["accuracy"])
    >>> history = clf.fit(DigitsDataModule(resize=32), epochs=10)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Classifier": "dlkit.tasks",
    "Regressor": "dlkit.tasks",
    "Seq2Seq": "dlkit.tasks",
    "Task": "dlkit.tasks",
    "create_model": "dlkit.models",
    "load_model": "dlkit.tasks",
    "list_models": "dlkit.models",
    "register_model": "dlkit.models",
    "tune": "dlkit.tuning",
}
_SUBMODULES = {"callbacks", "data", "layers", "losses", "models", "tasks"}
__all__ = sorted([*_LAZY, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"dlkit.{name}")
    raise AttributeError(f"module 'dlkit' has no attribute {name!r}")
