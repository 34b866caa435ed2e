"""Direct comparison with torchvision, run wherever torchvision imports.

torchvision does not import beside the CPU torch build dlkit's venv uses, so there
this file is skipped and the committed fixtures (test_cnn_families.py) stand in for it.
In a venv with torchvision, e.g. the one ``scripts/make_torchvision_fixtures.py`` uses::

    PYTHONPATH=. /tmp/tvenv/bin/python -m pytest --noconftest \
        tests/models/test_torchvision_parity.py
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from dlkit.models import create_model, list_models
from dlkit.models.registry import get_model_info

tv_models = pytest.importorskip("torchvision.models")

NAMES = list_models(pretrained=True)  # the models with torchvision's weights


def torchvision_model(name: str, **kwargs) -> torch.nn.Module:
    if name == "googlenet":
        kwargs = {"aux_logits": False, "init_weights": True, **kwargs}
    return getattr(tv_models, name)(weights=None, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_and_parameter_count(name):
    with torch.device("meta"):
        ours, theirs = create_model(name), torchvision_model(name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "alexnet", "vgg11_bn", "googlenet"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_outputs_and_gradients_match(name, training):
    torch.manual_seed(0)
    # Dropout off: the two models would draw different masks.
    drop = {"dropout": 0.0} if name in ("alexnet", "vgg11_bn", "googlenet") else {}
    theirs = torchvision_model(name, **drop).train(training)
    with torch.no_grad():  # non-trivial running statistics
        for key, buf in theirs.named_buffers():
            if key.endswith("running_mean"):
                buf.uniform_(-0.2, 0.2)
            elif key.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    ours = create_model(name, **({"drop_rate": 0.0} if drop else {})).train(training)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    # float64: in float32, rounding differences flip max-pool arg-maxes and get amplified
    # by batch-statistics BatchNorm through 50 layers, which would hide real bugs in noise.
    ours, theirs = ours.double(), theirs.double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    assert_close(ya, yb, atol=1e-9 * yb.abs().max().item(), rtol=1e-7)
    ya.square().sum().backward()
    yb.square().sum().backward()
    assert_close(xa.grad, xb.grad, atol=1e-9 * xb.grad.abs().max().item(), rtol=1e-6)
    grads = {k: p.grad for k, p in theirs.named_parameters()}
    # A conv bias before a batch-statistics BatchNorm has a zero gradient in exact
    # arithmetic, so its tolerance follows the largest gradient anywhere.
    floor = 1e-3 * max(g.abs().max().item() for g in grads.values())
    for key, p in ours.named_parameters():
        atol = 1e-9 * max(grads[key].abs().max().item(), floor)
        assert_close(p.grad, grads[key], atol=atol, rtol=1e-6, msg=key)
    if training:  # running statistics updated the same way
        assert_close(
            dict(ours.named_buffers()), dict(theirs.named_buffers()), atol=1e-10, rtol=1e-8
        )


def test_googlenet_aux_heads_match_in_training():
    torch.manual_seed(0)
    theirs = torchvision_model("googlenet", aux_logits=True, dropout=0.0, dropout_aux=0.0).train()
    ours = create_model("googlenet", aux_logits=True, drop_rate=0.0, aux_drop_rate=0.0).train()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours, theirs = ours.double(), theirs.double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    out, ref = ours(x), theirs(x)
    # torchvision's namedtuple is (logits, aux_logits2, aux_logits1).
    for key, expected in (
        ("logits", ref.logits),
        ("aux1", ref.aux_logits1),
        ("aux2", ref.aux_logits2),
    ):
        assert_close(out[key], expected, atol=1e-12, rtol=1e-7)


def test_googlenet_transform_input_matches():
    torch.manual_seed(0)
    theirs = torchvision_model("googlenet", transform_input=True).eval()
    ours = create_model("googlenet", transform_input=True).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_weight_urls_are_torchvisions(name):
    theirs = {
        w.name: w.url
        for w in tv_models.get_model_weights(name)
        if w.name.startswith("IMAGENET1K_V")
    }
    assert dict(get_model_info(name).pretrained.urls) == theirs
