"""In-memory data: a slicing batch loader and a DataModule over plain tensors.

Small data sets (digits, diabetes, a user's ``(x, y)`` arrays) fit in memory many
times over. Indexing a whole batch at once with one permutation is several times
cheaper than ``DataLoader``'s per-sample ``__getitem__`` + ``collate``, and it is what
lets a Lightning run keep up with a hand-written loop (see ``scripts/bench_overhead.py``).

The Keras face's array inputs (``fit(x, y, validation_split=0.2)``) become a
:class:`TensorDataModule` or a :class:`TensorBatchLoader` here (:func:`arrays_to_datamodule`,
:func:`as_loader`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Union

import lightning as L
import numpy as np
import torch
from torch import Tensor

from dlkit.data.checks import check_arrays, check_splits

__all__ = [
    "TensorBatchLoader",
    "TensorDataModule",
    "arrays_to_datamodule",
    "as_loader",
    "as_tensor",
    "is_loader",
    "check_split_fractions",
    "shuffles_training",
    "stratified_split",
    "epoch_source",
]

# A batch element: one tensor, or a dict of tensors for multi-output targets.
Target = Union[Tensor, Mapping[str, Tensor]]


def as_tensor(a: Any, dtype: torch.dtype | None = None) -> Tensor:
    """Convert a NumPy array, list or tensor to a tensor without copying when possible.

    Float64 NumPy arrays become float32 (the dtype every dlkit model expects) unless
    ``dtype`` says otherwise.
    """
    t = a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    if dtype is not None:
        return t.to(dtype)
    return t.float() if t.dtype == torch.float64 else t


def _index(t: Target, idx: Tensor) -> Target:
    # index_select, not t[idx]: advanced indexing costs several times more per batch,
    # and this runs every training step.
    if isinstance(t, Mapping):
        return {k: v.index_select(0, idx) for k, v in t.items()}
    return t.index_select(0, idx)


def _pinned(t: Target) -> Target:
    if isinstance(t, Mapping):
        return {k: v.pin_memory() for k, v in t.items()}
    return t.pin_memory()


def _length(t: Target) -> int:
    if isinstance(t, Mapping):
        lengths = {len(v) for v in t.values()}
        if len(lengths) != 1:
            raise ValueError(f"All target tensors must have the same length, got {sorted(lengths)}.")
        return lengths.pop()
    return len(t)


class TensorBatchLoader:
    """Iterate over ``(x, y)`` tensors in batches by slicing, like a ``DataLoader``.

    Each epoch draws one permutation (from ``seed`` + epoch, so runs repeat) and
    indexes whole batches at once. Under ``torch.distributed`` every rank takes an
    equal, disjoint share of the permutation, as ``DistributedSampler`` would.

    The loader is resumable (Lightning's stateful-loader protocol): :meth:`state_dict`
    holds the epoch and the batches already yielded in it, and after
    :meth:`load_state_dict` the next iteration continues that epoch's order at the
    next batch, so a run resumed from a mid-epoch checkpoint sees the same batches.

    Args:
        x: Inputs, shape ``(N, ...)``.
        y: Targets, shape ``(N, ...)``, a dict of such tensors, or None (predict).
        batch_size: Samples per batch. Defaults to 32.
        shuffle: Draw a new order every epoch. Defaults to False.
        drop_last: Drop the last incomplete batch. Defaults to False.
        seed: Seed of the shuffling order. Defaults to 0.
        epoch_source: Returns the epoch of the iteration that starts (a trainer's
            ``current_epoch``), or None to count iterations; a DataModule passes it so
            the order follows the trainer's epoch, also after a resume. Defaults to None.
        pin_memory: Yield batches in page-locked memory, so the copy to a CUDA GPU can
            run asynchronously (``dlkit-train`` turns it on when it trains on one).
            Defaults to False.

    Yields:
        ``(x_batch, y_batch)`` (or ``x_batch`` alone when ``y`` is None).

    Example:
        >>> loader = TensorBatchLoader(torch.randn(100, 4), torch.arange(100), batch_size=32)
        >>> len(loader), next(iter(loader))[0].shape
        (4, torch.Size([32, 4]))
    """

    def __init__(
        self,
        x: Tensor,
        y: Target | None = None,
        batch_size: int = 32,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        epoch_source: Callable[[], int | None] | None = None,
        pin_memory: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        if y is not None and _length(y) != len(x):
            raise ValueError(f"x has {len(x)} samples but y has {_length(y)}; they must match.")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch_source, self.pin_memory = epoch_source, pin_memory
        # The epoch the next iteration draws, and where the current one stands.
        self.epoch = 0
        self._current = (0, 0)  # (epoch, batches yielded)
        self._resume: tuple[int, int] | None = None

    def _rank_share(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _num_samples(self) -> int:
        _, world = self._rank_share()
        return len(self.x) // world if world > 1 else len(self.x)

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self, epoch: int) -> Tensor:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(n)
        rank, world = self._rank_share()
        if world > 1:  # equal shares, so every rank runs the same number of steps
            per_rank = n // world
            order = order[rank * per_rank : (rank + 1) * per_rank]
        return order

    def __iter__(self) -> Iterator[Any]:
        source = self.epoch_source() if self.epoch_source is not None else None
        resume, self._resume = self._resume, None
        # A restored position applies to its own epoch only: a trainer already past it
        # (its limit_train_batches reached) starts the next one.
        if resume is not None and source in (None, resume[0]):
            epoch, skip = resume
        else:
            epoch, skip = (self.epoch if source is None else source), 0
        self.epoch = epoch + 1
        order = self._order(epoch)
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            self._current = (epoch, start // self.batch_size + 1)
            x = _pinned(_index(self.x, idx)) if self.pin_memory else _index(self.x, idx)
            if self.y is None:
                yield x
            else:
                yield x, (_pinned(_index(self.y, idx)) if self.pin_memory else _index(self.y, idx))

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: the current epoch, the batches yielded in it, and its settings.

        Example:
            >>> loader = TensorBatchLoader(torch.randn(10, 2), None, batch_size=4, shuffle=True)
            >>> it = iter(loader); _ = next(it)
            >>> loader.state_dict()["epoch"], loader.state_dict()["batches"]
            (0, 1)
        """
        epoch, batches = self._current
        return {"epoch": epoch, "batches": batches, "num_samples": len(self.x), "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the next iteration resumes its epoch at its next batch.

        Raises:
            ValueError: The state was saved by a loader with other data or settings
                (a changed batch size or seed would silently change the order).
        """
        mine = self.state_dict()
        changed = [f"{k}: {state_dict[k]!r} -> {mine[k]!r}" for k in ("num_samples", "batch_size", "shuffle",
                                                                        "drop_last", "seed")
                   if k in state_dict and state_dict[k] != mine[k]]
        if changed:
            raise ValueError(
                "The checkpoint's data loader state does not fit this loader (" + "; ".join(changed)
                + "): resume with the data settings the run was started with."
            )
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        self._current = (epoch, batches)
        if batches >= len(self):  # that epoch was done: the next one starts afresh
            self.epoch, self._resume = epoch + 1, None
        else:
            self.epoch, self._resume = epoch, (epoch, batches)


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise a config-named error unless both fractions lie in [0, 1) and leave training data."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            "data.val_fraction and data.test_fraction must lie in [0, 1) and sum to less than 1, "
            f"got {val_fraction} and {test_fraction}."
        )


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Split indices into parts of the given fractions, keeping class proportions.

    Args:
        labels: Class label of each sample, shape ``(N,)``.
        fractions: One fraction per part, summing to 1 (e.g. ``(0.7, 0.15, 0.15)``).
        seed: The split is a pure function of ``labels`` and ``seed``.

    Returns:
        One sorted index array per part.

    Example:
        >>> train, val = stratified_split(np.array([0, 0, 1, 1]), (0.5, 0.5), seed=0)
    """
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6) or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}.")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions)[:-1]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        for part, chunk in zip(parts, np.split(idx, np.round(bounds * len(idx)).astype(int))):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def epoch_source(datamodule: L.LightningDataModule) -> Callable[[], int | None]:
    """What a DataModule's training loader asks for its epoch: the trainer's ``current_epoch``.

    With it (``TensorBatchLoader(..., epoch_source=epoch_source(self))``) the order of
    epoch ``e`` is the same in a run resumed at ``e`` as in the uninterrupted one; it
    answers None while no trainer is attached, and the loader then counts its epochs.

    Example:
        >>> epoch_source(TensorDataModule())() is None  # no trainer attached
        True
    """
    return partial(_trainer_epoch, datamodule)


def _trainer_epoch(datamodule: L.LightningDataModule) -> int | None:
    trainer = datamodule.trainer
    return trainer.current_epoch if trainer is not None else None


def shuffles_training(datamodule: L.LightningDataModule) -> bool:
    """Whether a DataModule's training loader should reshuffle each epoch.

    Always, except under ``Trainer(overfit_batches=N)``: Lightning turns shuffling off
    by swapping a ``DataLoader``'s sampler, which dlkit's in-memory loaders do not have,
    so they ask here and keep the same first ``N`` batches every epoch.

    Args:
        datamodule: The DataModule building the loader (its ``trainer`` may be None).

    Example:
        >>> shuffles_training(TensorDataModule())  # no trainer attached
        True
    """
    trainer = datamodule.trainer
    return not (trainer is not None and trainer.overfit_batches > 0)


class TensorDataModule(L.LightningDataModule):
    """A DataModule over in-memory tensors, batched by slicing.

    Subclasses fill ``self.splits`` (``{"train": (x, y), "val": ..., "test": ...}``) in
    :meth:`setup`; this class is also used directly by ``Classifier.fit((x, y))``.

    Args:
        train: ``(x, y)`` for training.
        val: ``(x, y)`` for validation. Defaults to None (no validation).
        test: ``(x, y)`` for testing. Defaults to None.
        batch_size: Samples per batch (all splits). Defaults to 32.
        seed: Seed of the shuffling order. Defaults to 0.

    Example:
        >>> dm = TensorDataModule(train=(torch.randn(64, 4), torch.randint(0, 3, (64,))))
        >>> dm.setup("fit"); len(dm.train_dataloader())
        2

    The data is in memory and batches are slices, so there are no loader workers to set;
    :attr:`pin_memory` (page-locked batches for an asynchronous copy to a CUDA GPU) is
    set per device by ``dlkit-train`` (:func:`dlkit.speed.pin_memory_for`).
    """

    pin_memory: bool = False

    def __init__(
        self,
        train: tuple[Tensor, Target] | None = None,
        val: tuple[Tensor, Target] | None = None,
        test: tuple[Tensor, Target] | None = None,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size}.")
        self.batch_size, self.seed = batch_size, seed
        self.splits: dict[str, tuple[Tensor, Target]] = {}
        for name, split in (("train", train), ("val", val), ("test", test)):
            if split is not None:
                self.splits[name] = split
        check_splits(self.splits)  # empty arrays, lengths that differ, NaN/inf: named before any step

    def example_input(self, n: int = 2) -> Tensor:
        """The first ``n`` training inputs, for summaries and graph logging."""
        self.setup("fit")
        return self.splits["train"][0][:n]

    def _loader(self, split: str, shuffle: bool = False) -> TensorBatchLoader:
        if split not in self.splits:
            raise ValueError(
                f"{type(self).__name__} has no {split!r} split (it has: {', '.join(self.splits) or 'none'})."
            )
        x, y = self.splits[split]
        return TensorBatchLoader(x, y, self.batch_size, shuffle=shuffle, seed=self.seed,
                                 epoch_source=epoch_source(self) if split == "train" else None,
                                 pin_memory=self.pin_memory)

    def state_dict(self) -> dict[str, Any]:
        """The state of the transforms this DataModule holds (their random generators).

        Lightning stores it in every checkpoint and restores it on resume, so
        augmentation continues its random stream instead of starting it again.
        """
        return {name: m.state_dict() for name, m in vars(self).items() if isinstance(m, torch.nn.Module)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for name, state in state_dict.items():
            module = getattr(self, name, None)
            if isinstance(module, torch.nn.Module):
                module.load_state_dict(state)

    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader("train", shuffle=shuffles_training(self))

    def val_dataloader(self) -> TensorBatchLoader | list:
        # Lightning skips validation for an empty list; a DataModule without a val split is fine.
        return self._loader("val") if "val" in self.splits else []

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test")

    def predict_dataloader(self) -> TensorBatchLoader:
        return self._loader("test")


def is_loader(data: Any) -> bool:
    """Whether ``data`` is a DataLoader-like iterable of batches.

    Arrays and tensors, tuples/lists of them, mappings and DataModules are not loaders.

    Args:
        data: What a user handed to ``fit``/``evaluate``/``predict``.

    Example:
        >>> is_loader(TensorBatchLoader(torch.zeros(4, 2), None, 2)), is_loader(torch.zeros(4, 2))
        (True, False)
    """
    return (
        hasattr(data, "__iter__")
        and not hasattr(data, "__array__")  # tensors and NumPy arrays
        and not isinstance(data, (tuple, list, Mapping, L.LightningDataModule))
    )


def _split_arrays(x: Tensor, y: Any, fraction: float) -> tuple[tuple[Tensor, Any], tuple[Tensor, Any]]:
    if not 0 < fraction < 1:
        raise ValueError(f"validation_split must lie in (0, 1), got {fraction}.")
    n_val = max(1, int(round(len(x) * fraction)))
    cut = len(x) - n_val
    ys = (lambda s: {k: v[s] for k, v in y.items()}) if isinstance(y, Mapping) else (lambda s: y[s])
    return (x[:cut], ys(slice(None, cut))), (x[cut:], ys(slice(cut, None)))


def _xy(data: Any, y: Any) -> tuple[Tensor, Any]:
    if y is None:
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError("Give array data as fit(x, y) or fit((x, y)); got inputs without targets.")
        data, y = data
    ty = {k: as_tensor(v) for k, v in y.items()} if isinstance(y, Mapping) else as_tensor(y)
    return as_tensor(data), ty


def arrays_to_datamodule(
    data: Any,
    y: Any = None,
    batch_size: int = 32,
    validation_data: Any = None,
    validation_split: float = 0.0,
    seed: int = 0,
) -> TensorDataModule:
    """A :class:`TensorDataModule` from Keras-style array arguments.

    Args:
        data: Inputs ``x`` ``(N, ...)`` (array, tensor or list) with ``y`` given, or a
            tuple ``(x, y)``.
        y: Targets ``(N, ...)``, or a dict of them per output. Defaults to None.
        batch_size: Samples per batch. Defaults to 32.
        validation_data: ``(x_val, y_val)``. Defaults to None.
        validation_split: Fraction held out for validation (the last samples, as Keras
            does) when ``validation_data`` is not given. Defaults to 0.
        seed: Seed of the shuffling order. Defaults to 0.

    Raises:
        ValueError: Inputs without targets, or a ``validation_split`` outside (0, 1).

    Example:
        >>> dm = arrays_to_datamodule(torch.randn(10, 3), torch.zeros(10), validation_split=0.2)
        >>> len(dm.splits["train"][0]), len(dm.splits["val"][0])
        (8, 2)
    """
    train = _xy(data, y)
    val = None
    if validation_data is not None:
        val = _xy(validation_data, None)
    elif validation_split:
        train, val = _split_arrays(*train, validation_split)
    return TensorDataModule(train=train, val=val, batch_size=batch_size, seed=seed)


def as_loader(data: Any, y: Any = None, batch_size: int = 256) -> Any:
    """``data`` itself when it is a loader, else a :class:`TensorBatchLoader` over ``(x, y)``.

    Args:
        data: A loader, inputs ``x`` with ``y``, or ``(x, y)``.
        y: Targets when ``data`` is ``x``. Defaults to None.
        batch_size: Samples per batch for array data. Defaults to 256.

    Example:
        >>> len(as_loader(torch.randn(10, 3), torch.zeros(10), batch_size=4))
        3
    """
    if is_loader(data):
        return data
    x, ty = _xy(data, y)
    check_arrays(x, ty, "evaluate data")
    return TensorBatchLoader(x, ty, batch_size)
