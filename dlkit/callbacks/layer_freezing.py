"""Freeze a pretrained network's lower layer groups, then unfreeze them on a plan (gradual unfreezing)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L

from dlkit.models.freezing import BN_MODES, Freezable

__all__ = ["LayerFreezing"]

log = logging.getLogger(__name__)

GroupList = str | int | Sequence[str | int]


class LayerFreezing(L.Callback):
    """Train the top layer groups first, then unfreeze lower ones epoch by epoch (ULMFiT, fastai).

    At the start of training the groups before ``train_from`` are frozen (the network's
    :meth:`~dlkit.models.freezing.Freezable.freeze`, with ``bn`` for their BatchNorm
    layers); then, at the start of an epoch, groups are unfrozen by one of two plans:

    - ``unfreeze_at={epoch: groups}``: those groups (names, indices or ``"all"``);
    - ``unfreeze_every=N``: one more group, from the head down, every ``N`` epochs.

    Which groups train is a function of the epoch alone, so a resumed run (mid-epoch
    included) applies the same state the uninterrupted run had; the callback's state in
    the checkpoint records it as well. The optimiser holds every group from the first step
    (:mod:`dlkit.tasks.param_groups`), so unfreezing changes only ``requires_grad`` and
    every scheduler keeps stepping. Each epoch logs ``train/trainable_params``; the
    :class:`~dlkit.callbacks.LearningRateLogger` logs each group's rate (0 while frozen).

    Under DDP the trainer needs ``strategy=ddp_find_unused_parameters_true``: the model is
    wrapped with every parameter trainable (freezing happens after), so parameters
    unfrozen later are still averaged across processes.

    Args:
        train_from: Index of the first group that trains from the start, as in
            :meth:`~dlkit.models.freezing.Freezable.freeze_to`: ``-1`` the head only, ``0``
            everything. Defaults to -1.
        unfreeze_at: ``{epoch: groups}``: unfreeze these groups at the start of that epoch
            (0-based, below ``max_epochs``). Defaults to None.
        unfreeze_every: Unfreeze one more group every this many epochs. Defaults to None
            (with no ``unfreeze_at`` the frozen groups stay frozen: feature extraction).
        bn: What frozen BatchNorm layers do, one of
            :data:`~dlkit.models.freezing.BN_MODES`. Defaults to ``"inference"`` (Keras').
        attribute: The LightningModule's attribute holding the network. Defaults to ``"net"``.

    Raises:
        ValueError: Both plans, an unknown ``bn``, a plan naming a group the network does
            not have (the groups are listed), or an epoch the run never reaches — at
            ``setup``, before training.

    Example:
        >>> freezing = LayerFreezing(train_from=-1, unfreeze_at={2: "layer4", 4: "all"})
        >>> clf.fit(data, epochs=6, callbacks=[freezing])  # doctest: +SKIP
    """

    def __init__(
        self,
        train_from: int = -1,
        unfreeze_at: Mapping[int, GroupList] | None = None,
        unfreeze_every: int | None = None,
        bn: str = "inference",
        attribute: str = "net",
    ) -> None:
        if unfreeze_at is not None and unfreeze_every is not None:
            raise ValueError(
                "LayerFreezing takes unfreeze_at ({epoch: groups}) or unfreeze_every (one more group every N "
                "epochs), not both; set the other to null."
            )
        if bn not in BN_MODES:
            raise ValueError(f"LayerFreezing.bn must be one of {', '.join(map(repr, BN_MODES))}, got {bn!r}.")
        if isinstance(train_from, bool) or not isinstance(train_from, int):
            raise ValueError(f"LayerFreezing.train_from must be an integer group index, got {train_from!r}.")
        if unfreeze_every is not None and (
            isinstance(unfreeze_every, bool) or not isinstance(unfreeze_every, int) or unfreeze_every < 1
        ):
            raise ValueError(f"LayerFreezing.unfreeze_every must be an integer >= 1 or null, got {unfreeze_every!r}.")
        plan: dict[int, list[str | int]] = {}
        for epoch, groups in dict(unfreeze_at or {}).items():
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"LayerFreezing.unfreeze_at keys are epochs (integers >= 0), got {epoch!r}.")
            plan[epoch] = [groups] if isinstance(groups, (str, int)) else list(groups)
        self.train_from, self.unfreeze_every, self.bn, self.attribute = train_from, unfreeze_every, bn, attribute
        self.unfreeze_at = dict(sorted(plan.items()))
        self._applied: frozenset[int] | None = None
        self._restored: list[int] | None = None

    # ------------------------------------------------------------------ the plan

    def trainable_at(self, epoch: int, names: Sequence[str]) -> frozenset[int]:
        """Indices of the groups that train during ``epoch``, for a network with these groups.

        Example:
            >>> sorted(LayerFreezing(-1, unfreeze_every=2).trainable_at(4, ["a", "b", "c", "d"]))
            [1, 2, 3]
        """
        count = len(names)
        start = self.train_from % count if self.train_from < 0 else min(self.train_from, count)
        if self.unfreeze_every:
            start = max(0, start - epoch // self.unfreeze_every)
        trainable = set(range(start, count))
        for at, groups in self.unfreeze_at.items():
            if at <= epoch:
                trainable |= set(self._indices(groups, names))
        return frozenset(trainable)

    @staticmethod
    def _indices(groups: Sequence[str | int], names: Sequence[str]) -> list[int]:
        if "all" in groups:
            return list(range(len(names)))
        out = []
        for g in groups:
            if isinstance(g, str) and g in names:
                out.append(list(names).index(g))
            elif isinstance(g, int) and not isinstance(g, bool) and -len(names) <= g < len(names):
                out.append(g % len(names))
            else:
                listing = ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
                raise ValueError(
                    f"LayerFreezing.unfreeze_at names layer group {g!r}, which the network does not have; its "
                    f"groups are {listing} (by name or index, or 'all')."
                )
        return out

    # ------------------------------------------------------------------ hooks

    def _net(self, pl_module: L.LightningModule) -> Freezable:
        net = getattr(pl_module, self.attribute, None)
        if not isinstance(net, Freezable):
            raise TypeError(
                f"LayerFreezing needs a dlkit model with layer groups (dlkit.models.Freezable) at "
                f"`{type(pl_module).__name__}.{self.attribute}`; got {type(net).__name__}."
            )
        return net

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._applied, self._restored = None, None  # a callback reused by another fit starts afresh
        names = self._net(pl_module).group_names()
        for groups in self.unfreeze_at.values():
            self._indices(groups, names)
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            late = [e for e in self.unfreeze_at if e >= max_epochs]
            if late:
                raise ValueError(
                    f"LayerFreezing.unfreeze_at has epoch(s) {late}, which a run of trainer.max_epochs={max_epochs} "
                    f"never starts (epochs are 0 to {max_epochs - 1}): lower them or raise trainer.max_epochs."
                )
        strategy = trainer.strategy
        ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
        if trainer.world_size > 1 and ddp_kwargs is not None and not ddp_kwargs.get("find_unused_parameters"):
            raise ValueError(
                "LayerFreezing under DDP needs trainer.strategy=ddp_find_unused_parameters_true: DDP is built "
                "with every parameter trainable and frozen ones then send no gradient."
            )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the strategy wrapped the model (DDP registered every parameter) and the
        # callbacks' state was restored; the loops' epoch is restored later, hence
        # on_train_start too.
        net = self._net(pl_module)
        wanted = frozenset(self._restored) if self._restored is not None else self.trainable_at(0, net.group_names())
        self._apply(net, wanted, pl_module, trainer.current_epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restored = None
        self._update(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._update(trainer, pl_module)
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        pl_module.log("train/trainable_params", float(trainable), on_step=False, on_epoch=True)

    def _update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = self._net(pl_module)
        self._apply(net, self.trainable_at(trainer.current_epoch, net.group_names()), pl_module, trainer.current_epoch)

    def _apply(self, net: Freezable, trainable: frozenset[int], pl_module: L.LightningModule, epoch: int) -> None:
        if trainable == self._applied:
            return
        names = net.group_names()
        frozen = [i for i in range(len(names)) if i not in trainable]
        if trainable:
            net.unfreeze(sorted(trainable))
        if frozen:
            net.freeze(frozen, bn=self.bn)
        if self._applied is not None:
            opened = [names[i] for i in sorted(trainable - self._applied)]
            log.info("Epoch %d: unfroze %s; training %s.", epoch, ", ".join(opened) or "nothing",
                     ", ".join(names[i] for i in sorted(trainable)))
        self._applied = trainable

    # ------------------------------------------------------------------ checkpoint

    def state_dict(self) -> dict[str, Any]:
        return {"trainable": sorted(self._applied) if self._applied is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stored = state_dict.get("trainable")
        self._restored = [int(i) for i in stored] if stored is not None else None
