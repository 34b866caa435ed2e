"""Your own translation pairs: a tab-separated ``source<TAB>target`` file (Tatoeba style).

Tatoeba / manythings.org files (``fra.txt``, ``deu.txt``...) hold one pair per line
and a third column with the attribution; extra columns are ignored. The pairs are
split by *source sentence*: all translations of one sentence land in the same split,
so the test set never asks for a sentence seen in training.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from dlkit.data.seq2seq import Pair, Seq2SeqDataModule, normalize_text
from dlkit.data.tensor import check_split_fractions
from dlkit.data.text import Vocab

__all__ = ["ParallelTextDataModule", "read_parallel_text"]


def read_parallel_text(path: str | Path) -> list[Pair]:
    """Read ``source<TAB>target[<TAB>anything...]`` lines from a UTF-8 file.

    Blank lines are skipped; columns after the second are ignored; both sides are
    stripped of surrounding whitespace.

    Args:
        path: The file.

    Returns:
        The ``(source, target)`` pairs, in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A line has no tab, an empty side, or is not UTF-8; the message
            names the file, the line number and the line's content.

    Example:
        >>> read_parallel_text("fra.txt")[:2]
        [('Go.', 'Va !'), ('Hi.', 'Salut !')]
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Parallel text file {str(path)!r} does not exist. Set data.path to a UTF-8 file with "
            "one 'source<TAB>target' pair per line."
        )
    pairs: list[Pair] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}, line {lineno}: not valid UTF-8 ({err.reason} at byte {err.start}): {raw!r}. "
                    "Re-save the file as UTF-8."
                ) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2 or not cols[0].strip() or not cols[1].strip():
                if len(cols) < 2:
                    problem = "no tab"
                else:
                    problem = "an empty source" if not cols[0].strip() else "an empty target"
                raise ValueError(
                    f"{path}, line {lineno}: expected 'source<TAB>target', got {problem}: {line!r}."
                )
            pairs.append((cols[0].strip(), cols[1].strip()))
    if not pairs:
        raise ValueError(f"{path} holds no 'source<TAB>target' pairs (it is empty or blank).")
    return pairs


class ParallelTextDataModule(Seq2SeqDataModule):
    """Translation pairs from a tab-separated file, split by source sentence, kept in memory.

    The unique source sentences are shuffled with ``random.Random(seed)`` and cut
    into test, validation and training shares; each pair follows its source. Both
    vocabularies are built from the training pairs only, so val/test words unseen
    in training become ``<unk>`` (as they would for a user). Batches are padded to
    their own longest sequence (see :class:`~dlkit.data.seq2seq.Seq2SeqDataModule`).

    Args:
        path: The UTF-8 file, one ``source<TAB>target[<TAB>...]`` per line (see
            :func:`read_parallel_text`). Required; None fails when loading.
            Defaults to None.
        src_level: ``"word"`` (words and punctuation marks) or ``"char"``.
            Defaults to ``"word"``.
        tgt_level: ``"word"`` or ``"char"``. Defaults to ``"word"``.
        min_freq: Tokens seen fewer times in training map to ``<unk>``. Defaults to 1.
        max_vocab_size: At most this many tokens per vocabulary (specials on top),
            or None. Defaults to None.
        val_fraction: Share of the source sentences for validation. Defaults to 0.1.
        test_fraction: Share of the source sentences for testing. Defaults to 0.1.
        lowercase: Lowercase both sides (and :meth:`encode_sources`' inputs).
            Defaults to False.
        max_src_len: Longest source in tokens, or None. Defaults to None.
        max_tgt_len: Longest target in tokens (without ``<bos>``/``<eos>``), or None.
            Defaults to None.
        on_overlong: ``"truncate"`` (with a warning) or ``"error"`` for longer
            sequences. Defaults to ``"truncate"``.
        seed: Seed of the split and of the training order. Defaults to 42.
        batch_size: Pairs per batch. Defaults to 64.

    Example:
        >>> dm = ParallelTextDataModule("fra.txt", lowercase=True, max_src_len=20)
        >>> dm.model_hints()["src_vocab_size"]
        >>> batch = next(iter(dm.train_dataloader()))   # {"src", "src_lengths", "tgt"}
    """

    def __init__(
        self,
        path: str | Path | None = None,
        src_level: Literal["word", "char"] = "word",
        tgt_level: Literal["word", "char"] = "word",
        min_freq: int = 1,
        max_vocab_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        lowercase: bool = False,
        max_src_len: int | None = None,
        max_tgt_len: int | None = None,
        on_overlong: Literal["truncate", "error"] = "truncate",
        seed: int = 42,
        batch_size: int = 64,
    ) -> None:
        super().__init__(
            batch_size=batch_size, max_src_len=max_src_len, max_tgt_len=max_tgt_len,
            on_overlong=on_overlong, seed=seed,
        )  # fmt: skip
        for key, level in (("src_level", src_level), ("tgt_level", tgt_level)):
            if level not in ("word", "char"):
                raise ValueError(f"data.{key} must be 'word' or 'char', got {level!r}.")
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"data.min_freq must be an integer >= 1, got {min_freq!r}.")
        if max_vocab_size is not None and (not isinstance(max_vocab_size, int) or max_vocab_size < 1):
            raise ValueError(
                f"data.max_vocab_size must be a positive integer or null, got {max_vocab_size!r}."
            )
        check_split_fractions(val_fraction, test_fraction)
        self.path = path
        self.src_level, self.tgt_level = src_level, tgt_level
        self.min_freq, self.max_vocab_size = min_freq, max_vocab_size
        self.val_fraction, self.test_fraction, self.lowercase = val_fraction, test_fraction, lowercase

    def preprocess(self, text: str) -> str:
        """Normalise whitespace (no-break spaces included) and, with ``lowercase``, case."""
        text = normalize_text(text)
        return text.lower() if self.lowercase else text

    def load_pairs(self) -> dict[str, list[Pair]]:
        """Read the file and split it by source sentence."""
        if self.path is None:
            raise ValueError(
                "ParallelTextDataModule needs a file: set data.path=/path/to/pairs.tsv "
                "(one 'source<TAB>target' pair per line)."
            )
        pairs = read_parallel_text(self.path)
        # Split what the model sees: sentences equal after preprocessing are one sentence.
        sources = list(dict.fromkeys(self.preprocess(s) for s, _ in pairs))
        random.Random(self.seed).shuffle(sources)
        n_test = round(self.test_fraction * len(sources))
        n_val = round(self.val_fraction * len(sources))
        if n_test + n_val >= len(sources):
            raise ValueError(
                f"{self.path} has {len(sources)} distinct source sentences; "
                f"val_fraction={self.val_fraction} and test_fraction={self.test_fraction} leave none "
                "for training. Use more data or smaller fractions."
            )
        split_of = {s: "test" for s in sources[:n_test]}
        split_of.update({s: "val" for s in sources[n_test : n_test + n_val]})
        out: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
        for src, tgt in pairs:
            out[split_of.get(self.preprocess(src), "train")].append((src, tgt))
        return out

    def build_vocabs(self, train_pairs: list[Pair]) -> tuple[Vocab, Vocab]:
        """Source and target vocabularies of the training pairs (``min_freq``, ``max_vocab_size``)."""
        src = Vocab.build((s for s, _ in train_pairs), self.src_level, self.min_freq, self.max_vocab_size)
        tgt = Vocab.build((t for _, t in train_pairs), self.tgt_level, self.min_freq, self.max_vocab_size)
        return src, tgt
