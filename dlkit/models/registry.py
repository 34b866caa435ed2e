"""The model registry: every architecture is reachable by name.

Builders are small functions that return an ``nn.Module``; decorating one with
:func:`register_model` makes it reachable through :func:`create_model`, the Hydra
``model/`` configs and ``dlkit-train model=<name>``.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, TypeVar

import torch.nn as nn

from dlkit.models.pretrained import PretrainedSource, load_pretrained

__all__ = ["register_model", "create_model", "list_models", "is_model", "UnknownModelError"]

_ModelFn = TypeVar("_ModelFn", bound=Callable[..., nn.Module])
_MODELS: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(KeyError):
    """Raised by :func:`create_model` for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message and show the quotes
        return str(self.args[0])


def register_model(fn: _ModelFn | None = None, *, name: str | None = None) -> Any:
    """Register a model builder under its function name (or ``name``).

    Args:
        fn: The builder; it takes keyword arguments and returns an ``nn.Module``.
        name: The registry name. Defaults to ``fn.__name__``.

    Raises:
        ValueError: If the name is already registered; registries that overwrite
            silently hide bugs where two families claim one name.

    Example:
        >>> @register_model
        ... def tiny_mlp(num_classes: int = 10, **kwargs):
        ...     return MLP(in_features=64, num_classes=num_classes, hidden_sizes=(32,))
    """

    def decorator(builder: _ModelFn) -> _ModelFn:
        key = name or builder.__name__
        if key in _MODELS:
            raise ValueError(
                f"A model named {key!r} is already registered (by "
                f"{_MODELS[key].__module__}.{_MODELS[key].__qualname__}); "
                "pick another name or pass register_model(name=...)."
            )
        _MODELS[key] = builder
        return builder

    return decorator(fn) if fn is not None else decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Return the sorted registered names, optionally filtered by a glob ``pattern``.

    Example:
        >>> list_models("lenet*")
        ['lenet5']
    """
    _import_families()
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def is_model(name: str) -> bool:
    """Whether ``name`` is registered."""
    _import_families()
    return name in _MODELS


def create_model(name: str, pretrained: PretrainedSource = None, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with the builder's keyword arguments.

    Args:
        name: A registered name, see :func:`list_models`.
        pretrained: Weights loaded after building: a file path (state_dict,
            ``.safetensors`` or a dlkit/Lightning checkpoint), or
            ``"torchvision:IMAGENET1K_V1"`` for the torchvision-compatible families;
            see :mod:`dlkit.models.pretrained`. Defaults to None (no weights).
        **kwargs: Passed to the builder (``num_classes``, ``in_chans``, ...).

    Raises:
        UnknownModelError: For an unknown name; the message lists close matches.
        ValueError: If ``pretrained`` weights do not match the model (keys listed).

    Example:
        >>> net = create_model("lenet5", num_classes=10, in_chans=1)
        >>> net = create_model("resnet18", num_classes=10, pretrained="torchvision:IMAGENET1K_V1")
    """
    _import_families()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_MODELS))}. "
            "List them with dlkit.list_models()."
        )
    model = _MODELS[name](**kwargs)
    if pretrained:
        load_pretrained(model, pretrained, model_name=name)
    return model


def _import_families() -> None:
    # Importing the package registers every family (each module decorates its builders).
    import dlkit.models  # noqa: F401
