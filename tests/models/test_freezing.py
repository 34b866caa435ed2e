"""Layer groups and freezing on every registered model (dlkit.models.freezing).

Structure checks build the models on the meta device; training checks run a few plain
SGD steps on small instances and compare parameters and BatchNorm buffers bit for bit.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn as nn

from dlkit.models import EncoderDecoder, create_model, list_models
from dlkit.models.base import ClassifierNet
from dlkit.models.freezing import BATCH_NORMS, BN_MODES, Freezable

SRC_V, TGT_V = 17, 11
VOCAB = {"src_vocab_size": SRC_V, "tgt_vocab_size": TGT_V}
STATS = ("running_mean", "running_var", "num_batches_tracked")


def default_options(name: str) -> dict:
    """What a model needs besides its defaults to be built at all."""
    kind = {n: k for k in ("seq2seq", "sequence") for n in list_models(kind=k)}.get(name)
    if kind == "seq2seq":
        return dict(VOCAB)
    if kind == "sequence":
        return {"input_size": 8}
    return {}


def check_groups(net: Freezable) -> None:
    """Every parameter in exactly one group, counted from the groups' modules themselves."""
    groups = net.layer_groups()
    names = [n for n, _ in groups]
    assert names and len(set(names)) == len(names), names
    owner: dict[int, str] = {}
    for name, modules in groups:
        assert modules and all(isinstance(m, nn.Module) for m in modules)
        ids = {id(p) for m in modules for p in m.parameters()}
        for i in ids:
            assert i not in owner, f"a parameter is in groups {owner[i]!r} and {name!r}"
            owner[i] = name
    assert set(owner) == {id(p) for p in net.parameters()}
    flat = [p for _, ps in net.group_parameters() for p in ps]
    assert len(flat) == len({id(p) for p in flat}) == len(list(net.parameters()))
    assert [n for n, _ in net.group_parameters()] == names == net.group_names()
    status = net.group_status()
    assert sum(s.params for s in status) == sum(p.numel() for p in net.parameters())
    # The last group is the output layer.
    last = groups[-1][1]
    if isinstance(net, ClassifierNet):
        assert net.get_classifier() in last
    elif isinstance(net, EncoderDecoder):
        assert net.decoder.fc in last


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_groups_each_parameter_once(name: str) -> None:
    with torch.device("meta"):  # structure only
        net = create_model(name, **default_options(name))
    assert isinstance(net, Freezable)
    check_groups(net)


@pytest.mark.parametrize(
    ("name", "options", "groups"),
    [
        ("lenet5", {}, ["conv1", "conv2", "fc1", "fc2", "head"]),
        ("resnet18", {}, ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
        ("vgg11_bn", {"small_input": True}, [f"block{i}" for i in range(1, 6)] + ["fc6", "fc7", "head"]),
        ("alexnet", {}, [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "head"]),
        ("googlenet", {"aux_logits": True},
         ["stem", "inception3", "inception4", "inception5", "aux", "head"]),
        ("googlenet", {}, ["stem", "inception3", "inception4", "inception5", "head"]),
        ("mlp", {"hidden_sizes": (16, 8, 4), "norm_layer": "batchnorm", "drop_rate": 0.1},
         ["hidden1", "hidden2", "hidden3", "head"]),
        ("mlp", {"hidden_sizes": ()}, ["head"]),
        ("rnn_classifier", {"input_size": 8, "num_layers": 2}, ["rnn", "head"]),
        ("seq2seq_rnn", VOCAB, ["embeddings", "encoder", "decoder", "output"]),
        ("seq2seq_luong", {**VOCAB, "score": "concat"},
         ["embeddings", "encoder", "decoder", "attention", "output"]),
        ("transformer_seq2seq", {"src_vocab_size": SRC_V, "tgt_vocab_size": SRC_V, "share_embeddings": True},
         ["embeddings", "encoder", "decoder", "output"]),
    ],
)  # fmt: skip
def test_groups_per_family(name: str, options: dict, groups: list[str]) -> None:
    with torch.device("meta"):
        net = create_model(name, **options)
    assert net.group_names() == groups
    if options.get("share_embeddings"):
        # The tied output weight stays in "embeddings"; "output" keeps only the bias.
        named = dict(net.named_group_parameters())
        assert [n for n, _ in named["output"]] == ["decoder.fc.bias"]
        assert net.decoder.fc.weight in [p for _, p in named["embeddings"]]
        flat = [p for _, ps in net.group_parameters() for p in ps]
        assert len(flat) == len({id(p) for p in flat}) == len(list(net.parameters()))
    else:
        check_groups(net)


def test_headless_model_has_no_head_group() -> None:
    net = create_model("resnet18", num_classes=0, small_input=True, stem_width=8)
    assert net.group_names()[-1] == "layer4"
    net.reset_classifier(3)
    assert net.group_names()[-1] == "head"


def test_default_layout_is_one_group_per_child() -> None:
    class Custom(Freezable):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
            self.act = nn.ReLU()
            self.out = nn.Linear(4, 2)

    net = Custom()
    assert net.group_names() == ["body", "out"]
    net.freeze("body")
    net.train()
    assert net.frozen_groups() == ["body"] and not net.body[1].training  # torch's BatchNorm1d


def test_layout_that_misses_parameters_is_an_error() -> None:
    class Broken(Freezable):
        group_layout = {"a": ("a",)}

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    with pytest.raises(ValueError, match=r"leaves 2 parameters in no layer group \(e.g. b.weight, b.bias\)"):
        Broken().layer_groups()


# ----------------------------------------------------------------------------- training


def small_net(name: str, **options) -> tuple[nn.Module, torch.Tensor, int]:
    """A small instance, an input batch and the number of classes."""
    torch.manual_seed(0)
    cases = {
        "resnet18": ({"small_input": True, "stem_width": 8}, (4, 3, 16, 16)),
        "resnet18_torch_bn": ({"small_input": True, "stem_width": 8, "norm_layer": nn.BatchNorm2d}, (4, 3, 16, 16)),
        "vgg11_bn": ({"small_input": True, "hidden_size": 16}, (4, 3, 16, 16)),
        "googlenet": ({}, (2, 3, 32, 32)),
        "mlp": ({"in_features": 12, "hidden_sizes": (16, 8), "norm_layer": "batchnorm"}, (8, 12)),
        "lenet5": ({}, (4, 1, 32, 32)),
    }
    opts, shape = cases[name]
    model = "resnet18" if name == "resnet18_torch_bn" else name
    net = create_model(model, num_classes=5, **{**opts, **options})
    return net, torch.randn(shape), 5


def train_steps(net: nn.Module, x: torch.Tensor, classes: int, steps: int = 3) -> None:
    """A plain loop: SGD over the trainable parameters, ``model.train()`` before every step."""
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    y = torch.arange(x.shape[0]) % classes
    for _ in range(steps):
        net.train()  # as Lightning does at every epoch start: must not revive frozen BN
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def batch_norms(net: nn.Module, groups: list[str]) -> list[tuple[str, nn.Module]]:
    members = {id(m) for g, ms in net.layer_groups() if g in groups for top in ms for m in top.modules()}
    return [(n, m) for n, m in net.named_modules() if isinstance(m, BATCH_NORMS) and id(m) in members]


def group_param_names(net: Freezable, groups: list[str]) -> list[str]:
    return [n for g, ps in net.named_group_parameters() if g in groups for n, _ in ps]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("name", ["resnet18", "resnet18_torch_bn", "vgg11_bn", "googlenet", "mlp"])
def test_inference_bn_keeps_frozen_weights_and_statistics_bit_for_bit(name: str) -> None:
    net, x, classes = small_net(name)
    names = net.group_names()
    frozen, trainable = names[:-2], names[-2:]
    net.freeze_to(-2)  # bn="inference"
    assert net.frozen_groups() == frozen and net.trainable_groups() == trainable
    frozen_bn = batch_norms(net, frozen)
    live_bn = batch_norms(net, trainable)
    assert frozen_bn, f"{name} has no BatchNorm in its frozen groups"
    before = snapshot(net)
    train_steps(net, x, classes)
    after = snapshot(net)
    for key in group_param_names(net, frozen):
        assert same(before[key], after[key]), f"frozen parameter {key} changed"
    for path, _ in frozen_bn:
        for stat in STATS:
            key = f"{path}.{stat}"
            assert same(before[key], after[key]), f"frozen BatchNorm statistic {key} changed"
    for g in trainable:
        assert any(not same(before[k], after[k]) for k in group_param_names(net, [g])), f"group {g} did not train"
    for path, _ in live_bn:
        assert not same(before[f"{path}.running_mean"], after[f"{path}.running_mean"])
        assert after[f"{path}.num_batches_tracked"] == before[f"{path}.num_batches_tracked"] + 3
    net.train()
    assert all(not m.training for _, m in frozen_bn) and all(m.training for _, m in live_bn)


def test_inference_bn_survives_a_parent_train_call_and_deepcopy() -> None:
    net, _, _ = small_net("resnet18")
    net.freeze(["stem", "layer1"])
    wrapper = nn.Sequential(net)  # a LightningModule holding the net calls train() the same way
    wrapper.eval()
    wrapper.train()
    assert not net.bn1.training and not net.layer1[0].bn2.training
    assert net.layer2[0].bn1.training and net.training
    clone = copy.deepcopy(net)
    clone.train()
    assert not clone.bn1.training and clone.layer2[0].bn1.training
    # eval() still puts everything in eval mode.
    net.eval()
    assert not any(m.training for m in net.modules())


def test_frozen_affine_bn_updates_statistics_only() -> None:
    net, x, classes = small_net("resnet18")
    net.freeze(["stem", "layer1"], bn="frozen_affine")
    frozen_bn = batch_norms(net, ["stem", "layer1"])
    before = snapshot(net)
    train_steps(net, x, classes)
    after = snapshot(net)
    for key in group_param_names(net, ["stem", "layer1"]):
        assert same(before[key], after[key]), key
    for path, m in frozen_bn:
        assert m.training and not m.weight.requires_grad
        assert not same(before[f"{path}.running_mean"], after[f"{path}.running_mean"])
        assert not same(before[f"{path}.running_var"], after[f"{path}.running_var"])


def test_train_bn_keeps_batchnorm_trainable_in_frozen_groups() -> None:
    net, x, classes = small_net("resnet18")
    net.freeze(["stem", "layer1"], bn="train")
    frozen_bn = batch_norms(net, ["stem", "layer1"])
    assert net.group_status()[0].state == "partial" and "stem" in net.trainable_groups()
    before = snapshot(net)
    train_steps(net, x, classes)
    after = snapshot(net)
    bn_keys = {f"{p}.{k}" for p, _ in frozen_bn for k in ("weight", "bias")}
    for key in group_param_names(net, ["stem", "layer1"]):
        if key in bn_keys:
            assert not same(before[key], after[key]), f"BatchNorm parameter {key} did not train"
        else:
            assert same(before[key], after[key]), f"frozen parameter {key} changed"
    assert all(m.training for _, m in frozen_bn)
    assert all(not same(before[f"{p}.running_var"], after[f"{p}.running_var"]) for p, _ in frozen_bn)


def test_unfreeze_restores_batchnorm_training() -> None:
    net, x, classes = small_net("resnet18")
    net.freeze()
    assert net.trainable_groups() == [] and not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not any(m.training for _, m in batch_norms(net, net.group_names()))
    net.unfreeze()
    assert all(p.requires_grad for p in net.parameters())
    assert all(m.training for m in net.modules())
    net.freeze()
    net.eval()
    net.unfreeze("layer4")  # in eval mode, unfreezing does not switch a layer to training
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for _, m in batch_norms(net, ["layer4"]))
    assert not any(m.training for _, m in batch_norms(net, ["stem", "layer3"]))
    before = snapshot(net)
    train_steps(net, x, classes)
    after = snapshot(net)
    assert not same(before["layer4.0.bn1.running_mean"], after["layer4.0.bn1.running_mean"])
    assert same(before["layer3.0.bn1.running_mean"], after["layer3.0.bn1.running_mean"])


@pytest.mark.parametrize("name", ["seq2seq_bahdanau", "transformer_seq2seq"])
def test_seq2seq_frozen_encoder_stays_unchanged(name: str) -> None:
    torch.manual_seed(0)
    small = {"embed_dim": 8, "hidden_size": 12} if name.startswith("seq2seq") else {
        "d_model": 16, "nhead": 2, "dim_feedforward": 24, "dropout": 0.0}  # fmt: skip
    net = create_model(name, **VOCAB, **small)
    net.freeze(["embeddings", "encoder"])
    src = torch.randint(3, SRC_V, (3, 6))
    lengths = torch.tensor([6, 4, 2])
    tgt = torch.randint(3, TGT_V, (3, 5))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    before = snapshot(net)
    for _ in range(2):
        net.train()
        logits = net(src, lengths, tgt[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, TGT_V), tgt[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = snapshot(net)
    for key in group_param_names(net, ["embeddings", "encoder"]):
        assert same(before[key], after[key]), key
    for g in net.trainable_groups():
        assert any(not same(before[k], after[k]) for k in group_param_names(net, [g])), g


# ----------------------------------------------------------------------------- selection


def lenet() -> Freezable:
    with torch.device("meta"):
        return create_model("lenet5")


def trainable_names(net: nn.Module) -> set[str]:
    return {n for n, p in net.named_parameters() if p.requires_grad}


def test_freeze_to_follows_fastai() -> None:
    net = lenet()
    G = len(net.group_names())
    net.freeze_to(2)
    assert net.frozen_groups() == ["conv1", "conv2"] and net.trainable_groups() == ["fc1", "fc2", "head"]
    net.freeze_to(-1)
    assert net.trainable_groups() == ["head"]
    net.freeze_to(-3)  # unfreezes again what freeze_to(-1) had frozen
    assert net.trainable_groups() == ["fc1", "fc2", "head"]
    net.freeze_to(G)
    assert net.trainable_groups() == []
    net.freeze_to(0)
    assert net.frozen_groups() == []
    net.freeze_to(-G)
    assert net.frozen_groups() == []


def test_freeze_to_bn_modes_apply_to_the_frozen_part() -> None:
    net, _, _ = small_net("resnet18")
    net.freeze_to(-1, bn="frozen_affine")
    net.train()
    assert net.bn1.training and not net.bn1.weight.requires_grad
    net.freeze_to(-1)
    net.train()
    assert not net.bn1.training
    net.freeze_to(1)  # layer1.. train again, BN included
    net.train()
    assert not net.bn1.training and net.layer1[0].bn1.training and net.layer1[0].bn1.weight.requires_grad


def test_groups_by_name_index_and_list() -> None:
    net = lenet()
    net.freeze(0)
    assert net.frozen_groups() == ["conv1"]
    net.freeze(-1)
    assert net.frozen_groups() == ["conv1", "head"]
    net.unfreeze(["conv1", -1])
    net.freeze(["fc1", 3])
    assert net.frozen_groups() == ["fc1", "fc2"]
    status = {s.name: s for s in net.group_status()}
    assert status["fc1"].params == 16 * 5 * 5 * 120 + 120 and status["fc1"].trainable == 0
    assert status["head"].state == "trainable"


@pytest.mark.parametrize(
    ("pattern", "frozen"),
    [
        ("head.fc1", {"head.fc1.weight", "head.fc1.bias"}),  # a module name: everything in it
        ("head.*", {f"head.fc{i}.{k}" for i in (1, 2, 3) for k in ("weight", "bias")}),
        ("*.weight", {f"{m}.weight" for m in ("features.0", "features.3", "head.fc1", "head.fc2", "head.fc3")}),
        ("re:^features\\.[03]\\.bias$", {"features.0.bias", "features.3.bias"}),
        (re.compile(r"fc[12]\.bias"), {"head.fc1.bias", "head.fc2.bias"}),
        (["features.0", "head.fc3.bias"], {"features.0.weight", "features.0.bias", "head.fc3.bias"}),
    ],
)
def test_freeze_by_pattern(pattern, frozen: set[str]) -> None:
    net = lenet()
    net.freeze(pattern=pattern)
    assert set(dict(net.named_parameters())) - trainable_names(net) == frozen
    net.unfreeze(pattern=pattern)
    assert trainable_names(net) == set(dict(net.named_parameters()))


def test_pattern_inside_groups_and_partial_state() -> None:
    net = lenet()
    net.freeze(groups=["fc1", "fc2"], pattern="*.weight")
    assert set(dict(net.named_parameters())) - trainable_names(net) == {"head.fc1.weight", "head.fc2.weight"}
    assert [s.state for s in net.group_status()] == ["trainable", "trainable", "partial", "partial", "trainable"]


def test_pattern_selects_batchnorm_layers() -> None:
    net, _, _ = small_net("resnet18")
    net.freeze(pattern="*bn*")  # only the BatchNorm layers, in inference mode
    net.train()
    assert not net.layer1[0].bn1.training and net.layer1[0].conv1.weight.requires_grad
    assert not net.bn1.weight.requires_grad
    assert net.layer2[0].downsample[1].training  # a BatchNorm not named bn*
    assert not net.layer2[0].bn1.weight.requires_grad and net.fc.weight.requires_grad


# ----------------------------------------------------------------------------- bad input


def test_unknown_group_lists_the_groups() -> None:
    net = lenet()
    listing = "0 'conv1', 1 'conv2', 2 'fc1', 3 'fc2', 4 'head'"
    with pytest.raises(ValueError, match=f"no layer group 'backbone'; the groups are {listing}"):
        net.freeze("backbone")
    with pytest.raises(ValueError, match="no layer group 5; the groups are 0 'conv1'"):
        net.unfreeze([0, 5])
    with pytest.raises(ValueError, match="no layer group True"):
        net.freeze(True)
    with pytest.raises(ValueError, match="no layer group given; the groups are 0 'conv1'"):
        net.freeze([])
    assert trainable_names(net) == set(dict(net.named_parameters()))  # nothing changed


def test_pattern_matching_nothing_lists_groups_and_names() -> None:
    net = lenet()
    with pytest.raises(ValueError, match=r"pattern 'layer4\.\*' matches no parameter or module name") as err:
        net.freeze(pattern="layer4.*")
    assert "0 'conv1'" in str(err.value) and "features.0.weight, features.0.bias" in str(err.value)
    with pytest.raises(ValueError, match=r"matches no parameter or module name in groups \['head'\]"):
        net.unfreeze("head", pattern="features.*")
    with pytest.raises(TypeError, match="glob string"):
        net.freeze(pattern=[3])


def test_unknown_bn_mode_lists_the_modes() -> None:
    net = lenet()
    for call in (lambda: net.freeze(bn="eval"), lambda: net.freeze_to(1, bn="frozen")):
        with pytest.raises(ValueError, match="bn must be one of 'inference', 'frozen_affine', 'train'"):
            call()
    assert BN_MODES == ("inference", "frozen_affine", "train")
    assert trainable_names(net) == set(dict(net.named_parameters()))


@pytest.mark.parametrize("n", [6, -6, 1.5, "head", None])
def test_freeze_to_out_of_range_gives_the_range(n) -> None:
    with pytest.raises(ValueError, match=r"takes an int n in \[-5, 5\].*The groups are 0 'conv1'"):
        lenet().freeze_to(n)
