"""Crafted files fed to every loader: no code runs, and the error says why the file was refused.

Two kinds of attack (issue 11): pickle ``__reduce__`` payloads, which weights-only
loading must refuse; and checkpoints that ``torch.load(weights_only=True)`` accepts as
clean whose stored ``dlkit_config`` (or Lightning hyper-parameters) names code to run.
A payload only ever creates a marker file in ``tmp_path``; every test asserts that the
marker never appears. ``test_payloads_are_live`` shows that each one does create its
marker when loaded the unsafe way, so a missing marker means the loader stopped it.
"""

from __future__ import annotations

import copy
import functools
import os
import pathlib
import pickle
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from dlkit.checkpoint import AtomicCheckpointIO, load_checkpoint_file, load_run, resolve_ckpt_path
from dlkit.config import (
    CONF_DIR,
    ConfigError,
    check_targets,
    compose_config,
    group_options,
    load_option,
)
from dlkit.eval import evaluate
from dlkit.models import create_model
from dlkit.tasks import Classifier, Seq2Seq
from dlkit.train import train
from tests.conftest import FAST

pytestmark = [
    pytest.mark.usefixtures("one_thread_per_module"),
    # Resuming in another folder, pickles of protocol 4, and torch's notice of the
    # variable one test sets: expected here.
    pytest.mark.filterwarnings("ignore:The dirpath has changed", "ignore:Detected pickle protocol",
                               "ignore:Checkpoint directory .* exists and is not empty",
                               "ignore:Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"),
]

# Tiny runs: a couple of batches, one epoch, no logger.
TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "~logger", "test=false", *FAST]
RUNS = {
    "classifier": ["experiment=lenet_digits"],
    "seq2seq": ["experiment=seq2seq_bahdanau_dates", "data.num_train=64", "data.num_val=32", "data.num_test=32",
                "data.batch_size=32", "model.embed_dim=8", "model.hidden_size=16"],
}
TASKS = {"classifier": Classifier, "seq2seq": Seq2Seq}


def _compose(name: str, overrides: list[str], output_dir: Path):
    cfg = compose_config(name, overrides, output_dir)
    with open_dict(cfg):  # nothing a test runs writes to ./logs
        cfg.paths.log_dir = str(output_dir / "logs")
    return cfg


@dataclass(frozen=True)
class Genuine:
    """A checkpoint written by a tiny dlkit-train run."""

    kind: str
    path: Path

    @property
    def checkpoint(self) -> dict[str, Any]:
        return torch.load(self.path, weights_only=True)

    def model_kwargs(self) -> dict[str, Any]:
        model = dict(self.checkpoint["dlkit_config"]["model"])
        model.pop("_target_")
        return model


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Genuine]:
    runs = {}
    for kind, overrides in RUNS.items():
        folder = tmp_path_factory.mktemp(kind)
        train(_compose("train", [*overrides, *TINY], folder / "run"))
        runs[kind] = Genuine(kind, Path(resolve_ckpt_path(folder / "run", prefer="last")))
    GlobalHydra.instance().clear()
    return runs


# ----------------------------------------------------------------------------- payloads
class TouchOnUnpickle:
    """Unpickling this creates ``marker`` (and does nothing else): a pickle ``__reduce__`` payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@dataclass
class Ctx:
    tmp: Path
    marker: Path

    @property
    def evil_pickle(self) -> Path:
        """A torch file whose unpickling creates the marker (for nested torch.load payloads)."""
        path = self.tmp / "evil.pt"
        if not path.exists():
            torch.save({"x": TouchOnUnpickle(self.marker)}, path)
        return path

    def evil_yaml(self) -> Path:
        """A YAML option outside conf/ whose instantiation creates the marker; returned without suffix."""
        (self.tmp / "evil.yaml").write_text(f"_target_: builtins.open\n_args_: [{str(self.marker)!r}, w]\n")
        return self.tmp / "evil"


def _touch(ctx: Ctx) -> str:
    return f"touch {shlex.quote(str(ctx.marker))}"


# Config injections: (what they change in the stored dlkit_config) -> the regex the
# error of a loader that reads that config must match.
CONFIG_PAYLOADS: dict[str, tuple[Callable[[dict, Ctx], None], str]] = {
    "builtins.open as the model": (
        lambda c, x: c.update(model={"_target_": "builtins.open", "_args_": [str(x.marker), "w"]}),
        r"model\._target_ is 'builtins.open'.*never built"),
    "pathlib.Path.write_text as the loss": (
        lambda c, x: c.update(loss={"_target_": "pathlib.Path.write_text",
                                    "_args_": [{"_target_": "pathlib.Path", "_args_": [str(x.marker)]}, "pwned"]}),
        r"loss\._target_ is 'pathlib.Path.write_text'"),
    "nested torch.load(weights_only=False) as a model argument": (
        lambda c, x: c["model"].update(extra={"_target_": "torch.load", "f": str(x.evil_pickle), "weights_only": False}),
        r"model\.extra\._target_ is 'torch.load'"),
    "os.system as an argument of an allowed task": (
        lambda c, x: c["task"].update(metrics={"_target_": "os.system", "_args_": [_touch(x)]}),
        r"task\.metrics\._target_ is 'os.system'"),
    "os.system as a _partial_ loss": (
        lambda c, x: c.update(loss={"_target_": "os.system", "_partial_": True, "_args_": [_touch(x)]}),
        r"loss\._target_ is 'os.system'"),
    "os.system inside _args_ of an allowed target": (
        lambda c, x: c.update(loss={"_target_": "dlkit.losses.CrossEntropyLoss",
                                    "_args_": [{"_target_": "os.system", "_args_": [_touch(x)]}]}),
        r"loss\._args_\[0\]\._target_ is 'os.system'"),
    "hydra.utils.instantiate indirection, _recursive_ false": (
        lambda c, x: c.update(model={"_target_": "hydra.utils.instantiate", "_recursive_": False,
                                     "config": {"_target_": "builtins.open", "_args_": [str(x.marker), "w"]}}),
        r"model\._recursive_ is False|model\._target_ is 'hydra.utils.instantiate'"),
    "hydra.utils.call indirection": (
        lambda c, x: c["task"].update(metrics={"_target_": "hydra.utils.call", "config": {
            "_target_": "builtins.open", "_args_": [str(x.marker), "w"]}}),
        r"task\.metrics\._target_ is 'hydra.utils.call'"),
    "torch.load through an attribute chain of torch.nn": (
        lambda c, x: c["model"].update(extra={"_target_": "torch.nn.modules.module.torch.load",
                                              "f": str(x.evil_pickle), "weights_only": False}),
        r"is the module torch, reached through an attribute"),
    "os.system through an attribute chain of dlkit.data": (
        lambda c, x: c["model"].update(extra={"_target_": "dlkit.data.idx.os.system", "_args_": [_touch(x)]}),
        r"is the module os, reached through an attribute"),
    "dlkit's own file writer": (
        lambda c, x: c.update(model={"_target_": "dlkit.checkpoint.atomic_torch_save", "obj": {}, "path": str(x.marker)}),
        r"'dlkit.checkpoint.atomic_torch_save'.*never built"),
    "pathlib reached as a name dlkit.data.idx imports": (
        lambda c, x: c["model"].update(extra={"_target_": "dlkit.data.idx.Path.touch",
                                              "_args_": [{"_target_": "dlkit.data.idx.Path", "_args_": [str(x.marker)]}]}),
        r"model\.extra\._target_ is 'dlkit.data.idx.Path.touch'.*not a module"),
    "an interpolated _target_ (oc.decode)": (
        lambda c, x: c.update(model={"_target_": "${oc.decode:'builtins.open'}", "_args_": [str(x.marker), "w"]}),
        r"model\._target_ is an interpolation"),
    "an optimizer option given as a YAML path (absolute)": (
        lambda c, x: c["task"].update(optimizer=str(x.evil_yaml())),
        r"Unknown optimizer .*not paths"),
    "a scheduler option given as a YAML path (../ from conf/scheduler)": (
        lambda c, x: c["task"].update(scheduler=os.path.relpath(x.evil_yaml(), CONF_DIR / "scheduler")),
        r"Unknown scheduler .*not paths"),
}


def _idx_download(c: dict, x: Ctx) -> None:
    """An allowed DataModule whose `spec` is a crafted mapping: a download to any path."""
    served = x.tmp / "served"
    (served / "sub").mkdir(parents=True, exist_ok=True)
    (served / "PWNED").write_text("pwned")
    name = os.path.relpath(x.marker, x.tmp / "dl")  # "../PWNED": out of the download folder
    c["data"] = {"_target_": "dlkit.data.MNISTDataModule", "download": True, "data_dir": str(x.tmp / "dl"),
                 "spec": {"name": "evil", "folder": "evil", "class_names": list("0123456789"), "mean": 0.1,
                          "std": 0.3, "mirrors": [(served / "sub").as_uri()], "md5": {}, "hflip": False,
                          "random_crop_padding": 2, "apt_package": None,
                          "file_names": dict.fromkeys(["train_images", "train_labels", "test_images",
                                                       "test_labels"], name)}}


CONFIG_PAYLOADS["a crafted IDX spec that downloads to any path"] = (_idx_download, r"data")

# Lightning's hyper-parameters, which load_from_checkpoint passes to the task's __init__.
HPARAM_PAYLOADS: dict[str, tuple[Callable[[dict, Ctx], None], str]] = {
    "an optimizer hyper-parameter that is a YAML path": (
        lambda h, x: h.update(optimizer=str(x.evil_yaml())), r"Unknown optimizer .*not paths"),
    "a loss hyper-parameter that is a YAML path (../ from conf/loss)": (
        lambda h, x: h.update(loss=os.path.relpath(x.evil_yaml(), CONF_DIR / "loss")), r"Unknown loss .*not paths"),
    "a scheduler hyper-parameter that is a YAML path": (
        lambda h, x: h.update(scheduler=str(x.evil_yaml())), r"Unknown scheduler .*not paths"),
    "an untrusted Lightning _instantiator": (
        lambda h, x: h.update(_instantiator="builtins.exec", _class_path="dlkit.tasks.Classifier"),
        r"instantiator 'builtins.exec'.*blocked"),
}

PICKLE_REFUSED = r"refused: it holds Python objects|Weights only load failed"


def _pickle_in_checkpoint(ckpt: dict, x: Ctx, path: Path) -> None:
    torch.save({**ckpt, "callbacks": {"evil": TouchOnUnpickle(x.marker)}}, path)


def _pickle_legacy_format(ckpt: dict, x: Ctx, path: Path) -> None:
    torch.save({**ckpt, "evil": TouchOnUnpickle(x.marker)}, path, _use_new_zipfile_serialization=False)


def _pickle_in_hparams(ckpt: dict, x: Ctx, path: Path) -> None:
    torch.save({**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "metrics": TouchOnUnpickle(x.marker)}}, path)


def _raw_pickle(ckpt: dict, x: Ctx, path: Path) -> None:
    path.write_bytes(pickle.dumps(TouchOnUnpickle(x.marker)))


PICKLE_PAYLOADS = {
    "a __reduce__ payload in a callback state": _pickle_in_checkpoint,
    "a __reduce__ payload, legacy (non-zip) format": _pickle_legacy_format,
    "a __reduce__ payload in the hyper-parameters": _pickle_in_hparams,
    "a plain pickle file": _raw_pickle,
}


@dataclass
class Crafted:
    path: Path
    marker: Path
    part: str  # "pickle", "config" or "hparams": what the payload hides in
    refused: str  # regex the error of a loader that reads that part must match


def craft(name: str, base: Genuine, tmp: Path) -> Crafted:
    ctx = Ctx(tmp, tmp / "PWNED")
    path = tmp / "crafted.ckpt"
    ckpt = copy.deepcopy(base.checkpoint)
    if name in PICKLE_PAYLOADS:
        PICKLE_PAYLOADS[name](ckpt, ctx, path)
        return Crafted(path, ctx.marker, "pickle", PICKLE_REFUSED)
    if name in CONFIG_PAYLOADS:
        change, refused = CONFIG_PAYLOADS[name]
        change(ckpt["dlkit_config"], ctx)
        part = "config"
    else:
        change, refused = HPARAM_PAYLOADS[name]
        change(ckpt["hyper_parameters"], ctx)
        part = "hparams"
    torch.save(ckpt, path)
    torch.load(path, weights_only=True)  # clean for weights-only loading: the danger is in the config
    return Crafted(path, ctx.marker, part, refused)


# ------------------------------------------------------------------------------ loaders
def _eval(path: Path, base: Genuine, tmp: Path) -> Any:
    cfg = _compose("eval", [f"ckpt_path={path}", "+trainer.enable_progress_bar=false"], tmp / "eval")
    return evaluate(cfg)


def _train(path: Path, base: Genuine, tmp: Path) -> Any:
    # A resume continues in the run's own folder (other settings than its own are refused).
    return train(_compose("train", [*RUNS[base.kind], *TINY, f"ckpt_path={path}"], base.path.parents[1]))


def _create_model(path: Path, base: Genuine, tmp: Path) -> Any:
    return create_model(**base.model_kwargs(), pretrained=str(path))


def _load_from_checkpoint(path: Path, base: Genuine, tmp: Path) -> Any:
    return TASKS[base.kind].load_from_checkpoint(path, net=create_model(**base.model_kwargs()))


def _from_checkpoint(path: Path, base: Genuine, tmp: Path) -> Any:
    return Seq2Seq.from_checkpoint(path)


def _load_run(path: Path, base: Genuine, tmp: Path) -> Any:
    return load_run(path)


def _checkpoint_io(path: Path, base: Genuine, tmp: Path) -> Any:
    return AtomicCheckpointIO().load_checkpoint(path)


LOADERS = {
    "dlkit-eval": _eval,
    "dlkit-train ckpt_path=": _train,
    "create_model(pretrained=)": _create_model,
    "Task.load_from_checkpoint": _load_from_checkpoint,
    "Seq2Seq.from_checkpoint": _from_checkpoint,
    "load_run": _load_run,
    "AtomicCheckpointIO.load_checkpoint": _checkpoint_io,
}
# Which loaders read each part of a file (and so must refuse a payload hidden there);
# the others never look at it, so for them a crafted config is inert data.
READS = {
    "pickle": set(LOADERS),
    "config": {"dlkit-eval", "Seq2Seq.from_checkpoint", "load_run"},
    "hparams": {"Task.load_from_checkpoint"},
}
# The crafted data node is built by dlkit-eval only (load_run leaves the data to its callers).
DATA_PAYLOAD = "a crafted IDX spec that downloads to any path"
# Loaders whose messages are dlkit's own, so they name the refused file.
NAMES_THE_FILE = set(LOADERS) - {"Task.load_from_checkpoint"}

ALL_PAYLOADS = [*PICKLE_PAYLOADS, *CONFIG_PAYLOADS, *HPARAM_PAYLOADS]


def _run(loader: str, path: Path, base: Genuine, tmp: Path) -> Exception | None:
    try:
        LOADERS[loader](path, base, tmp)
    except Exception as err:  # noqa: BLE001 - the callers check what was raised
        return err
    finally:
        GlobalHydra.instance().clear()
    return None


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("payload", ALL_PAYLOADS)
def test_no_crafted_file_runs_code(payload: str, loader: str, genuine: dict[str, Genuine], tmp_path: Path) -> None:
    base = genuine["classifier"]
    crafted = craft(payload, base, tmp_path)
    error = _run(loader, crafted.path, base, tmp_path)
    assert not crafted.marker.exists(), f"{payload} ran code through {loader}"
    reads = loader == "dlkit-eval" if payload == DATA_PAYLOAD else loader in READS[crafted.part]
    if reads:
        assert error is not None, f"{loader} loaded {payload} without a word"
        assert re.search(crafted.refused, str(error), re.DOTALL), f"{loader} on {payload}: {error!r}"
        if crafted.part == "pickle" and loader in NAMES_THE_FILE:
            assert str(crafted.path) in str(error), error
    elif error is not None:
        # A loader that does not read the crafted part may still refuse the file for a
        # reason it names (a Seq2Seq loader given a Classifier run, a resume whose stored
        # settings differ), never with an internal error.
        assert isinstance(error, ValueError), repr(error)


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("kind", list(RUNS))
def test_a_genuine_checkpoint_loads_through_every_loader(kind: str, loader: str, genuine: dict[str, Genuine],
                                                         tmp_path: Path) -> None:
    base = genuine[kind]
    error = _run(loader, base.path, base, tmp_path)
    if kind == "classifier" and loader == "Seq2Seq.from_checkpoint":
        assert isinstance(error, ValueError) and "holds a Classifier run" in str(error), error
    else:
        assert error is None, f"{loader} refused a genuine {kind} checkpoint: {error!r}"


@pytest.mark.parametrize("payload", [*PICKLE_PAYLOADS, *CONFIG_PAYLOADS])
def test_payloads_are_live(payload: str, genuine: dict[str, Genuine], tmp_path: Path) -> None:
    """Opened the unsafe way (``weights_only=False``, plain ``hydra.utils.instantiate``, an
    option name joined into a path), each payload creates its marker: a loader that
    leaves no marker stopped it."""
    from hydra.utils import instantiate

    original = genuine["classifier"].checkpoint["dlkit_config"]
    crafted = craft(payload, genuine["classifier"], tmp_path)
    refusal = ""
    try:  # the payload runs before whatever fails after it
        if crafted.part == "pickle":
            torch.load(crafted.path, weights_only=False)
        stored = torch.load(crafted.path, weights_only=True)["dlkit_config"]
        key = next(k for k in ("model", "loss", "task", "data") if stored.get(k) != original.get(k))
        node = stored[key]
        option = next((g for g in ("optimizer", "scheduler") if key == "task" and isinstance(node.get(g), str)), None)
        if option:  # what load_option did before it checked names
            instantiate(OmegaConf.load(CONF_DIR / option / f"{node[option]}.yaml"))
        built = instantiate(OmegaConf.create(node))
        if key == "data":
            built.prepare_data()
        if isinstance(built, functools.partial):
            built()
    except Exception as err:  # noqa: BLE001
        refusal = str(err)
    if not crafted.marker.exists() and "blocklisted" in refusal:
        pytest.skip(f"hydra-core {hydra.__version__} refuses it by itself (older 1.3 releases dlkit admits run it)")
    if payload == DATA_PAYLOAD:
        # A second guard stops this one at its source: IDXDataModule takes only a real IDXSpec.
        assert not crafted.marker.exists() and "must be an IDXSpec" in refusal, refusal
        return
    assert crafted.marker.exists(), f"{payload} is not live: nothing to refuse ({refusal})"


# --------------------------------------------------------------------- the rules, unit by unit
def _shipped_targets() -> list[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.add(node["_target_"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(CONF_DIR.rglob("*.yaml")):
        # Hydra's own node (callbacks, launchers, sweepers) is never stored in a checkpoint
        # (dlkit.train stores the run config without `hydra`), so it is not rebuilt from one.
        if path.relative_to(CONF_DIR).parts[0] == "hydra":
            continue
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        walk({k: v for k, v in node.items() if k != "hydra"} if isinstance(node, dict) else node)
    return sorted(found)


@pytest.mark.parametrize("target", _shipped_targets())
def test_every_target_conf_uses_may_be_rebuilt_from_a_checkpoint(target: str) -> None:
    check_targets({"node": {"_target_": target}}, "conf/")


@pytest.mark.parametrize(("target", "why"), [
    ("torch.hub.load", "torch.hub is never built"),
    ("torch.jit.load", "torch.jit is never built"),
    ("torch.compile", "torch.compile is never built"),
    ("torch.serialization.load", "torch.serialization is never built"),
    ("torch.utils.cpp_extension.load", "torch.utils.cpp_extension is never built"),
    ("torch._C._nn.linear", "no private"),
    ("torch.optim.Adam.__init__", "no private"),
    ("torch.nn.Module.load_state_dict", "torch.nn.Module is not a module"),
    ("dlkit.tasks.Classifier.load_from_checkpoint", "is not a module"),
    ("dlkit.tasks.seq2seq.load_run", "defined in dlkit.checkpoint"),
    ("dlkit.models.register_model", "register_model is never built"),
    ("dlkit.models.pretrained.load_state_dict_file", "dlkit.models.pretrained is never built"),
    ("dlkit.data.idx.IDXSpec", "not part of dlkit.data's public API"),
    ("dlkit.run_output.write_metrics_json", "dlkit.run_output is never built"),
    ("dlkit.config.instantiate_node", "dlkit.config is never built"),
    ("hydra.utils.get_method", "hydra is never built"),
    ("hydra.utils.get_class", "hydra is never built"),
    ("importlib.import_module", "importlib is never built"),
    ("subprocess.Popen", "subprocess is never built"),
    ("shutil.rmtree", "shutil is never built"),
    ("pickle.loads", "pickle is never built"),
    ("numpy.load", "numpy.load is never built"),
    ("lightning.pytorch.cli.LightningCLI", "lightning.pytorch.cli is never built"),
    ("dlkit.nothing_here.X", "outside the namespaces"),
    ("torch.nn.NoSuchLayer", "does not exist"),
    (" torch.nn.Linear", "only dotted paths"),
])
def test_a_refused_target_is_named_with_the_reason(target: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_targets({"model": {"_target_": target}}, "the config stored in x.ckpt")
    message = str(info.value)
    assert message.startswith("the config stored in x.ckpt: model._target_ is ") and repr(target) in message
    assert why in message, message


def test_hydra_keys_that_hand_over_unbuilt_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"data\._convert_ is 'none'"):
        check_targets({"data": {"_target_": "dlkit.data.DigitsDataModule", "_convert_": "none"}}, "f")
    with pytest.raises(ConfigError, match=r"model\._recursive_ is False"):
        check_targets({"model": {"_target_": "torch.nn.Sequential", "_recursive_": False}}, "f")
    with pytest.raises(ConfigError, match=r"model\.x\._target_ is a int"):
        check_targets({"model": {"x": {"_target_": 3}}}, "f")


def test_dlkit_allowed_targets_adds_packages_but_never_dangerous_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    own = {"_target_": "tests.test_security.TouchOnUnpickle", "marker": "m"}
    with pytest.raises(ConfigError, match="DLKIT_ALLOWED_TARGETS=<package>"):
        check_targets({"net": own}, "f")
    monkeypatch.setenv("DLKIT_ALLOWED_TARGETS", "tests, torch")
    check_targets({"net": own, "x": {"_target_": "torch.tensor"}}, "f")
    for target, why in [("tests.test_security.pathlib.Path", "reached through an attribute"),
                        ("tests.test_security.Path", "pathlib is never built"),  # imported from pathlib
                        ("torch.load", "torch.load is never built"), ("torch.save", "torch.save is never built")]:
        with pytest.raises(ConfigError, match=why):
            check_targets({"net": {"_target_": target}}, "f")
    assert check_targets({"net": own}, "f", allowed=["tests"]) is None
    monkeypatch.setenv("DLKIT_ALLOWED_TARGETS", "os")
    with pytest.raises(ConfigError, match="entry 'os' cannot be allowed"):
        check_targets({}, "f")
    monkeypatch.setenv("DLKIT_ALLOWED_TARGETS", "../x")
    with pytest.raises(ConfigError, match="not a dotted name"):
        check_targets({}, "f")


@pytest.mark.parametrize("name", ["../../tmp/evil", "/tmp/evil", "~/evil", "adam.yaml", "", "sub/adam", "..", "adam "])
def test_load_option_resolves_plain_names_of_the_group_only(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_option("optimizer", name)
    message = str(info.value)
    assert f"Unknown optimizer {name!r}" in message and all(o in message for o in group_options("optimizer"))


def test_load_option_refuses_a_group_outside_conf() -> None:
    with pytest.raises(ConfigError, match="Unknown config group '../conf/optimizer'"):
        load_option("../conf/optimizer", "adam")
    assert load_option("optimizer", "adam")._target_ == "torch.optim.Adam"


def test_compile_refuses_a_path_as_an_option_name(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, tmp_path / "PWNED")
    clf = Classifier(create_model("mlp", in_features=4, num_classes=3))
    for kwargs in ({"optimizer": str(ctx.evil_yaml())}, {"loss": str(ctx.evil_yaml())},
                   {"scheduler": os.path.relpath(ctx.evil_yaml(), CONF_DIR / "scheduler")}):
        with pytest.raises(ValueError, match="not paths"):
            clf.compile(**kwargs)
    assert not ctx.marker.exists()


def test_checkpoint_io_never_loads_with_weights_only_false(genuine: dict[str, Genuine]) -> None:
    io = AtomicCheckpointIO()
    assert io.load_checkpoint(genuine["classifier"].path, weights_only=None)["state_dict"]
    with pytest.raises(ValueError, match="weights_only=True only"):
        io.load_checkpoint(genuine["classifier"].path, weights_only=False)


@pytest.mark.parametrize(("content", "what"), [
    (b"", "is empty"), (b"hello world\n", "not a torch checkpoint"), ("half", "truncated"),
])
def test_a_broken_file_names_itself(content: bytes | str, what: str, genuine: dict[str, Genuine],
                                    tmp_path: Path) -> None:
    path = tmp_path / "broken.ckpt"
    data = genuine["classifier"].path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content == "half" else content)
    with pytest.raises(ConfigError, match=what) as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("loader", LOADERS)
def test_pickles_are_refused_even_when_torch_is_told_to_trust_files(loader: str, genuine: dict[str, Genuine],
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes torch.load unpickle anything unless the
    # caller passes weights_only=True itself.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    crafted = craft("a __reduce__ payload in a callback state", genuine["classifier"], tmp_path)
    error = _run(loader, crafted.path, genuine["classifier"], tmp_path)
    assert not crafted.marker.exists(), f"the payload ran code through {loader}"
    assert error is not None and re.search(PICKLE_REFUSED, str(error)), repr(error)
