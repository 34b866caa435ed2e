"""create_model(pretrained=...): files, checkpoints, new heads, bad keys, torchvision offline."""

from __future__ import annotations

import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from dlkit.models import create_model, list_models
from dlkit.models import pretrained as pretrained_module
from dlkit.models.pretrained import PretrainedSpec, load_pretrained
from dlkit.models.registry import get_model_info

# A narrow ResNet-18: the same keys as resnet18, a few hundred kB of weights.
SMALL = {"stem_width": 8, "small_input": True}


def small_resnet(**kwargs) -> nn.Module:
    return create_model("resnet18", **{**SMALL, **kwargs})


@pytest.fixture
def source(tmp_path: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    net = small_resnet(num_classes=10).eval()
    with torch.no_grad():  # non-default running stats, so they are seen to load too
        for m in net.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """torch.hub's cache in tmp_path; any download raises URLError (no network is tried)."""

    def no_network(url: str, *args, **kwargs) -> None:
        raise urllib.error.URLError("network disabled in tests")

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return hub


def assert_same_outputs(a: nn.Module, b: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(a.eval()(x), b.eval()(x))


def test_plain_state_dict_file(source):
    net, path = source
    loaded = create_model("resnet18", num_classes=10, pretrained=str(path), **SMALL)
    assert_same_outputs(loaded, net)
    assert create_model("resnet18", num_classes=10, pretrained=path, **SMALL) is not None  # a Path


def test_lightning_checkpoint_with_net_prefix(source, tmp_path):
    net, _ = source
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "state_dict": {
            **{f"net.{k}": v for k, v in net.state_dict().items()},
            "loss_fns.main.weight": torch.ones(10),  # task-level entries are left out
        },
        "hyper_parameters": {"lr": 1e-3, "monitor": "val/acc"},
    }
    path = tmp_path / "best.ckpt"
    torch.save(ckpt, path)
    loaded = create_model("resnet18", num_classes=10, pretrained=str(path), **SMALL)
    assert_same_outputs(loaded, net)


def test_changed_num_classes_reinitialises_the_head_and_says_so(source):
    net, path = source
    with pytest.warns(
        UserWarning, match=r"num_classes=3.*skipped.*fc\.weight \(10, 64\).*fc\.bias"
    ):
        loaded = small_resnet(num_classes=3, pretrained=str(path))
    assert loaded.fc.weight.shape == (3, 64)
    # Everything but the head came from the file.
    theirs = net.state_dict()
    for key, value in loaded.state_dict().items():
        if not key.startswith("fc."):
            assert_close(value, theirs[key], msg=key)
    with pytest.warns(UserWarning, match="num_classes=0"):
        features = small_resnet(num_classes=0, pretrained=str(path))
    assert isinstance(features.fc, nn.Identity)


def test_mismatched_keys_are_listed(source, tmp_path):
    net, _ = source
    weights = net.state_dict()
    weights["extra.weight"] = torch.zeros(1)
    del weights["layer4.1.conv2.weight"]
    path = tmp_path / "bad.pt"
    torch.save(weights, path)
    with pytest.raises(ValueError) as info:
        small_resnet(num_classes=10, pretrained=str(path))
    message = str(info.value)
    assert "1 missing key " in message and "layer4.1.conv2.weight" in message
    assert "1 unexpected key " in message and "extra.weight" in message


def test_wrong_architecture_lists_counts_and_first_keys(source):
    _, path = source
    with pytest.raises(
        ValueError, match=r"96 missing keys .*'layer1\.2\.conv1\.weight'.* and 86 more"
    ):
        create_model("resnet34", num_classes=10, pretrained=str(path), **SMALL)
    with pytest.raises(
        ValueError,
        match=r"shape mismatch.*conv1\.weight: weights \(8, 3, 3, 3\) vs model \(16, 3, 3, 3\)",
    ):
        create_model(
            "resnet18", num_classes=10, pretrained=str(path), small_input=True, stem_width=16
        )


def test_in_chans_adapts_the_stem(source):
    net, path = source
    rgb = net.state_dict()["conv1.weight"]
    grey = small_resnet(num_classes=10, in_chans=1, pretrained=str(path))
    assert_close(grey.conv1.weight, rgb.sum(dim=1, keepdim=True))
    # A grey image g gives what the RGB image (g, g, g) gave.
    g = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert_close(grey.eval()(g), net.eval()(g.expand(1, 3, 32, 32)), atol=1e-4, rtol=1e-4)
    five = small_resnet(num_classes=10, in_chans=5, pretrained=str(path))
    assert_close(five.conv1.weight[:, 3:5], rgb[:, 0:2] * 3 / 5)


def test_torchvision_offline_error_names_url_and_cache_path(offline):
    with pytest.raises(RuntimeError) as info:
        create_model("resnet18", pretrained="torchvision:IMAGENET1K_V1")
    message = str(info.value)
    assert get_model_info("resnet18").pretrained.urls["IMAGENET1K_V1"] in message
    assert str(offline / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "pretrained=<path>" in message


def test_torchvision_weights_are_read_from_the_hub_cache(offline):
    """A file placed by hand in torch.hub's cache loads without any download."""
    torch.manual_seed(0)
    reference = create_model("resnet18")
    # torchvision's older files predate BatchNorm's num_batches_tracked.
    weights = {k: v for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
    (offline / "checkpoints").mkdir(parents=True)
    torch.save(weights, offline / "checkpoints" / "resnet18-f37072fd.pth")
    loaded = create_model("resnet18", pretrained="torchvision:IMAGENET1K_V1")
    assert_close(loaded.layer3[1].bn2.running_var, reference.layer3[1].bn2.running_var)
    assert int(loaded.bn1.num_batches_tracked) == 0


def test_torchvision_googlenet_drops_aux_heads_and_turns_on_transform_input(offline):
    torch.manual_seed(0)
    with_aux = create_model("googlenet", aux_logits=True)
    (offline / "checkpoints").mkdir(parents=True)
    torch.save(with_aux.state_dict(), offline / "checkpoints" / "googlenet-1378be20.pth")
    with pytest.warns(UserWarning, match=r"built without aux1, aux2; left out their 20 keys"):
        net = create_model("googlenet", pretrained="torchvision:IMAGENET1K_V1")
    assert net.transform_input and net.aux1 is None
    assert_close(net.fc.weight, with_aux.fc.weight)
    with pytest.warns(UserWarning, match="aux1"):  # grey input: no RGB re-scaling
        grey = create_model("googlenet", in_chans=1, pretrained="torchvision:IMAGENET1K_V1")
    assert not grey.transform_input and grey.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 1000)


def test_unknown_torchvision_names_and_tags():
    with pytest.raises(ValueError, match="No torchvision weights for model 'seresnet18'"):
        create_model("seresnet18", **SMALL, pretrained="torchvision:IMAGENET1K_V1")
    with pytest.raises(ValueError, match="available: torchvision:IMAGENET1K_V1"):
        small_resnet(pretrained="torchvision:IMAGENET1K_V9")


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        small_resnet(pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="none ship for resnet18.*torchvision:IMAGENET1K_V1"):
        small_resnet(pretrained=True)
    assert small_resnet(pretrained=None) is not None and small_resnet(pretrained="") is not None
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        small_resnet(pretrained=str(not_weights))


class _Opaque:  # a pickled object weights_only=True must refuse
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "opaque.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Opaque()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        small_resnet(pretrained=str(path))


def test_state_dict_mapping_is_accepted(source):
    net, _ = source
    loaded = load_pretrained(small_resnet(num_classes=10), net.state_dict())
    assert_same_outputs(loaded, net)


def test_safetensors_without_the_package_says_how_to_install(source, tmp_path, monkeypatch):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors -> ImportError
    with pytest.raises(ImportError, match="pip install safetensors"):
        small_resnet(pretrained=str(path))


def test_safetensors_file(source, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    net, _ = source
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    assert_same_outputs(small_resnet(num_classes=10, pretrained=str(path)), net)


# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize("name", list_models(pretrained=True))
def test_every_spec_names_the_models_own_modules(name):
    """First conv, classifiers, optional parts and input transform fit the model they describe."""
    spec = get_model_info(name).pretrained
    assert spec.urls or spec.package_file  # published, or shipped in a package
    assert all(url.startswith("https://") for url in spec.urls.values())
    with torch.device("meta"):
        net = create_model(name, **spec.input_transform)
    modules = dict(net.named_modules())
    assert isinstance(modules[spec.first_conv], nn.Conv2d)
    assert modules[spec.first_conv].in_channels == spec.in_chans
    for path in spec.classifier:
        optional = any(path.startswith(f"{part}.") for part in spec.optional)
        assert isinstance(modules.get(path), nn.Linear) or (optional and path not in modules), path
    assert spec.classifier[0] == net.head_path
    assert net.pretrained_spec is spec
    for key, value in spec.input_transform.items():
        assert getattr(net.cfg, key) == value


def test_input_transform_applies_to_the_tagged_weights_only(tmp_path):
    spec = get_model_info("googlenet").pretrained
    build = pretrained_module.pretrained_build_options
    assert build(spec, "torchvision:IMAGENET1K_V1", {"transform_input": False}) == {
        "transform_input": True
    }
    assert build(spec, "torchvision:IMAGENET1K_V1", {"in_chans": 1}) == {"in_chans": 1}
    assert build(spec, str(tmp_path / "weights.pt"), {}) == {}
    assert build(None, "torchvision:IMAGENET1K_V1", {"x": 1}) == {"x": 1}


def test_a_file_named_like_a_tag_is_a_file(source, tmp_path, monkeypatch):
    net, path = source
    monkeypatch.chdir(tmp_path)
    (tmp_path / "torchvision:IMAGENET1K_V1").write_bytes(path.read_bytes())
    loaded = small_resnet(num_classes=10, pretrained="torchvision:IMAGENET1K_V1")
    assert_same_outputs(loaded, net)


def test_load_pretrained_finds_the_spec_on_the_model(offline):
    torch.manual_seed(0)
    with_aux = create_model("googlenet", aux_logits=True)
    net = create_model("googlenet")
    with pytest.warns(UserWarning, match="built without aux1, aux2"):
        load_pretrained(net, with_aux.state_dict())
    assert_close(net.fc.weight, with_aux.fc.weight)


def test_spec_describes_its_sources():
    spec = PretrainedSpec(urls={"A": "https://x/a.pth", "B": "https://x/b.pth"}, first_conv="c")
    assert spec.sources() == ["torchvision:A", "torchvision:B"]
    assert spec.classifier == ("fc",) and spec.optional == () and spec.in_chans == 3


def test_docstring_examples(docstring_examples):
    docstring_examples(PretrainedSpec)
    docstring_examples(pretrained_module.pretrained_build_options)
