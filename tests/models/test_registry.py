"""The model registry, and the first families (mlp, lenet5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlkit.models import LeNet5, create_model, is_model, list_models, register_model, registry
from dlkit.models.registry import MODEL_KINDS, UnknownModelError, get_model_info


def test_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model
        def lenet5(**kwargs):  # the same name as the real builder
            return nn.Identity()


def test_unknown_name_lists_close_matches_and_how_to_list() -> None:
    with pytest.raises(UnknownModelError, match=r"Unknown model 'lenet'.*Did you mean: lenet5.*list_models"):
        create_model("lenet")
    with pytest.raises(KeyError):  # UnknownModelError is a KeyError, so `except KeyError` works
        create_model("zzz")


def test_list_models_filters_with_a_glob() -> None:
    names = list_models()
    assert names == sorted(names) and {"mlp", "lenet5"} <= set(names)
    assert list_models("lenet*") == ["lenet5"]
    assert is_model("mlp") and not is_model("nope")


@pytest.mark.parametrize(
    ("name", "kwargs", "shape", "params"),
    [
        ("lenet5", {}, (2, 1, 32, 32), 61_706),
        ("lenet5", {"in_chans": 3, "num_classes": 5}, (2, 3, 32, 32), 62_006 - 5 * 84 - 5),
        ("lenet5", {"img_size": 28, "padding": 2}, (2, 1, 28, 28), 61_706),
        ("mlp", {"in_features": 64, "hidden_sizes": (32,)}, (2, 64), 64 * 32 + 32 + 32 * 10 + 10),
        ("mlp", {"img_size": 8, "norm_layer": "batchnorm", "drop_rate": 0.1}, (2, 1, 8, 8), None),
    ],
)
def test_forward_backward_reset(name: str, kwargs: dict, shape: tuple, params: int | None) -> None:
    net = create_model(name, **kwargs)
    x = torch.randn(*shape, requires_grad=True)
    out = net(x)
    assert out.shape == (shape[0], net.num_classes)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and all(p.grad is not None for p in net.parameters())
    if params is not None:
        assert sum(p.numel() for p in net.parameters()) == params
    net.reset_classifier(3)
    assert net(torch.randn(*shape)).shape == (shape[0], 3) and net.num_classes == 3
    assert isinstance(net.get_classifier(), nn.Linear) and net.get_classifier().out_features == 3
    net.reset_classifier(0)
    features = net(torch.randn(*shape))
    assert features.ndim == 2 and isinstance(net.get_classifier(), nn.Identity)
    net.reset_classifier(4)  # a head can come back after being removed
    assert net(torch.randn(*shape)).shape == (shape[0], 4)


def test_lenet_variants_and_init() -> None:
    classic = LeNet5(variant="classic")
    modern = LeNet5(variant="modern")
    assert type(classic.features[1]).__name__ == "Tanh" and isinstance(classic.features[2], nn.AvgPool2d)
    assert type(modern.features[1]).__name__ == "ReLU" and isinstance(modern.features[2], nn.MaxPool2d)
    torch.manual_seed(0)
    xavier = LeNet5(init="xavier_uniform")
    w = xavier.head.fc1.weight
    bound = (6 / (w.shape[0] + w.shape[1])) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert torch.count_nonzero(xavier.head.fc1.bias) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "retro"}, "model.variant must be 'classic' or 'modern'"),
        ({"img_size": 8}, "LeNet5 needs images of at least 32 px.*got img_size=8.*data.resize=32"),
        ({"act_layer": "swishy"}, "swishy"),
    ],
)
def test_lenet_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("lenet5", **kwargs)


def test_kinds_are_recorded_and_checked() -> None:
    assert list_models(kind="vector") == ["mlp"] and list_models(kind="sequence") == ["rnn_classifier"]
    assert {"lenet5", "resnet18", "googlenet"} <= set(list_models(kind="image"))
    assert all(get_model_info(n).kind in MODEL_KINDS for n in list_models())
    assert sorted(n for k in MODEL_KINDS for n in list_models(kind=k)) == list_models()
    with pytest.raises(ValueError, match="kind must be one of"):
        list_models(kind="images")
    with pytest.raises(ValueError, match=r"register_model\(kind=...\) must be one of"):
        register_model(kind="picture")


def test_model_info_keeps_builder_and_weights() -> None:
    info = get_model_info("resnet50")
    assert info.name == "resnet50" and info.builder.__name__ == "resnet50"
    assert info.pretrained.sources() == ["torchvision:IMAGENET1K_V1", "torchvision:IMAGENET1K_V2"]
    assert get_model_info("seresnet50").pretrained is None
    assert "seresnet50" not in list_models(pretrained=True) and "resnet50" in list_models(pretrained=True)
    with pytest.raises(UnknownModelError, match="Did you mean: resnet50"):
        get_model_info("resnet5")


@pytest.mark.parametrize("obj", [registry.list_models, registry.is_model, registry.get_model_info, registry.ModelInfo])
def test_docstring_examples(docstring_examples, obj) -> None:
    docstring_examples(obj)
