"""Saving and loading tasks: ``task.save(path)``, :func:`load_model` and ``load_from_checkpoint`` without ``net=``.

Every checkpoint a task writes (Lightning's ``ModelCheckpoint`` during ``fit``, or
:meth:`SaveLoad.save`) says how to rebuild its network and its task:

- ``dlkit_config`` (:data:`~dlkit.checkpoint.CONFIG_KEY`): the composed run config, when
  ``dlkit-train`` made the task; the network is built from its ``model`` node.
- ``dlkit_model`` (:data:`MODEL_KEY`): otherwise, the network's class and the fields of
  its config dataclass (``net.cfg``), for a network of dlkit's model families
  (``create_model("mlp", ...)``); stored only when building it from them gives the same
  parameter names and shapes. A network dlkit cannot describe (a plain ``nn.Module`` of
  yours) gets no entry: its weights are saved, and loading takes ``net=``.
- ``dlkit_task`` (:data:`TASK_KEY`): the task class, the last ``compile`` settings that
  are plain names and numbers (optimizer, lr, loss, metrics...) and the class names.

Hyper-parameters (``num_classes``, ``monitor``...) are Lightning's ``hyper_parameters``;
a seq2seq task adds its vocabularies in its own ``on_save_checkpoint``. Everything is
tensors and plain values, read back with ``torch.load(weights_only=True)``, and a stored
network config passes :func:`dlkit.config.check_targets` before anything is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from dlkit.checkpoint import CONFIG_KEY, atomic_torch_save, load_checkpoint_file, load_run, resolve_ckpt_path
from dlkit.config import ConfigError, check_targets, instantiate_stored

__all__ = ["MODEL_KEY", "TASK_KEY", "SaveLoad", "load_model", "model_spec", "plain_compile_settings"]

# Checkpoint key of the network's build config, for a task made in Python.
MODEL_KEY = "dlkit_model"
# Checkpoint key of the task's class, compile settings and class names.
TASK_KEY = "dlkit_task"
# compile() arguments the task constructor also takes; the others (lr, optimizer options)
# are applied by a compile() call after loading.
_CONSTRUCTOR_SETTINGS = ("optimizer", "scheduler", "loss", "metrics", "loss_weights")


def _is_plain(value: Any) -> bool:
    # What torch.load(weights_only=True) reads back and a config may hold.
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _plain_copy(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain_copy(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain_copy(v) for k, v in value.items()}
    return value


def plain_compile_settings(**settings: Any) -> dict[str, Any]:
    """The ``compile`` arguments a checkpoint can hold: names, numbers and lists of them.

    A factory, a loss module or a ``slice`` learning rate is left out (the loaded task
    gets the default, or what ``load_from_checkpoint`` is given).

    Args:
        **settings: ``compile``'s arguments, optimizer options included.

    Returns:
        A plain dict of the storable ones.

    Example:
        >>> plain_compile_settings(optimizer="adam", lr=1e-3, loss=torch.nn.MSELoss(), weight_decay=0.01)
        {'optimizer': 'adam', 'lr': 0.001, 'weight_decay': 0.01}
    """
    return {k: _plain_copy(v) for k, v in settings.items() if _is_plain(v)}


def _shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def model_spec(net: nn.Module) -> dict[str, Any] | None:
    """A config (``_target_`` + arguments) that rebuilds ``net``, or None when dlkit cannot describe it.

    dlkit's model families build from their config dataclass (``net.cfg``): the spec is
    the class and those fields, with ``num_classes`` taken from the network
    (``reset_classifier`` changes the head, not the config) and a constructor choice
    kept on the network under its name or as ``<name>_kind`` (RNNSeq2Seq's
    ``attention``). The spec is returned only if it holds plain values, a stored config
    may build it (:func:`~dlkit.config.check_targets`), and the network it builds has
    ``net``'s parameter and buffer names and shapes.

    Args:
        net: The network.

    Returns:
        The spec, or None.

    Example:
        >>> model_spec(create_model("mlp", in_features=4, num_classes=3))["_target_"]
        'dlkit.models.mlp.MLP'
        >>> model_spec(torch.nn.Linear(4, 3)) is None
        True
    """
    cfg, cls = getattr(net, "cfg", None), type(net)
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return None
    params = inspect.signature(cls.__init__).parameters
    if "cfg" not in params or not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    spec: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    spec.update({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init})
    if "num_classes" in spec and isinstance(getattr(net, "num_classes", None), int):
        spec["num_classes"] = net.num_classes
    for name, p in params.items():
        if name in ("self", "cfg") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        for attr in (name, f"{name}_kind"):
            if _is_plain(value := getattr(net, attr, inspect.Parameter.empty)):
                spec[name] = value
                break
    if not _is_plain(spec):
        return None
    spec = _plain_copy(spec)
    try:
        check_targets({"model": spec}, "a network's config")
        # On the meta device the check allocates nothing; a family whose constructor
        # needs real tensors is built on the CPU instead.
        try:
            with torch.device("meta"):
                built = instantiate_stored(spec, "model", "a network's config")
        except Exception:
            built = instantiate_stored(spec, "model", "a network's config")
    except Exception:
        return None
    return spec if _shapes(built) == _shapes(net) else None


def _read(source: Any) -> dict[str, Any]:
    # A path or an open file (as Lightning accepts); a file is rewound for Lightning's own read.
    if hasattr(source, "read"):
        data = source.read()
        source.seek(0)
        source = io.BytesIO(data)
    checkpoint = load_checkpoint_file(source)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{source} is not a dlkit or Lightning checkpoint (no 'state_dict').")
    return checkpoint


def _rebuilt_objects(checkpoint: dict[str, Any], where: str, task: str) -> dict[str, Any]:
    """The network (and the run's loss) a checkpoint describes, as task constructor arguments."""
    if isinstance(checkpoint.get(CONFIG_KEY), dict):
        check_targets(checkpoint[CONFIG_KEY], where)
        run = OmegaConf.create(checkpoint[CONFIG_KEY])
        built = {"net": instantiate_stored(run.model, "model", where)}
        if run.get("loss"):
            built["loss"] = instantiate_stored(run.loss, "loss", where)
        return built
    if isinstance(checkpoint.get(MODEL_KEY), dict):
        return {"net": instantiate_stored(checkpoint[MODEL_KEY], "model", where)}
    raise ConfigError(
        f"{where} cannot rebuild the network: it has neither {CONFIG_KEY!r} (the run config dlkit-train "
        f"stores) nor {MODEL_KEY!r} (the config of a network dlkit can rebuild, such as one from "
        f"create_model). Pass the network: {task}.load_from_checkpoint(path, net=<the same network>)."
    )


class SaveLoad(L.LightningModule):
    """Mixin of :class:`~dlkit.tasks.Task`: ``save``, and ``load_from_checkpoint`` without ``net=``.

    The task must keep its network as ``self.net``; ``run_config`` (set by
    ``dlkit-train``), ``compile_settings`` (set by ``compile``) and ``class_names`` are
    stored when present.

    Example:
        >>> clf.save("digits.ckpt")
        >>> same = Classifier.load_from_checkpoint("digits.ckpt")
    """

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the task to one file: weights, network config, task type and settings, vocabularies.

        The file is a Lightning checkpoint (without optimiser state or loop counters)
        written atomically (:func:`~dlkit.checkpoint.atomic_torch_save`) and readable with
        ``torch.load(weights_only=True)``; :func:`load_model` rebuilds the task from it.
        A network dlkit cannot describe (a plain ``nn.Module`` of yours, see
        :func:`model_spec`) is saved as weights only: load it with ``load_model(path,
        net=<the same architecture>)``. To resume training, use a checkpoint written
        during ``fit`` (``fit(..., ckpt_path=)``), which holds the optimiser state too.

        Args:
            path: The file to write (parent folders are created).

        Returns:
            The path written.

        Example:
            >>> clf.fit(x, y, epochs=3); clf.save("digits.ckpt")
            >>> dlkit.load_model("digits.ckpt").predict(x[:2])
        """
        checkpoint: dict[str, Any] = {
            "pytorch-lightning_version": L.__version__,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            self.CHECKPOINT_HYPER_PARAMS_KEY: dict(self.hparams),
        }
        self.on_save_checkpoint(checkpoint)
        atomic_torch_save(checkpoint, path)
        return Path(path)

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Lightning's ``load_from_checkpoint``, always with ``weights_only=True``, ``net=`` optional.

        Without ``net=`` the network is rebuilt from the checkpoint's run config
        (``dlkit-train``) or network config (a task made in Python, see :func:`model_spec`);
        an explicit ``net=`` (or ``loss=``...) wins. The stored ``compile`` settings are
        applied again. Lightning passes ``weights_only=None``, which
        ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns into a full unpickle: a checkpoint
        from someone else must never run code.

        Raises:
            dlkit.config.ConfigError: No ``net=`` and no stored config to build one from
                (the message names the missing keys), or a refused stored target.
            ValueError: ``weights_only=False`` was asked for.

        Example:
            >>> clf = Classifier.load_from_checkpoint("last.ckpt")  # doctest: +SKIP
            >>> clf = Classifier.load_from_checkpoint("last.ckpt", net=create_model("lenet5"))  # doctest: +SKIP
        """
        if kwargs.pop("weights_only", True) is not True:
            raise ValueError("dlkit loads checkpoints with weights_only=True only.")
        checkpoint = _read(checkpoint_path)
        where = f"the checkpoint {checkpoint_path}"
        settings = dict((checkpoint.get(TASK_KEY) or {}).get("compile") or {})
        if kwargs.get("net") is None:
            kwargs = {**_rebuilt_objects(checkpoint, where, cls.__name__), **{k: v for k, v in kwargs.items() if k != "net"}}
        for key in _CONSTRUCTOR_SETTINGS:
            if key in settings:
                kwargs.setdefault(key, settings[key])
        task = super().load_from_checkpoint(
            checkpoint_path, map_location=map_location, hparams_file=hparams_file, strict=strict,
            weights_only=True, **kwargs,
        )  # fmt: skip
        if any(v is not None for k, v in settings.items() if k not in _CONSTRUCTOR_SETTINGS):
            # lr and optimiser options: only compile takes them.
            task.compile(**{**settings, **{k: kwargs[k] for k in _CONSTRUCTOR_SETTINGS if k in kwargs}})
        if isinstance(checkpoint.get(CONFIG_KEY), dict):
            task.run_config = checkpoint[CONFIG_KEY]
        return task

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # The composed run config when Hydra made the task (dlkit-eval rebuilds from it),
        # else the network's own config when dlkit can describe it.
        if getattr(self, "run_config", None) is not None:
            checkpoint[CONFIG_KEY] = self.run_config
        elif (spec := model_spec(self.net)) is not None:
            checkpoint[MODEL_KEY] = spec
        names = getattr(self, "class_names", None)
        checkpoint[TASK_KEY] = {
            "task": f"{type(self).__module__}.{type(self).__qualname__}",
            "compile": getattr(self, "compile_settings", None) or {},
            "class_names": [str(n) for n in names] if names is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        names = (checkpoint.get(TASK_KEY) or {}).get("class_names")
        if names is not None:
            self.class_names = list(names)


def _task_class(name: Any, where: str) -> type[SaveLoad]:
    # Only a task class already imported is used: a name in a file never imports code.
    stack, seen = [SaveLoad], []
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    for cls in seen:
        if f"{cls.__module__}.{cls.__qualname__}" == name:
            return cls
    raise ConfigError(
        f"{where} holds a {name!r} task, which is not an imported dlkit task class: import the module "
        "that defines it first, or load the file with that class' load_from_checkpoint(path)."
    )


def load_model(
    path: str | os.PathLike[str],
    net: nn.Module | None = None,
    map_location: Any = "cpu",
    prefer: str = "best",
) -> Any:
    """Rebuild a task written by ``task.save`` or during ``fit`` (or ``dlkit-train``), ready to ``predict``.

    The task class, network, weights, hyper-parameters, ``compile`` settings, class
    names and (seq2seq) vocabularies come from the file; see :mod:`dlkit.tasks.saving`.

    Args:
        path: A file, or a run folder (its best checkpoint, or ``prefer="last"``).
        net: The network, for a file saved without a network config (a plain
            ``nn.Module``); it wins over a stored config. Defaults to None.
        map_location: Where the weights go. Defaults to ``"cpu"``.
        prefer: ``"best"`` or ``"last"`` checkpoint of a run folder. Defaults to ``"best"``.

    Returns:
        The task, in eval mode.

    Raises:
        dlkit.config.ConfigError: No file, a refused or broken one, one that is not a
            dlkit task's, or one without a network config when ``net`` is None.

    Example:
        >>> clf.save("digits.ckpt")
        >>> clf2 = dlkit.load_model("digits.ckpt")
        >>> clf2.predict(x_test)                     # the same probabilities as clf's
    """
    ckpt = resolve_ckpt_path(path, prefer=prefer)
    checkpoint = _read(ckpt)
    stored = checkpoint.get(TASK_KEY)
    if isinstance(stored, dict):
        cls = _task_class(stored.get("task"), ckpt)
        task = cls.load_from_checkpoint(ckpt, map_location=map_location, **({"net": net} if net is not None else {}))
    elif isinstance(checkpoint.get(CONFIG_KEY), dict) and net is None:
        task, _ = load_run(ckpt, map_location=map_location)
    else:
        raise ConfigError(
            f"{ckpt} does not say which task it holds (no {TASK_KEY!r}): load it with the task class, "
            "e.g. Classifier.load_from_checkpoint(path, net=<the network>)."
        )
    if isinstance(map_location, (str, torch.device)):
        task.to(map_location)
    return task.eval()
