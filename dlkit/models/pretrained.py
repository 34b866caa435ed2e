"""Pretrained weights: local files or torchvision's ImageNet checkpoints, loaded strictly.

``create_model(name, pretrained=...)`` builds the model, then calls
:func:`load_pretrained`, which accepts

- a local file: a plain state_dict saved with ``torch.save``, a ``.safetensors`` file
  (needs the ``safetensors`` package), or a dlkit/Lightning checkpoint (``.ckpt``) whose
  ``state_dict`` keys are the network's prefixed with ``net.``;
- ``"torchvision:<TAG>"``, e.g. ``"torchvision:IMAGENET1K_V1"``, for the models in
  :data:`TORCHVISION_WEIGHTS`. The file is fetched once into torch.hub's cache
  (``torch.hub.get_dir()/checkpoints/``); offline, put it there by hand or pass its path.

Every key must match, with three announced exceptions:

- the classifier (``fc``, ``classifier.6``, GoogLeNet's auxiliary ``fc2``) when its
  shape differs, e.g. ``num_classes=10`` with ImageNet weights: it keeps its fresh
  initialisation and a ``UserWarning`` lists the skipped keys;
- parts the model was built without (GoogLeNet's auxiliary heads with
  ``aux_logits=False``): their keys are dropped, with a ``UserWarning``;
- BatchNorm's ``num_batches_tracked``, absent from checkpoints saved before PyTorch 0.4
  (torchvision's older files): it is set to 0, as ``torch.nn.BatchNorm2d`` does.

Anything else that is missing, unexpected or of another shape raises a ``ValueError``
that lists the keys. Files are read with ``torch.load(weights_only=True)``, which
refuses to run code hidden in a pickle.

``in_chans`` other than the weights' (3): the first convolution's kernels are
adapted as timm does. For ``in_chans=1`` they are summed over the RGB channels (a grey
image ``g`` then gives what the RGB image ``(g, g, g)`` gave); for other counts the RGB
kernels are repeated cyclically and scaled by ``3 / in_chans``, so the response to a
constant image is unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlparse

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "TORCHVISION_WEIGHTS",
    "PretrainedSource",
    "load_pretrained",
    "load_state_dict_file",
    "load_torchvision_state_dict",
    "load_weights_into",
]

log = logging.getLogger(__name__)

PretrainedSource = Union[str, os.PathLike, Mapping[str, Tensor], bool, None]

_TV = "https://download.pytorch.org/models/"
TORCHVISION_WEIGHTS: dict[str, dict[str, str]] = {
    "alexnet": {"IMAGENET1K_V1": _TV + "alexnet-owt-7be5be79.pth"},
    "vgg11": {"IMAGENET1K_V1": _TV + "vgg11-8a719046.pth"},
    "vgg13": {"IMAGENET1K_V1": _TV + "vgg13-19584684.pth"},
    "vgg16": {"IMAGENET1K_V1": _TV + "vgg16-397923af.pth"},
    "vgg19": {"IMAGENET1K_V1": _TV + "vgg19-dcbb9e9d.pth"},
    "vgg11_bn": {"IMAGENET1K_V1": _TV + "vgg11_bn-6002323d.pth"},
    "vgg13_bn": {"IMAGENET1K_V1": _TV + "vgg13_bn-abd245e5.pth"},
    "vgg16_bn": {"IMAGENET1K_V1": _TV + "vgg16_bn-6c64b313.pth"},
    "vgg19_bn": {"IMAGENET1K_V1": _TV + "vgg19_bn-c79401a0.pth"},
    "googlenet": {"IMAGENET1K_V1": _TV + "googlenet-1378be20.pth"},
    "resnet18": {"IMAGENET1K_V1": _TV + "resnet18-f37072fd.pth"},
    "resnet34": {"IMAGENET1K_V1": _TV + "resnet34-b627a593.pth"},
    "resnet50": {
        "IMAGENET1K_V1": _TV + "resnet50-0676ba61.pth",
        "IMAGENET1K_V2": _TV + "resnet50-11ad3fa6.pth",
    },
    "resnet101": {
        "IMAGENET1K_V1": _TV + "resnet101-63fe2227.pth",
        "IMAGENET1K_V2": _TV + "resnet101-cd907fc2.pth",
    },
    "resnet152": {
        "IMAGENET1K_V1": _TV + "resnet152-394f9c45.pth",
        "IMAGENET1K_V2": _TV + "resnet152-f82ba261.pth",
    },
}
"""torchvision's official ImageNet-1k checkpoints (as listed by torchvision 0.29),
by dlkit model name and torchvision weights tag. All expect 224 px RGB input normalised
with ImageNet's mean and std."""

_TORCHVISION_PREFIX = "torchvision:"
_LIST_LIMIT = 10


def load_pretrained(
    model: nn.Module, pretrained: PretrainedSource, model_name: str | None = None
) -> nn.Module:
    """Load weights into ``model`` from a file, a state_dict or a torchvision tag.

    Args:
        model: The freshly built network.
        pretrained: A path (``.pt``/``.pth``/``.ckpt``/``.safetensors``), a state_dict
            mapping, ``"torchvision:<TAG>"`` (see :data:`TORCHVISION_WEIGHTS`), or
            None/False/``""`` for nothing.
        model_name: The registry name; needed for ``"torchvision:"`` sources.
            Defaults to None.

    Returns:
        ``model``, with the weights loaded in place.

    Raises:
        ValueError: Keys or shapes that do not match (listed), an unknown torchvision
            tag or model, or ``pretrained=True`` (ambiguous).
        FileNotFoundError: A path that does not exist.
        RuntimeError: A torchvision download that failed (the message says where to
            put the file by hand).

    Example:
        >>> net = create_model("resnet18", num_classes=10)
        >>> torch.save(other.state_dict(), "weights.pt")
        >>> load_pretrained(net, "weights.pt")
    """
    if pretrained is None or pretrained is False or pretrained == "":
        return model
    if pretrained is True:
        raise ValueError(
            "pretrained=True is ambiguous in dlkit; pass a file path or a torchvision tag such as "
            "pretrained='torchvision:IMAGENET1K_V1'."
        )
    if isinstance(pretrained, Mapping):
        return load_weights_into(model, pretrained, source="the given state_dict")
    text = os.fspath(pretrained)
    if isinstance(text, str) and text.startswith(_TORCHVISION_PREFIX):
        tag = text[len(_TORCHVISION_PREFIX) :]
        state_dict = load_torchvision_state_dict(model_name, tag)
        if getattr(model, "transform_input", None) is False and model.in_chans == 3:
            # torchvision's GoogLeNet weights expect its RGB re-scaling (and turn it on).
            model.transform_input = True
            if hasattr(model, "cfg"):
                model.cfg.transform_input = True
            log.info("GoogLeNet: transform_input turned on for torchvision's weights.")
        return load_weights_into(model, state_dict, source=text)
    return load_weights_into(model, load_state_dict_file(text), source=text)


def load_torchvision_state_dict(
    model_name: str | None, tag: str = "IMAGENET1K_V1"
) -> dict[str, Tensor]:
    """Fetch (or read from torch.hub's cache) torchvision's weights ``tag`` for ``model_name``.

    Args:
        model_name: A key of :data:`TORCHVISION_WEIGHTS`, e.g. ``"resnet50"``.
        tag: torchvision's weights name. Defaults to ``"IMAGENET1K_V1"``.

    Returns:
        The state_dict, on the CPU.

    Raises:
        ValueError: For a model or tag without torchvision weights.
        RuntimeError: When the file is not cached and cannot be downloaded; the
            message gives the URL and the cache path to put the file at.

    Example:
        >>> sd = load_torchvision_state_dict("resnet18", "IMAGENET1K_V1")
    """
    if model_name not in TORCHVISION_WEIGHTS:
        raise ValueError(
            f"No torchvision weights for model {model_name!r}; they exist for "
            f"{', '.join(TORCHVISION_WEIGHTS)}. Pass a local file as pretrained=<path> instead."
        )
    tags = TORCHVISION_WEIGHTS[model_name]
    if tag not in tags:
        raise ValueError(
            f"Unknown torchvision weights {tag!r} for {model_name}; available: "
            f"{', '.join(_TORCHVISION_PREFIX + t for t in tags)}."
        )
    url = tags[tag]
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        state_dict = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        raise RuntimeError(
            f"Could not download torchvision's {tag} weights for {model_name} from {url} ({err}). "
            f"Without a network, fetch that file elsewhere and put it at {cached} "
            "(torch.hub.get_dir()/checkpoints/<filename>; set TORCH_HOME to move the cache), "
            "or pass its local path as pretrained=<path>."
        ) from err
    return dict(state_dict)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a network's state_dict from a weights file or a training checkpoint.

    Args:
        path: A ``torch.save``-d state_dict, a ``.safetensors`` file, or a checkpoint
            dict whose ``"state_dict"`` (Lightning) or ``"model"`` entry holds the
            weights. Lightning keys prefixed ``net.`` (dlkit's tasks) are reduced to
            the network's own keys; other entries of the task (e.g. loss buffers) are
            left out.

    Returns:
        The state_dict, on the CPU.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ImportError: For ``.safetensors`` without the ``safetensors`` package.
        ValueError: If the file holds Python objects ``weights_only`` refuses, or no
            tensors.

    Example:
        >>> sd = load_state_dict_file("logs/train/runs/.../checkpoints/best.ckpt")
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained={str(path)!r} is neither an existing file nor a torchvision tag like "
            f"'torchvision:IMAGENET1K_V1'."
        )
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(
                f"Reading {path.name} needs the safetensors package: pip install safetensors"
            ) from err
        return dict(load_file(str(path), device="cpu"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds Python objects besides tensors, which torch.load(weights_only=True) "
            f"refuses ({err}). If you trust the file, re-save just the weights: "
            "torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pt')."
        ) from err
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for entry in ("state_dict", "model"):
            if isinstance(obj.get(entry), Mapping):
                obj = obj[entry]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(v, Tensor) for v in obj.values())
    ):
        raise ValueError(
            f"{path} does not hold a state_dict (a mapping of names to tensors), nor a checkpoint "
            f"with one under 'state_dict' or 'model'; got {type(obj).__name__}."
        )
    state_dict = dict(obj)
    for prefix in ("net.", "module."):
        if any(k.startswith(prefix) for k in state_dict):
            others = [k for k in state_dict if not k.startswith(prefix)]
            if others:
                log.info(
                    "%s: left out %d keys outside %r (e.g. %s)",
                    path,
                    len(others),
                    prefix,
                    others[:3],
                )
            state_dict = {
                k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)
            }
    return state_dict


def load_weights_into(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "weights"
) -> nn.Module:
    """Copy ``state_dict`` into ``model``: strict, except the announced head/stem cases.

    See the module docstring for the rules (new classifier, optional parts,
    ``num_batches_tracked``, ``in_chans`` adaptation).

    Args:
        model: The network.
        state_dict: The weights.
        source: How to name the weights in messages. Defaults to ``"weights"``.

    Returns:
        ``model``.

    Raises:
        ValueError: Missing, unexpected or mis-shaped keys, listed (first 10 of each
            kind, with counts).

    Example:
        >>> load_weights_into(create_model("resnet18", num_classes=10), torch.load("r18.pt"))
    """
    own = model.state_dict()
    weights = dict(state_dict)
    _fill_num_batches_tracked(own, weights)
    notes = [_drop_optional_parts(model, own, weights, source)]
    _adapt_stem(model, own, weights)
    notes.append(_skip_new_heads(model, own, weights, source))
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mis_shaped = [
        f"{k}: weights {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in weights and weights[k].shape != own[k].shape
    ]
    if missing or unexpected or mis_shaped:
        problems = [
            _listing(missing, "missing key", "in the model, not in the weights"),
            _listing(unexpected, "unexpected key", "in the weights, not in the model"),
        ]
        if mis_shaped:
            problems.append(_listing(mis_shaped, "shape mismatch", "weights vs model"))
        raise ValueError(
            f"The weights from {source} do not match {type(model).__name__}: "
            f"{'; '.join(problems)}. Check that the model name and options (depth, small_input, "
            "norm_layer, aux_logits, in_chans) are the ones the weights were trained with."
        )
    model.load_state_dict(weights, strict=True)
    # Announced only once the rest has loaded, so they never precede an error.
    for note in filter(None, notes):
        warnings.warn(note, stacklevel=3)
    return model


def _listing(items: list[str], what: str, meaning: str) -> str:
    shown = items[:_LIST_LIMIT]
    more = f" and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    plural = "es" if what.endswith("ch") else "s"
    return f"{len(items)} {what}{plural if len(items) != 1 else ''} ({meaning}) {shown}{more}"


def _fill_num_batches_tracked(own: Mapping[str, Tensor], weights: dict[str, Tensor]) -> None:
    # Checkpoints from before PyTorch 0.4 have no num_batches_tracked; torch.nn's
    # BatchNorm fills it with 0 on load, and so do we (only where the norm's stats exist).
    for key, value in own.items():
        if key.endswith(".num_batches_tracked") and key not in weights:
            if key[: -len("num_batches_tracked")] + "running_mean" in weights:
                weights[key] = torch.zeros_like(value)


def _drop_optional_parts(
    model: nn.Module, own: Mapping[str, Tensor], weights: dict[str, Tensor], source: str
) -> str | None:
    prefixes = tuple(getattr(model, "pretrained_optional_prefixes", ()))
    dropped = [k for k in weights if k.startswith(prefixes) and k not in own] if prefixes else []
    for k in dropped:
        del weights[k]
    if not dropped:
        return None
    return (
        f"{type(model).__name__} was built without {', '.join(p.rstrip('.') for p in prefixes)}; "
        f"left out their {len(dropped)} keys from {source}."
    )


def _adapt_stem(model: nn.Module, own: Mapping[str, Tensor], weights: dict[str, Tensor]) -> None:
    stem = next((k for k, v in own.items() if v.ndim == 4), None)
    if stem is None or stem not in weights:
        return
    w, target = weights[stem], own[stem]
    if w.ndim != 4 or w.shape[1] == target.shape[1] or w.shape[0] != target.shape[0]:
        return
    src, dst = w.shape[1], target.shape[1]
    if dst == 1:
        adapted = w.sum(dim=1, keepdim=True)
    else:
        # (O, src, k, k) -> (O, dst, k, k): channels repeated cyclically, rescaled so a
        # constant image gives the same response.
        adapted = w.repeat(1, math.ceil(dst / src), 1, 1)[:, :dst] * (src / dst)
    weights[stem] = adapted
    log.info("%s: adapted %s from %d to %d input channels.", type(model).__name__, stem, src, dst)


def _skip_new_heads(
    model: nn.Module, own: Mapping[str, Tensor], weights: dict[str, Tensor], source: str
) -> str | None:
    head_paths = [getattr(model, "head_path", None), *getattr(model, "aux_head_paths", ())]
    skipped: list[str] = []
    for path in filter(None, head_paths):
        for leaf in ("weight", "bias"):
            key = f"{path}.{leaf}"
            if key in weights and (key not in own or own[key].shape != weights[key].shape):
                skipped.append(f"{key} {tuple(weights.pop(key).shape)}")
                if key in own:
                    weights[key] = own[key]  # keep the fresh initialisation
    if not skipped:
        return None
    return (
        f"{type(model).__name__} has num_classes={getattr(model, 'num_classes', '?')}, "
        f"unlike the weights from {source}: the classifier keeps its new initialisation; "
        f"skipped {skipped}."
    )
