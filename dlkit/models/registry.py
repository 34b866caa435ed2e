"""The model registry: every architecture is reachable by name.

Builders are small functions that return an ``nn.Module``; decorating one with
:func:`register_model` makes it reachable through :func:`create_model`, the Hydra
``model/`` configs and ``dlkit-train model=<name>``. The registry keeps, with each
builder, what kind of input the model takes and the pretrained weights its family
declares (:class:`~dlkit.models.pretrained.PretrainedSpec`), as timm's registry keeps
``pretrained_cfg``.

Importing :mod:`dlkit.models` imports every family module, which registers its builders;
Python imports that package before this module, so the registry is complete whenever it
is used.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from dlkit.models.pretrained import (
    PretrainedSource,
    PretrainedSpec,
    load_pretrained,
    pretrained_build_options,
)

__all__ = [
    "MODEL_KINDS",
    "ModelInfo",
    "UnknownModelError",
    "create_model",
    "get_model_info",
    "is_model",
    "list_models",
    "register_model",
]

MODEL_KINDS = ("image", "vector", "sequence", "seq2seq")
"""What a registered model takes and returns: ``"image"`` classifiers of
``(B, C, H, W)``, ``"vector"`` classifiers of ``(B, features)``, ``"sequence"``
classifiers of ``(B, T, features)``, and ``"seq2seq"`` encoder-decoders of token ids."""

_ModelFn = TypeVar("_ModelFn", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model name.

    Attributes:
        name: The registry name.
        builder: The function that builds the model from keyword arguments.
        kind: One of :data:`MODEL_KINDS`.
        pretrained: The family's published weights for this builder, or None.

    Example:
        >>> info = get_model_info("resnet18")
        >>> info.kind, info.pretrained.sources()
        ('image', ['torchvision:IMAGENET1K_V1'])
    """

    name: str
    builder: Callable[..., nn.Module]
    kind: str
    pretrained: PretrainedSpec | None


_MODELS: dict[str, ModelInfo] = {}


class UnknownModelError(KeyError):
    """Raised by :func:`create_model` for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message and show the quotes
        return str(self.args[0])


def register_model(
    fn: _ModelFn | None = None,
    *,
    name: str | None = None,
    kind: str = "image",
    pretrained: PretrainedSpec | None = None,
) -> Any:
    """Register a model builder under its function name (or ``name``).

    Used bare (``@register_model``) or with options (``@register_model(kind=...)``).

    Args:
        fn: The builder; it takes keyword arguments and returns an ``nn.Module``.
        name: The registry name. Defaults to ``fn.__name__``.
        kind: What the model takes, one of :data:`MODEL_KINDS`; the tests run every
            model of a kind through that kind's checks. Defaults to ``"image"``.
        pretrained: The weights published for this builder and where its first
            convolution and classifier are. Defaults to None (no published weights).

    Raises:
        ValueError: If the name is already registered (registries that overwrite
            silently hide bugs where two families claim one name), or for an unknown
            ``kind``.

    Example:
        >>> @register_model(kind="vector")
        ... def tiny_mlp(num_classes: int = 10, **kwargs):
        ...     return MLP(in_features=64, num_classes=num_classes, hidden_sizes=(32,))
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"register_model(kind=...) must be one of {MODEL_KINDS}, got {kind!r}.")

    def decorator(builder: _ModelFn) -> _ModelFn:
        key = name or builder.__name__
        if key in _MODELS:
            other = _MODELS[key].builder
            raise ValueError(
                f"A model named {key!r} is already registered (by "
                f"{other.__module__}.{other.__qualname__}); "
                "pick another name or pass register_model(name=...)."
            )
        _MODELS[key] = ModelInfo(name=key, builder=builder, kind=kind, pretrained=pretrained)
        return builder

    return decorator(fn) if fn is not None else decorator


def list_models(
    pattern: str | None = None, *, kind: str | None = None, pretrained: bool = False
) -> list[str]:
    """Return the sorted registered names, optionally filtered.

    Args:
        pattern: A glob the names must match, e.g. ``"resnet*"``. Defaults to None.
        kind: Only models of this kind (see :data:`MODEL_KINDS`). Defaults to None.
        pretrained: Only models with published weights. Defaults to False.

    Returns:
        The names, sorted.

    Example:
        >>> list_models("lenet*")
        ['lenet5']
        >>> list_models("resnet1*", pretrained=True)
        ['resnet101', 'resnet152', 'resnet18']
    """
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}.")
    return [
        n
        for n, info in sorted(_MODELS.items())
        if (pattern is None or fnmatch.fnmatch(n, pattern))
        and (kind is None or info.kind == kind)
        and (not pretrained or info.pretrained is not None)
    ]


def is_model(name: str) -> bool:
    """Whether ``name`` is registered.

    Example:
        >>> is_model("mlp"), is_model("nope")
        (True, False)
    """
    return name in _MODELS


def get_model_info(name: str) -> ModelInfo:
    """The registry's entry for ``name``: builder, kind and published weights.

    Raises:
        UnknownModelError: For an unknown name; the message lists close matches.

    Example:
        >>> get_model_info("googlenet").pretrained.input_transform
        {'transform_input': True}
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_MODELS))}. "
            "List them with dlkit.list_models()."
        )
    return _MODELS[name]


def create_model(
    name: str, pretrained: PretrainedSource = None, new_head: bool = False, **kwargs: Any
) -> nn.Module:
    """Build the registered model ``name`` with the builder's keyword arguments.

    The model's :class:`~dlkit.models.pretrained.PretrainedSpec`, when it has one, is
    kept on it as ``model.pretrained_spec`` (as timm keeps ``pretrained_cfg``), so a
    later :func:`~dlkit.models.pretrained.load_pretrained` call finds it.

    Args:
        name: A registered name, see :func:`list_models`.
        pretrained: Weights loaded after building: a file path (state_dict,
            ``.safetensors`` or a dlkit/Lightning checkpoint), or a published tag such
            as ``"torchvision:IMAGENET1K_V1"`` (``list_models(pretrained=True)`` lists
            the models that have them); see :mod:`dlkit.models.pretrained`. Defaults to
            None (no weights).
        new_head: With ``pretrained``, the classifier keeps its fresh initialisation
            even when the weights' classifier has its shape: every other layer is the
            pretrained one (transfer to new classes, as many as before). Without
            ``pretrained`` every layer is new anyway. Defaults to False (a classifier
            of another shape is new, one of the same shape is loaded).
        **kwargs: Passed to the builder (``num_classes``, ``in_chans``, ...). A tag's
            input transform (GoogLeNet's ``transform_input``) is set over them.

    Raises:
        UnknownModelError: For an unknown name; the message lists close matches.
        ValueError: If ``pretrained`` weights do not match the model (keys listed).

    Example:
        >>> net = create_model("lenet5", num_classes=10, in_chans=1)
        >>> net = create_model("resnet18", num_classes=10, pretrained="torchvision:IMAGENET1K_V1")
        >>> net = create_model("lenet5", num_classes=5, pretrained="logs/pretrained/lenet5_digits_0to4.ckpt",
        ...                    new_head=True)
    """
    info = get_model_info(name)
    spec = info.pretrained
    if pretrained:
        kwargs = pretrained_build_options(spec, pretrained, kwargs, model_name=name)
    model = info.builder(**kwargs)
    if spec is not None:
        model.pretrained_spec = spec
    if pretrained:
        load_pretrained(model, pretrained, model_name=name, spec=spec, new_head=new_head)
    return model
