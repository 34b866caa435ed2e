"""Layer groups and freezing, shared by every dlkit model (fastai's groups, Keras' frozen BN).

A model lists its parameters as ordered **layer groups**, from input to output (stem,
stages, head for a CNN; embeddings, encoder, decoder, output for a seq2seq model). Each
family declares them as data, :attr:`Freezable.group_layout`: group name -> the dotted
paths of the modules in it (timm's ``group_matcher`` in the form of module names).
Every parameter belongs to exactly one group.

:meth:`Freezable.freeze`, :meth:`~Freezable.unfreeze` and :meth:`~Freezable.freeze_to`
flip ``requires_grad`` by group or by name pattern and decide what a frozen BatchNorm
does (``bn``):

- ``"inference"`` (default, Keras' ``trainable=False``): the layer normalises with its
  running statistics, never updates them, and its scale and shift are fixed. The model
  remembers these layers and :meth:`Freezable.train` puts them back in eval mode, so a
  ``model.train()`` (Lightning calls it every epoch) does not switch them back;
- ``"frozen_affine"``: scale and shift fixed, running statistics still updated in training;
- ``"train"`` (fastai's ``train_bn=True``): BatchNorm layers stay fully trainable inside
  frozen groups.

Both dlkit's and torch's BatchNorm layers are recognised (:data:`BATCH_NORMS`).

Example:
    >>> net = create_model("resnet18", num_classes=10)
    >>> [name for name, _ in net.layer_groups()]
    ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head']
    >>> net.freeze_to(-1)            # train the head only; frozen BN in inference mode
    >>> net.trainable_groups()
    ['head']
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch.nn as nn

from dlkit.layers.normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["BATCH_NORMS", "BN_MODES", "Freezable", "GroupSpec", "GroupStatus", "PatternSpec"]

BN_MODES = ("inference", "frozen_affine", "train")
"""What a frozen BatchNorm does; see the module docstring."""

# torch's base class covers BatchNorm1d/2d/3d, their lazy forms and SyncBatchNorm.
BATCH_NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
)
"""Layer types the ``bn`` modes apply to: dlkit's and torch's batch normalisation."""

GroupSpec = str | int | Sequence[str | int] | None
"""Layer groups by name or index (negative from the end), one or a list; None = all."""

PatternSpec = str | re.Pattern[str] | Sequence[str | re.Pattern[str]] | None
"""Name patterns: a glob (``"layer4.*"``, ``"*.bn*"``), a regex as ``"re:^layer[34]\\."``
or a compiled ``re.Pattern`` (searched), or a list of them (any may match)."""


@dataclass(frozen=True)
class GroupStatus:
    """How much of one layer group trains.

    Attributes:
        index: Position in :meth:`Freezable.layer_groups`.
        name: The group's name.
        params: Parameter count (elements).
        trainable: The part with ``requires_grad=True``.
    """

    index: int
    name: str
    params: int
    trainable: int

    @property
    def state(self) -> str:
        """``"trainable"``, ``"frozen"`` or ``"partial"`` (e.g. BN kept training by ``bn="train"``)."""
        if self.trainable == self.params:
            return "trainable"
        return "frozen" if self.trainable == 0 else "partial"


@dataclass
class _Group:
    name: str
    modules: list[tuple[str, nn.Module]]  # (path from the model, module)
    params: list[tuple[str, nn.Parameter]]  # (full name, parameter), owned by this group only


class Freezable(nn.Module):
    """Base of every dlkit model: ordered layer groups, freezing by group or name, BN modes.

    Attributes:
        group_layout: Group name -> dotted module paths (``"conv1"``, ``"layer1"``,
            ``"classifier.6"``), input to output. Paths that do not exist on an instance
            (an optional auxiliary head) are skipped, and so are groups left without
            parameters (a removed head). A family sets it as a class attribute, or in
            ``__init__`` when its structure depends on the config (VGG's blocks). None
            (the default) makes one group per top-level child that has parameters.
    """

    group_layout: Mapping[str, Sequence[str]] | None = None
    # Paths of BatchNorm layers frozen with bn="inference"; replaced, never mutated.
    _bn_inference: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ the groups

    def _groups(self) -> list[_Group]:
        layout = self.group_layout
        if layout is None:
            layout = {name: (name,) for name, child in self.named_children() if _has_params(child)}
        seen_modules: set[int] = set()
        seen_params: set[int] = set()
        groups = []
        for name, paths in layout.items():
            modules, params = [], []
            for path in paths:
                module = self._module_at(path)
                if module is None or id(module) in seen_modules:
                    continue
                seen_modules.add(id(module))
                modules.append((path, module))
                for pname, p in module.named_parameters(prefix=path, remove_duplicate=False):
                    if id(p) not in seen_params:  # a shared (tied) parameter stays in its first group
                        seen_params.add(id(p))
                        params.append((pname, p))
            if params:
                groups.append(_Group(name, modules, params))
        missing = [n for n, p in self.named_parameters() if id(p) not in seen_params]
        if missing:
            raise ValueError(
                f"{type(self).__name__}.group_layout leaves {len(missing)} parameters in no layer group "
                f"(e.g. {', '.join(missing[:5])}). Add their modules to group_layout, whose groups are "
                f"{[g.name for g in groups]}."
            )
        return groups

    def _module_at(self, path: str) -> nn.Module | None:
        try:
            return self.get_submodule(path)
        except AttributeError:  # not built for this configuration (or set to None)
            return None

    def layer_groups(self) -> list[tuple[str, list[nn.Module]]]:
        """The ordered layer groups, input to output: ``[(name, [modules]), ...]``.

        Returns:
            One entry per group that has parameters; together the groups hold every
            parameter of the model once (a tied parameter counts in its first group).

        Example:
            >>> [(n, len(ms)) for n, ms in create_model("lenet5").layer_groups()]
            [('conv1', 1), ('conv2', 1), ('fc1', 1), ('fc2', 1), ('head', 1)]
        """
        return [(g.name, [m for _, m in g.modules]) for g in self._groups()]

    def group_names(self) -> list[str]:
        """The groups' names, in order."""
        return [g.name for g in self._groups()]

    def named_group_parameters(self) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
        """Each group's parameters with their names: ``[(group, [(name, param), ...]), ...]``.

        Every parameter appears exactly once, frozen ones included: what an optimiser
        needs to build one parameter group per layer group from the first step.
        """
        return [(g.name, list(g.params)) for g in self._groups()]

    def group_parameters(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Each group's parameters: ``[(group, [param, ...]), ...]``, every parameter once.

        Example:
            >>> net = create_model("resnet18", num_classes=10)
            >>> opt = torch.optim.SGD([{"params": ps} for _, ps in net.group_parameters()], lr=0.1)
        """
        return [(g.name, [p for _, p in g.params]) for g in self._groups()]

    def group_status(self) -> list[GroupStatus]:
        """Parameter counts per group, total and trainable (see :class:`GroupStatus`)."""
        return [
            GroupStatus(i, g.name, sum(p.numel() for _, p in g.params),
                        sum(p.numel() for _, p in g.params if p.requires_grad))
            for i, g in enumerate(self._groups())
        ]  # fmt: skip

    def frozen_groups(self) -> list[str]:
        """Names of the groups without a trainable parameter."""
        return [s.name for s in self.group_status() if s.state == "frozen"]

    def trainable_groups(self) -> list[str]:
        """Names of the groups with at least one trainable parameter."""
        return [s.name for s in self.group_status() if s.state != "frozen"]

    # ------------------------------------------------------------------ freezing

    def freeze(self, groups: GroupSpec = None, pattern: PatternSpec = None, bn: str = "inference") -> None:
        """Stop training some parameters: ``requires_grad=False``, BatchNorm as ``bn`` says.

        Args:
            groups: Groups by name or index (negative from the end), one or a list.
                None with no ``pattern`` freezes every group. Defaults to None.
            pattern: Only the parameters (and BatchNorm layers) whose name, or the name
                of a module containing them, matches (see :data:`PatternSpec`); with
                ``groups``, only inside those groups. Defaults to None.
            bn: What the selected BatchNorm layers do, one of :data:`BN_MODES`.
                Defaults to ``"inference"``.

        Raises:
            ValueError: For an unknown group or index, a pattern that matches nothing
                (the groups and some parameter names are listed), or an unknown ``bn``.

        Example:
            >>> net.freeze()                                   # everything, BN in inference mode
            >>> net.freeze(["stem", "layer1"], bn="train")     # fastai's train_bn=True
            >>> net.freeze(pattern="layer4.*.conv*")
        """
        _check_bn(bn)
        params, norms = self._select(groups, pattern)
        for p in params:
            p.requires_grad_(False)
        for path, m in norms:
            for p in m.parameters():
                p.requires_grad_(bn == "train")
        self._set_bn_inference(norms, bn == "inference")

    def unfreeze(self, groups: GroupSpec = None, pattern: PatternSpec = None) -> None:
        """Train parameters again: ``requires_grad=True``; their BatchNorm layers train again.

        Args:
            groups: As in :meth:`freeze`; None with no ``pattern`` = every group.
            pattern: As in :meth:`freeze`.

        Raises:
            ValueError: For an unknown group or index, or a pattern that matches nothing.

        Example:
            >>> net.unfreeze("layer4")
        """
        params, norms = self._select(groups, pattern)
        for p in params:
            p.requires_grad_(True)
        for _, m in norms:
            for p in m.parameters():
                p.requires_grad_(True)
        self._set_bn_inference(norms, False)

    def freeze_to(self, n: int, bn: str = "inference") -> None:
        """Freeze the groups before ``n`` and unfreeze the others (fastai's ``freeze_to``).

        Args:
            n: Index of the first trainable group, in ``[-G, G]`` for ``G`` groups:
                ``-1`` trains the last group (the head) only, ``0`` everything, ``G``
                nothing.
            bn: What the frozen groups' BatchNorm layers do, one of :data:`BN_MODES`.
                Defaults to ``"inference"``.

        Raises:
            ValueError: For ``n`` outside ``[-G, G]`` (the groups are listed), or an unknown ``bn``.

        Example:
            >>> net.freeze_to(-2)   # layer4 and head train
        """
        _check_bn(bn)
        names = self.group_names()
        G = len(names)
        if isinstance(n, bool) or not isinstance(n, int) or not -G <= n <= G:
            raise ValueError(
                f"{type(self).__name__}.freeze_to(n) takes an int n in [{-G}, {G}] (the first trainable "
                f"group; negative counts from the end), got {n!r}. The groups are {_listing(names)}."
            )
        start = n % G if n < 0 else n
        if start < G:
            self.unfreeze(list(range(start, G)))
        if start > 0:
            self.freeze(list(range(start)), bn=bn)

    def train(self, mode: bool = True) -> Freezable:
        """Set training mode; BatchNorm layers frozen with ``bn="inference"`` stay in eval mode."""
        super().train(mode)
        if mode:
            for path in self._bn_inference:
                module = self._module_at(path)
                if module is not None:
                    module.eval()
        return self

    # ------------------------------------------------------------------ helpers

    def _select(
        self, groups: GroupSpec, pattern: PatternSpec
    ) -> tuple[list[nn.Parameter], list[tuple[str, nn.Module]]]:
        """The parameters and the ``(path, BatchNorm)`` layers that ``groups`` and ``pattern`` pick."""
        all_groups = self._groups()
        chosen = [all_groups[i] for i in self._group_indices(groups, [g.name for g in all_groups])]
        params = [(name, p) for g in chosen for name, p in g.params]
        norms = [(path, m) for g in chosen for path, m in _named_batch_norms(g.modules)]
        if pattern is None:
            return [p for _, p in params], norms
        patterns = _compile(pattern)
        params = [(name, p) for name, p in params if _matches(patterns, name)]
        picked = {id(p) for _, p in params}
        norms = [
            (path, m) for path, m in norms
            if _matches(patterns, path) or any(id(p) in picked for p in m.parameters())
        ]  # fmt: skip
        if not params and not norms:
            where = f" in groups {[g.name for g in chosen]}" if groups is not None else ""
            names = [name for g in chosen for name, _ in g.params]
            raise ValueError(
                f"{type(self).__name__}: pattern {pattern!r} matches no parameter or module name{where}. "
                f"The groups are {_listing([g.name for g in all_groups])}; parameter names look like "
                f"{', '.join(names[:4])}{', ...' if len(names) > 4 else ''} (globs match the full name "
                "or a containing module's, e.g. 'layer4' or 'layer4.*.bn*'; 're:...' for a regex)."
            )
        return [p for _, p in params], norms

    def _group_indices(self, groups: GroupSpec, names: list[str]) -> list[int]:
        if groups is None:
            return list(range(len(names)))
        items = [groups] if isinstance(groups, (str, int)) else list(groups)
        if not items:
            raise ValueError(f"{type(self).__name__}: no layer group given; the groups are {_listing(names)}.")
        indices = []
        for g in items:
            if isinstance(g, str) and g in names:
                indices.append(names.index(g))
            elif isinstance(g, int) and not isinstance(g, bool) and -len(names) <= g < len(names):
                indices.append(g % len(names))
            else:
                raise ValueError(
                    f"{type(self).__name__} has no layer group {g!r}; the groups are {_listing(names)} "
                    "(by name or index, negative from the end)."
                )
        return sorted(set(indices))

    def _set_bn_inference(self, norms: list[tuple[str, nn.Module]], inference: bool) -> None:
        current = set(self._bn_inference)
        for path, module in norms:
            if inference:
                current.add(path)
                module.eval()
            else:
                current.discard(path)
                module.train(self.training)
        self._bn_inference = frozenset(current)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _named_batch_norms(modules: list[tuple[str, nn.Module]]) -> Iterator[tuple[str, nn.Module]]:
    for path, module in modules:
        for name, m in module.named_modules(prefix=path):
            if isinstance(m, BATCH_NORMS):
                yield name, m


def _check_bn(bn: str) -> None:
    if bn not in BN_MODES:
        raise ValueError(
            f"bn must be one of {', '.join(repr(m) for m in BN_MODES)} (frozen BatchNorm: running "
            f"statistics used and fixed / statistics updated, affine fixed / fully trainable), got {bn!r}."
        )


def _compile(pattern: PatternSpec) -> list[tuple[re.Pattern[str], bool]]:
    """``(regex, is_glob)`` per pattern: globs must match a whole name, regexes are searched."""
    items = [pattern] if isinstance(pattern, (str, re.Pattern)) else list(pattern)
    compiled = []
    for item in items:
        if isinstance(item, re.Pattern):
            compiled.append((item, False))
        elif isinstance(item, str) and item.startswith("re:"):
            compiled.append((re.compile(item[3:]), False))
        elif isinstance(item, str):
            compiled.append((re.compile(fnmatch.translate(item)), True))
        else:
            raise TypeError(f"A freeze pattern is a glob string, 're:<regex>' or a re.Pattern, got {item!r}.")
    return compiled


def _matches(patterns: list[tuple[re.Pattern[str], bool]], name: str) -> bool:
    """Whether a regex is found in ``name``, or a glob matches it or a module prefix (``a``, ``a.b``)."""
    parts = name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        any(regex.match(c) for c in prefixes) if is_glob else regex.search(name) is not None
        for regex, is_glob in patterns
    )


def _listing(names: list[str]) -> str:
    return ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
