"""Every YAML file under conf/ composes, and every object it describes instantiates."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dlkit.config import CONF_DIR
from dlkit.config import fill_model_from_data, instantiate_dict, instantiate_node

CONF_FILES = sorted(p.relative_to(CONF_DIR).with_suffix("").as_posix() for p in CONF_DIR.rglob("*.yaml"))
BUILDABLE = ("data", "model", "optimizer", "loss", "scheduler", "task", "experiment")


def _image_folder(root: Path) -> list[str]:
    from PIL import Image

    for k, cls in enumerate(("cat", "dog")):
        (root / "images" / cls).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (12, 10), (20 * i, 100 * k, 50)).save(root / "images" / cls / f"{i}.png")
    return [f"data.root={root / 'images'}", "data.image_size=32"]


def _parallel_text(root: Path) -> list[str]:
    lines = [f"word{i} is here\tmot{i} est ici" for i in range(40)]
    (root / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [f"data.path={root / 'pairs.tsv'}", "task=seq2seq", "model=seq2seq_bahdanau", "loss=cross_entropy"]


USER_DATA = {"image_folder": _image_folder, "parallel_text": _parallel_text}


def _build_core(cfg):
    """Instantiate data, model, optimizer, scheduler, loss and task of a composed config."""
    dm = instantiate_node(cfg.data, "data")
    fill_model_from_data(cfg, dm)  # as dlkit/train.py does: null model keys come from the data
    net = instantiate_node(cfg.model, "model")
    optimizer = instantiate_node(cfg.optimizer, "optimizer")
    scheduler = instantiate_node(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    loss = instantiate_node(cfg.loss, "loss")
    task = instantiate_node(cfg.task, "task", net=net, optimizer=optimizer, scheduler=scheduler, loss=loss)
    return dm, net, task


def test_every_group_is_listed() -> None:
    groups = {name.split("/")[0] for name in CONF_FILES if "/" in name}
    assert {"model", "data", "optimizer", "loss", "scheduler", "callbacks", "trainer", "logger",
            "experiment", "hparams_search", "paths", "debug", "hydra", "task"} <= groups


@pytest.mark.parametrize("name", CONF_FILES)
def test_config_composes_and_instantiates(name: str, compose_train, compose_eval, tmp_path: Path) -> None:
    group, _, option = name.rpartition("/")
    if not group:  # train.yaml / eval.yaml
        cfg = compose_train() if option == "train" else compose_eval("ckpt_path=x.ckpt")
        assert cfg.task_name
        return
    if group == "paths" or group.split("/")[0] == "hydra":  # hydra/launcher/*: tests/test_cluster.py
        cfg = compose_train()
        assert cfg.paths.output_dir
        return
    if group == "callbacks" and option != "default" and option != "none":
        # A single callback file: compose it alone as the callbacks group.
        cfg = compose_train(f"callbacks={option}")
    elif group == "model" and option.startswith(("seq2seq_", "transformer_seq2seq")):
        # Encoder-decoders need a seq2seq data set (vocabularies) and task.
        cfg = compose_train(f"model={option}", "data=dates", "task=seq2seq", "loss=cross_entropy")
    elif group == "data" and option in USER_DATA:
        # Data sets of the user's own files: point them at a small one made here.
        cfg = compose_train(f"data={option}", *USER_DATA[option](tmp_path))
    elif group == "finetune":
        # Variants of a fine-tuning experiment, composed on the experiment that lists the group.
        cfg = compose_train("experiment=finetune_digits", f"finetune={option}")
    elif group in ("logger", "callbacks", "trainer", "debug", "hparams_search", *BUILDABLE):
        cfg = compose_train(f"{group}={option}")
    else:
        pytest.fail(f"Unknown config group {group!r}: teach this test how to check it.")

    if group in (*BUILDABLE, "finetune"):
        _, net, task = _build_core(cfg)
        assert isinstance(task, L.LightningModule) and task.net is net
    elif group == "callbacks":
        callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
        assert all(isinstance(c, L.Callback) for c in callbacks)
    elif group == "logger":
        assert len(instantiate_dict(cfg.get("logger"), "logger")) >= 1
    elif group == "trainer":
        if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
            pytest.skip(f"trainer/{option} needs a CUDA device; this machine has none (it still composed).")
        trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
        assert isinstance(trainer, L.Trainer)
    elif group == "debug":
        assert cfg.trainer.max_epochs >= 1 and cfg.task_name == "debug"
    elif group == "hparams_search":
        assert OmegaConf.select(cfg, "hydra.sweeper.params")


def test_compose_config_runs_where_asked_and_resolves_hydra_values(tmp_path: Path) -> None:
    from dlkit.config import compose_config

    cfg = compose_config("train", ["experiment=mlp_diabetes", "trainer.max_epochs=3"], tmp_path / "run")
    assert cfg.task_name == "mlp_diabetes" and cfg.trainer.max_epochs == 3
    assert cfg.paths.output_dir == str(tmp_path / "run")
    assert OmegaConf.select(cfg, "hydra.runtime.output_dir") == str(tmp_path / "run")
    # Every interpolation resolves, as under @hydra.main.
    OmegaConf.to_container(cfg, resolve=True)


def test_compose_config_defaults_to_dlkit_trains_run_folder() -> None:
    from dlkit.config import compose_config

    cfg = compose_config("train", ["task_name=probe"])
    assert "/probe/runs/" in cfg.paths.output_dir.replace("\\", "/")
    assert cfg.paths.output_dir == OmegaConf.select(cfg, "hydra.run.dir")


@pytest.mark.parametrize(("overrides", "task_name", "tags"), [
    ([], "lenet_digits", ["digits", "lenet5"]),
    (["model=mlp"], "mlp_digits", ["digits", "mlp"]),           # not filed under LeNet's name
    (["data=fashion_mnist"], "lenet5_fashion_mnist", ["fashion_mnist", "lenet5"]),
    (["model=mlp", "task_name=mine"], "mine", ["digits", "mlp"]),  # an explicit name wins
])
def test_runs_land_where_their_name_says(overrides: list[str], task_name: str, tags: list[str]) -> None:
    from dlkit.config import compose_config

    cfg = compose_config("train", overrides)
    assert (cfg.task_name, list(cfg.tags)) == (task_name, tags)
    assert f"/{task_name}/runs/" in cfg.paths.output_dir.replace("\\", "/")


def test_compose_config_bad_override_names_the_key() -> None:
    from hydra.errors import ConfigCompositionException

    from dlkit.config import compose_config

    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        compose_config("train", ["trainer.no_such_key=1"])
