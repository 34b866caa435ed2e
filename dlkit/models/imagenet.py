"""ImageNet-1k for pretrained classifiers: the 1,000 class names and the input transform.

The class names ship with dlkit (``imagenet_classes.txt``, one per line in class-index
order: the first WordNet lemma of each ILSVRC-2012 synset, the names torchvision
shows, so ``"crane"`` (the bird, 134; the machine, 517) and ``"maillot"`` (638, 639)
appear twice). :class:`ImageTransform` is the evaluation-time preprocessing a family
declares with its weights (``PretrainedSpec(preprocess=...)``): resize the shorter
side, centre-crop, normalise.

Example:
    >>> from sklearn.datasets import load_sample_image
    >>> net = create_model("efficientnet_lite0", pretrained=True).eval()
    >>> x = net.pretrained_spec.preprocess(load_sample_image("china.jpg"))  # (1, 3, 224, 224)
    >>> decode_predictions(net(x), top=1)  # doctest: +ELLIPSIS
    [[('palace', 0.38...)]]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageInput",
    "ImageTransform",
    "decode_predictions",
    "imagenet_class_names",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet's per-channel mean of images scaled to [0, 1] (torchvision's weights)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet's per-channel standard deviation of images scaled to [0, 1]."""

ImageInput = Union[Image.Image, np.ndarray, Tensor]


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text("utf-8")
    return tuple(text.splitlines())


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names, indexed like the classifiers' outputs.

    Returns:
        A new list of 1,000 names (``[0]`` is ``"tench"``, ``[698]`` is ``"palace"``).

    Example:
        >>> names = imagenet_class_names()
        >>> len(names), names[0], names[985]
        (1000, 'tench', 'daisy')
    """
    return list(_class_names())


def decode_predictions(logits: Tensor, top: int = 5) -> list[list[tuple[str, float]]]:
    """The ``top`` ImageNet classes of each sample with their probabilities (Keras' helper).

    Args:
        logits: ``(B, 1000)`` outputs of an ImageNet classifier.
        top: How many classes per sample. Defaults to 5.

    Returns:
        For each sample, ``top`` pairs ``(class name, softmax probability)``, most
        probable first.

    Raises:
        ValueError: If ``logits`` is not ``(B, 1000)``.

    Example:
        >>> logits = torch.zeros(2, 1000)
        >>> logits[0, 985] = logits[1, 698] = 10.0
        >>> [name for ((name, prob),) in decode_predictions(logits, top=1)]
        ['daisy', 'palace']
    """
    names = _class_names()
    if logits.ndim != 2 or logits.shape[1] != len(names):
        raise ValueError(
            f"decode_predictions expected ImageNet logits of shape (B, {len(names)}), "
            f"got {tuple(logits.shape)}."
        )
    probs, indices = logits.detach().float().softmax(dim=1).topk(top, dim=1)  # (B, top)
    return [
        [(names[i], p) for i, p in zip(row_i.tolist(), row_p.tolist())]
        for row_i, row_p in zip(indices, probs)
    ]


@dataclass(frozen=True)
class ImageTransform:
    """Evaluation preprocessing of pretrained weights: shorter side, centre crop, normalisation.

    torchvision's ``ImageClassification`` preset, in dlkit's tensors: the image is
    scaled to [0, 1], its shorter side resized to ``resize_size`` (bilinear with
    antialiasing, aspect kept), its centre ``crop_size`` square cut out, and each
    channel normalised as ``(x - mean) / std``.

    Attributes:
        resize_size: Length the shorter side is resized to. Defaults to 256.
        crop_size: Side of the centre square the model sees. Defaults to 224.
        mean: Per-channel mean subtracted from [0, 1] pixels. Defaults to
            :data:`IMAGENET_MEAN`.
        std: Per-channel divisor after the mean. Defaults to :data:`IMAGENET_STD`.

    Call arguments:
        image: A PIL image, a ``(H, W, 3)`` / ``(H, W)`` array (uint8 in [0, 255] or
            float in [0, 1]; scikit-learn's and matplotlib's layout), or a
            ``(3, H, W)`` / ``(B, 3, H, W)`` tensor (torchvision's layout; uint8 or
            float in [0, 1]). Grey images are repeated to 3 channels.

    Returns:
        ``(B, 3, crop_size, crop_size)`` float32, ``B = 1`` for a single image.

    Example:
        >>> lite = ImageTransform(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
        >>> x = lite(torch.full((3, 300, 400), 255, dtype=torch.uint8))  # (x * 255 - 127) / 128
        >>> x.shape, round(x.max().item(), 4)
        (torch.Size([1, 3, 224, 224]), 1.0)
    """

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.crop_size > self.resize_size:
            raise ValueError(
                f"ImageTransform: crop_size {self.crop_size} exceeds resize_size "
                f"{self.resize_size}; the crop must fit in the resized image."
            )
        if len(self.mean) != len(self.std):
            raise ValueError("ImageTransform: mean and std need one value per channel.")

    def __call__(self, image: ImageInput) -> Tensor:
        x = _as_batch(image, channels=len(self.mean))  # (B, C, H, W) in [0, 1]
        C, H, W = x.shape[1:]
        if min(H, W) != self.resize_size:
            # torchvision's rule: the shorter side becomes resize_size, the other is truncated.
            size = (
                (self.resize_size, int(self.resize_size * W / H))
                if H <= W
                else (int(self.resize_size * H / W), self.resize_size)
            )
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        H, W = x.shape[-2:]
        top = round((H - self.crop_size) / 2.0)
        left = round((W - self.crop_size) / 2.0)
        x = x[..., top : top + self.crop_size, left : left + self.crop_size]
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, C, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, C, 1, 1)
        return (x - mean) / std


def _as_batch(image: ImageInput, channels: int) -> Tensor:
    """Any supported image as ``(B, channels, H, W)`` float32 in [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"Expected an (H, W, C) or (H, W) array, got shape {image.shape}.")
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (H, W, C) -> (C, H, W), a copy
    elif isinstance(image, Tensor):
        x = image.detach().cpu()
    else:
        raise TypeError(
            f"Expected a PIL image, a numpy array or a tensor, got {type(image).__name__}."
        )
    if x.ndim == 3:
        x = x.unsqueeze(0)  # (C, H, W) -> (1, C, H, W)
    if x.ndim != 4:
        raise ValueError(f"Expected a (C, H, W) or (B, C, H, W) tensor, got {tuple(x.shape)}.")
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    if x.shape[1] == 1 and channels != 1:
        x = x.expand(-1, channels, -1, -1)  # grey -> RGB, as PIL's convert("RGB")
    if x.shape[1] != channels:
        raise ValueError(
            f"Expected images with {channels} channels (or 1, grey), got {tuple(x.shape)}; "
            "tensors are (C, H, W) or (B, C, H, W), arrays (H, W, C)."
        )
    return x
