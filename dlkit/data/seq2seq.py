"""The shared base of sequence-to-sequence DataModules: vocabularies, padding, dict batches.

A subclass only says where its ``(source, target)`` string pairs come from
(:meth:`Seq2SeqDataModule.load_pairs`) and how its vocabularies are built
(:meth:`Seq2SeqDataModule.build_vocabs`); this base encodes the splits once, keeps
them in memory as padded id tensors, and serves the batches every seq2seq task reads::

    {"src":         LongTensor (B, S)   source ids, padded with <pad>, no <bos>/<eos>
     "src_lengths": LongTensor (B,)     valid source lengths, >= 1
     "tgt":         LongTensor (B, T)}  [<bos>, y_1..y_n, <eos>, <pad>...] (absent when predicting)

Every batch is padded to its own longest source and target (not the split's), so
short sentences do not pay for the longest one in the data set.

Raw source strings are encoded by one function, :func:`encode_sources`, whether a
DataModule encodes them or a reloaded ``Seq2Seq`` task with only its stored
vocabulary: the same ids, the same warnings and errors.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from dlkit.data.tensor import TensorBatchLoader, epoch_source, is_loader, shuffles_training
from dlkit.data.text import Vocab

__all__ = [
    "OVERLONG_POLICIES",
    "BatchList",
    "Seq2SeqBatchLoader",
    "Seq2SeqDataModule",
    "as_batches",
    "check_batch",
    "encode_sources",
    "limit_lengths",
    "normalize_text",
    "pad_sequences",
]

Pair = tuple[str, str]
SPLITS = ("train", "val", "test")
OVERLONG_POLICIES = ("truncate", "error")


def normalize_text(text: str) -> str:
    """Collapse runs of whitespace (no-break spaces included) into one space and strip the ends.

    Example:
        >>> normalize_text("  March\\u00a0 3,\\t1998 ")
        'March 3, 1998'
    """
    return " ".join(text.split())


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Stack id lists of different lengths into one right-padded tensor.

    Args:
        seqs: ``N`` id sequences.
        pad_id: Id written after the end of each sequence. Defaults to 0.

    Returns:
        ``(ids, lengths)``: ``ids`` LongTensor ``(N, L)`` with ``L`` the longest
        length, ``lengths`` LongTensor ``(N,)``.

    Example:
        >>> ids, lengths = pad_sequences([[5, 6, 7], [8]])
        >>> ids.tolist(), lengths.tolist()
        ([[5, 6, 7], [8, 0, 0]], [3, 1])
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = int(lengths.max()) if len(seqs) else 0
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    # All ids in one flat copy through a mask (row-major, as the sequences are):
    # a row-by-row copy costs a tensor per sequence.
    flat = torch.tensor(list(itertools.chain.from_iterable(seqs)), dtype=torch.long)
    ids[torch.arange(width) < lengths.unsqueeze(1)] = flat  # (N, L)
    return ids, lengths


def limit_lengths(
    seqs: list[list[int]],
    limit: int | None,
    on_overlong: Literal["truncate", "error"] = "truncate",
    key: str = "max_src_len",
    what: str = "inputs",
    texts: Sequence[str] | None = None,
) -> list[list[int]]:
    """Apply the over-long policy to id sequences longer than ``limit`` tokens.

    Args:
        seqs: ``N`` id sequences.
        limit: Most tokens a sequence may have, or None for no limit.
        on_overlong: ``"truncate"`` cuts longer sequences with one warning;
            ``"error"`` raises. Defaults to ``"truncate"``.
        key: The config key of ``limit``, named in the messages. Defaults to
            ``"max_src_len"``.
        what: What the sequences are, for the messages (``"inputs"``, ``"train
            sources"``). Defaults to ``"inputs"``.
        texts: The ``N`` strings the sequences encode, to quote the longest one.
            Defaults to None.

    Returns:
        ``seqs``, each cut to ``limit`` tokens.

    Raises:
        ValueError: A sequence is longer and ``on_overlong="error"``.

    Example:
        >>> limit_lengths([[4, 5, 6], [7]], 2)  # warns: 1 of 2 inputs are longer than ...
        [[4, 5], [7]]
    """
    if limit is None:
        return seqs
    over = [i for i, s in enumerate(seqs) if len(s) > limit]
    if not over:
        return seqs
    longest = max(over, key=lambda i: len(seqs[i]))
    quoted = f": {texts[longest]!r}" if texts is not None else ""
    detail = (
        f"{len(over)} of {len(seqs)} {what} are longer than data.{key}={limit} tokens "
        f"(the longest has {len(seqs[longest])}{quoted})"
    )
    if on_overlong == "error":
        raise ValueError(f"{detail}. Raise data.{key}, or set data.on_overlong=truncate to cut them.")
    warnings.warn(
        f"{detail}; they were truncated to {limit} tokens. Raise data.{key} to keep them whole.",
        stacklevel=3,
    )
    return [s[:limit] for s in seqs]


def encode_sources(
    texts: str | Sequence[str],
    vocab: Vocab,
    max_src_len: int | None = None,
    on_overlong: Literal["truncate", "error"] = "truncate",
    preprocess: Callable[[str], str] = normalize_text,
) -> dict[str, Tensor]:
    """Encode raw source strings into a predict batch.

    Each string is preprocessed (whitespace normalised by default), tokenised and
    mapped to ids; unknown tokens become ``<unk>`` and are reported in one warning;
    an over-long input follows ``on_overlong`` (:func:`limit_lengths`).

    Args:
        texts: Source strings (a single string is one input).
        vocab: The source vocabulary.
        max_src_len: Longest source in tokens, or None for no limit. Defaults to None.
        on_overlong: ``"truncate"`` (with a warning) or ``"error"``. Defaults to
            ``"truncate"``.
        preprocess: Applied to every string before tokenising. Defaults to
            :func:`normalize_text`.

    Returns:
        ``{"src": LongTensor (N, S), "src_lengths": LongTensor (N,)}``, padded with
        ``Vocab.pad_id``.

    Raises:
        TypeError: An input is not a string.
        ValueError: No input, an empty one (or only whitespace), or one too long
            with ``on_overlong="error"``.

    Example:
        >>> batch = encode_sources(["ab  c", "ca"], Vocab(list("abc ")))
        >>> batch["src"].tolist(), batch["src_lengths"].tolist()
        ([[4, 5, 7, 6], [6, 4, 0, 0]], [4, 2])
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("encode_sources needs at least one source string, got none.")
    cleaned = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Sources must be strings; input {i} is a {type(text).__name__}: {text!r}.")
        text = preprocess(text)
        if not text:
            raise ValueError(
                f"Input {i} is empty{' after normalising whitespace' if texts[i] else ''}: "
                "there is nothing to translate. Pass a non-empty string."
            )
        cleaned.append(text)
    unknown = {i: vocab.unknown_tokens(t) for i, t in enumerate(cleaned)}
    if unknown := {i: toks for i, toks in unknown.items() if toks}:
        first = list(unknown.items())[:5]
        shown = "; ".join(f"input {i} {cleaned[i]!r}: {toks}" for i, toks in first)
        more = f" (and {len(unknown) - 5} more inputs)" if len(unknown) > 5 else ""
        warnings.warn(
            f"{len(unknown)} of {len(cleaned)} inputs hold tokens the source vocabulary does not "
            f"know; they were mapped to {Vocab.UNK}: {shown}{more}.",
            stacklevel=3,
        )
    ids = [vocab.encode(t) for t in cleaned]
    ids = limit_lengths(ids, max_src_len, on_overlong, "max_src_len", "inputs", cleaned)
    src, lengths = pad_sequences(ids, Vocab.pad_id)
    return {"src": src, "src_lengths": lengths}


def check_batch(batch: Any, need_target: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(src, src_lengths, tgt)`` of a seq2seq batch, with a clear error for anything else.

    Args:
        batch: ``{"src": (B, S), "src_lengths": (B,), "tgt": (B, T)}``, ``T >= 2``.
        need_target: Whether ``"tgt"`` is required (False for predict batches).
            Defaults to True.

    Returns:
        The three tensors (``tgt`` None when absent and not needed).

    Raises:
        ValueError: A missing key or a tensor of the wrong shape.

    Example:
        >>> src, lengths, tgt = check_batch({"src": torch.ones(2, 3, dtype=torch.long),
        ...     "src_lengths": torch.tensor([3, 1]), "tgt": torch.ones(2, 4, dtype=torch.long)})
    """
    required = ("src", "src_lengths", "tgt") if need_target else ("src", "src_lengths")
    if not isinstance(batch, Mapping) or any(k not in batch for k in required):
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(
            f"Seq2Seq expects dict batches with keys {list(required)} (a seq2seq DataModule such as "
            f"DateTranslationDataModule makes them), got {got}."
        )
    src, src_lengths = batch["src"], batch["src_lengths"]
    if src.ndim != 2 or src_lengths.shape != (src.shape[0],):
        raise ValueError(
            f"batch['src'] must be (B, S) and batch['src_lengths'] (B,), got {tuple(src.shape)} and "
            f"{tuple(src_lengths.shape)}."
        )
    tgt = batch.get("tgt")
    if need_target and (tgt.ndim != 2 or tgt.shape[0] != src.shape[0] or tgt.shape[1] < 2):
        raise ValueError(
            f"batch['tgt'] must be (B, T) with T >= 2 ([bos, ..., eos]) for src {tuple(src.shape)}, "
            f"got {tuple(tgt.shape)}."
        )
    return src, src_lengths, tgt


class BatchList:
    """Ready dict batches as one loader (Lightning would read a plain list as several loaders).

    Args:
        batches: ``{"src", "src_lengths", "tgt"}`` dicts.

    Example:
        >>> loader = BatchList([{"src": src, "src_lengths": lengths, "tgt": tgt}])
        >>> len(loader)
        1
    """

    def __init__(self, batches: list[Mapping[str, Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Mapping[str, Tensor]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def as_batches(data: Any) -> Any:
    """``data`` as something ``Trainer.fit/test`` takes: a DataModule, a loader, or a :class:`BatchList`.

    Args:
        data: A seq2seq DataModule, a loader, or a non-empty list of dict batches.

    Raises:
        TypeError: Anything else (arrays, for instance); the message says what is accepted.

    Example:
        >>> len(as_batches([{"src": src, "src_lengths": lengths, "tgt": tgt}]))
        1
    """
    if isinstance(data, L.LightningDataModule) or is_loader(data):
        return data
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, Mapping) for b in data):
        return BatchList(list(data))
    raise TypeError(
        "Seq2Seq takes a seq2seq DataModule (DateTranslationDataModule, ParallelTextDataModule), "
        f"a loader or a list of {{'src', 'src_lengths', 'tgt'}} dict batches, got {type(data).__name__}."
    )


class Seq2SeqBatchLoader:
    """Iterate over padded source/target tensors in dict batches, like a ``DataLoader``.

    Shuffling, distributed shares, ``drop_last`` and the resumable state are those of
    :class:`~dlkit.data.TensorBatchLoader` (one permutation per epoch from ``seed``
    + epoch); each batch is then cut to its longest source and target.

    Args:
        src: Source ids, ``(N, S)``, right-padded with ``pad_id``.
        src_lengths: Valid source lengths, ``(N,)``.
        tgt: Target ids ``(N, T)`` (``[bos, ..., eos, pad...]``), or None for
            predict batches. Defaults to None.
        batch_size: Pairs per batch. Defaults to 64.
        shuffle: Draw a new order every epoch. Defaults to False.
        drop_last: Drop the last incomplete batch. Defaults to False.
        seed: Seed of the shuffling order. Defaults to 0.
        pad_id: The padding id. Defaults to 0.
        epoch_source: The epoch of an iteration that starts, or None. Defaults to None.

    Yields:
        ``{"src": (B, S_b), "src_lengths": (B,), "tgt": (B, T_b)}`` with ``S_b`` /
        ``T_b`` the batch's longest source / target (no ``"tgt"`` without targets).

    Example:
        >>> src, lengths = pad_sequences([[4, 5, 6], [7]])
        >>> batch = next(iter(Seq2SeqBatchLoader(src, lengths, batch_size=2)))
        >>> batch["src"].shape, batch["src_lengths"].tolist()
        (torch.Size([2, 3]), [3, 1])
    """

    def __init__(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt: Tensor | None = None,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        pad_id: int = 0,
        epoch_source: Callable[[], int | None] | None = None,
    ) -> None:
        N = len(src)
        if len(src_lengths) != N or (tgt is not None and len(tgt) != N):
            got = [len(src), len(src_lengths)] + ([len(tgt)] if tgt is not None else [])
            raise ValueError(f"src, src_lengths and tgt must hold the same number of rows, got {got}.")
        self.src, self.src_lengths, self.tgt, self.pad_id = src, src_lengths, tgt, pad_id
        # Lengths of the targets, to cut each batch to its own longest.
        self.tgt_lengths = (tgt != pad_id).sum(1) if tgt is not None else None
        self._order = TensorBatchLoader(torch.arange(N), None, batch_size, shuffle, drop_last, seed, epoch_source)

    @property
    def batch_size(self) -> int:
        return self._order.batch_size

    def __len__(self) -> int:
        return len(self._order)

    # Resumable as the order it follows: its epoch and position (TensorBatchLoader.state_dict).
    state_dict = property(lambda self: self._order.state_dict)
    load_state_dict = property(lambda self: self._order.load_state_dict)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for idx in self._order:
            lengths = self.src_lengths[idx]
            batch = {"src": self.src[idx, : int(lengths.max())], "src_lengths": lengths}  # (B, S_b), (B,)
            if self.tgt is not None:
                batch["tgt"] = self.tgt[idx, : int(self.tgt_lengths[idx].max())]  # (B, T_b)
            yield batch


class Seq2SeqDataModule(L.LightningDataModule):
    """Base class of DataModules that yield ``{"src", "src_lengths", "tgt"}`` dict batches.

    Subclasses implement :meth:`load_pairs` (the raw ``(source, target)`` strings of
    each split) and :meth:`build_vocabs`; :meth:`preprocess` may normalise text
    further (it runs on the data and on :meth:`encode_sources`' inputs alike).
    Everything else is here: encoding, the length limit, loaders, ``model_hints``,
    and the vocabularies in the checkpoint (``state_dict``/``load_state_dict``), so a
    reloaded run encodes raw strings exactly as in training.

    Args:
        batch_size: Pairs per batch. Defaults to 64.
        max_src_len: Longest source in tokens, or None for no limit. Defaults to None.
        max_tgt_len: Longest target in tokens, ``<bos>``/``<eos>`` not counted, or
            None for no limit. Defaults to None.
        on_overlong: What happens to a longer sequence (in the data or passed to
            :meth:`encode_sources`): ``"truncate"`` cuts it with a warning (one per
            call), ``"error"`` raises a ValueError. A truncated target keeps its
            ``<eos>``. Defaults to ``"truncate"``.
        seed: Seed of the training order. Defaults to 0.

    Example:
        >>> class Pairs(Seq2SeqDataModule):
        ...     def load_pairs(self):
        ...         return {"train": [("ab", "ba"), ("abc", "cba")], "val": [("ca", "ac")]}
        ...     def build_vocabs(self, train_pairs):
        ...         return Vocab(list("abc")), Vocab(list("abc"))
        >>> dm = Pairs(batch_size=2)
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch["src"].shape, batch["tgt"].shape
        (torch.Size([2, 3]), torch.Size([2, 5]))
    """

    def __init__(
        self,
        batch_size: int = 64,
        max_src_len: int | None = None,
        max_tgt_len: int | None = None,
        on_overlong: Literal["truncate", "error"] = "truncate",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size!r}.")
        for key, value in (("max_src_len", max_src_len), ("max_tgt_len", max_tgt_len)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"data.{key} must be a positive integer or null, got {value!r}.")
        if on_overlong not in OVERLONG_POLICIES:
            raise ValueError(f"data.on_overlong must be 'truncate' or 'error', got {on_overlong!r}.")
        self.batch_size, self.seed = batch_size, seed
        self.max_src_len, self.max_tgt_len, self.on_overlong = max_src_len, max_tgt_len, on_overlong
        self._pairs: dict[str, list[Pair]] = {}
        self._tensors: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._src_vocab: Vocab | None = None
        self._tgt_vocab: Vocab | None = None

    # ------------------------------------------------------------ subclass hooks
    def load_pairs(self) -> dict[str, list[Pair]]:
        """Return the ``(source, target)`` strings of each split (``"train"`` required)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_pairs().")

    def build_vocabs(self, train_pairs: list[Pair]) -> tuple[Vocab, Vocab]:
        """Return ``(src_vocab, tgt_vocab)``, built from the training pairs only."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_vocabs().")

    def preprocess(self, text: str) -> str:
        """Normalise one source or target string before tokenising (whitespace here)."""
        return normalize_text(text)

    # ------------------------------------------------------------ the contract
    @property
    def src_vocab(self) -> Vocab:
        """The source vocabulary (built from the training split on first use)."""
        if self._src_vocab is None:
            self.setup()
        assert self._src_vocab is not None
        return self._src_vocab

    @property
    def tgt_vocab(self) -> Vocab:
        """The target vocabulary (built from the training split on first use)."""
        if self._tgt_vocab is None:
            self.setup()
        assert self._tgt_vocab is not None
        return self._tgt_vocab

    @property
    def splits(self) -> tuple[str, ...]:
        """Names of the non-empty splits, e.g. ``("train", "val", "test")``."""
        self.setup()
        return tuple(self._tensors)

    def model_hints(self) -> dict[str, int]:
        """Model settings this data implies; ``null`` model keys are filled from them.

        Returns:
            ``{"src_vocab_size", "tgt_vocab_size", "pad_id": 0, "bos_id": 1, "eos_id": 2}``.
        """
        return {
            "src_vocab_size": len(self.src_vocab),
            "tgt_vocab_size": len(self.tgt_vocab),
            "pad_id": Vocab.pad_id,
            "bos_id": Vocab.bos_id,
            "eos_id": Vocab.eos_id,
        }

    def examples(self, split: str) -> list[Pair]:
        """The preprocessed ``(source, target)`` strings of a split, in unshuffled loader order.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Example:
            >>> src, ref = dm.examples("val")[0]
        """
        self.setup()
        if split not in self._pairs or not self._pairs[split]:
            have = ", ".join(s for s in SPLITS if self._pairs.get(s)) or "none"
            raise ValueError(f"{type(self).__name__} has no {split!r} split (it has: {have}).")
        return list(self._pairs[split])

    def encode_sources(self, texts: str | Sequence[str]) -> dict[str, Tensor]:
        """Encode raw source strings into a predict batch, as the training data was encoded.

        :func:`encode_sources` with this DataModule's vocabulary, length limit,
        ``on_overlong`` and :meth:`preprocess`: unknown tokens become ``<unk>`` and are
        reported in one warning; an over-long input is truncated with a warning or
        refused.

        Args:
            texts: Source strings (a single string is one input).

        Returns:
            ``{"src": LongTensor (N, S), "src_lengths": LongTensor (N,)}``.

        Raises:
            ValueError: An input is empty (or only whitespace), or is too long and
                ``on_overlong="error"``.

        Example:
            >>> batch = dm.encode_sources(["3rd of March 1998", "Tue 03/03/98"])
            >>> batch["src"].shape
            torch.Size([2, 17])
        """
        return encode_sources(texts, self.src_vocab, self.max_src_len, self.on_overlong, self.preprocess)

    # ------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Load the pairs, build the vocabularies (unless restored) and encode every split once."""
        if self._pairs:  # setup runs once per stage; the data never changes
            return
        pairs = self.load_pairs()
        if unknown := set(pairs) - set(SPLITS):
            raise ValueError(f"load_pairs() returned unknown splits {sorted(unknown)}; use {SPLITS}.")
        pairs = {
            split: [(self.preprocess(s), self.preprocess(t)) for s, t in pairs.get(split) or []]
            for split in SPLITS
        }
        if not pairs["train"]:
            raise ValueError(f"{type(self).__name__} has no training pairs; check its data source.")
        if self._src_vocab is None or self._tgt_vocab is None:
            self._src_vocab, self._tgt_vocab = self.build_vocabs(pairs["train"])
        self._pairs = pairs
        self._encode_splits()

    def train_dataloader(self) -> Seq2SeqBatchLoader:
        return self._loader("train", shuffle=shuffles_training(self))

    def val_dataloader(self) -> Seq2SeqBatchLoader | list:
        # Lightning skips validation for an empty list.
        return self._loader("val") if "val" in self.splits else []

    def test_dataloader(self) -> Seq2SeqBatchLoader:
        return self._loader("test")

    def predict_dataloader(self) -> Seq2SeqBatchLoader:
        """The test sources (no ``"tgt"`` key), in order."""
        return self._loader("test", with_targets=False)

    def state_dict(self) -> dict[str, Any]:
        """The vocabularies, JSON-able; Lightning stores them in every checkpoint."""
        if self._src_vocab is None or self._tgt_vocab is None:
            return {}
        return {"src_vocab": self._src_vocab.state_dict(), "tgt_vocab": self._tgt_vocab.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Use a checkpoint's vocabularies (they match the network's embeddings)."""
        if not state_dict:
            return
        src = Vocab.from_state_dict(state_dict["src_vocab"])
        tgt = Vocab.from_state_dict(state_dict["tgt_vocab"])
        if (src, tgt) == (self._src_vocab, self._tgt_vocab):
            return
        if self._src_vocab is not None:
            warnings.warn(
                f"The checkpoint's vocabularies (sizes {len(src)}/{len(tgt)}) differ from the ones "
                f"built from the data (sizes {len(self._src_vocab)}/{len(self._tgt_vocab or [])}); the "
                "checkpoint's are used, as the network was trained with them.",
                stacklevel=2,
            )
        self._src_vocab, self._tgt_vocab = src, tgt
        if self._pairs:
            self._encode_splits()

    # ------------------------------------------------------------ internals
    def _encode_splits(self) -> None:
        src_vocab, tgt_vocab = self.src_vocab, self.tgt_vocab
        self._tensors = {}
        for split, pairs in self._pairs.items():
            if not pairs:
                continue
            sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
            src_ids = [src_vocab.encode(s) for s in sources]
            src_ids = limit_lengths(
                src_ids, self.max_src_len, self.on_overlong, "max_src_len", f"{split} sources", sources
            )
            if empty := [i for i, ids in enumerate(src_ids) if not ids]:
                raise ValueError(f"{split} source {empty[0]} ({sources[empty[0]]!r}) has no tokens.")
            tgt_ids = [tgt_vocab.encode(t) for t in targets]
            tgt_ids = limit_lengths(
                tgt_ids, self.max_tgt_len, self.on_overlong, "max_tgt_len", f"{split} targets", targets
            )
            src, src_lengths = pad_sequences(src_ids, Vocab.pad_id)
            tgt, _ = pad_sequences([[Vocab.bos_id, *ids, Vocab.eos_id] for ids in tgt_ids], Vocab.pad_id)
            self._tensors[split] = (src, src_lengths, tgt)

    def _loader(self, split: str, shuffle: bool = False, with_targets: bool = True) -> Seq2SeqBatchLoader:
        self.setup()
        if split not in self._tensors:
            have = ", ".join(self._tensors) or "none"
            raise ValueError(f"{type(self).__name__} has no {split!r} split (it has: {have}).")
        src, src_lengths, tgt = self._tensors[split]
        tgt = tgt if with_targets else None
        return Seq2SeqBatchLoader(src, src_lengths, tgt, self.batch_size, shuffle=shuffle, seed=self.seed,
                                  epoch_source=epoch_source(self) if split == "train" else None)

