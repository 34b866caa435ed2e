"""Text to token ids and back: a character- or word-level vocabulary with four specials.

Every vocabulary starts with the same four special tokens at fixed ids, so a model,
a task and a DataModule agree on them without asking each other::

    0 <pad>   padding (ignored by the loss, never attended to)
    1 <bos>   begin of sequence (the decoder's first input)
    2 <eos>   end of sequence (decoding stops there)
    3 <unk>   any token the vocabulary does not know

A :class:`Vocab` is plain data (its tokens and level); :meth:`Vocab.state_dict` is
JSON-able, so it travels inside a checkpoint and ``predict`` on raw strings works
after reloading.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = ["Vocab", "detokenize_words", "tokenize_words"]

_LEVELS = ("char", "word")

# A word keeps inner apostrophes, hyphens, dots, commas, colons and slashes ("don't",
# "well-known", "3.5", "10:30", "e.g"); any other non-space character is a token alone,
# so "home." and "home" share the token "home" instead of doubling the vocabulary.
_WORD_RE = re.compile(r"\w+(?:[-'’.,:/]\w+)*|[^\w\s]")
# Written without a space before (closing) or after (opening) them.
_CLOSING = frozenset(".,!?;:%)]}»”’…")
_OPENING = frozenset("([{«“‘¿¡")


def tokenize_words(text: str) -> list[str]:
    """Split text into words and punctuation marks.

    Args:
        text: Any string.

    Returns:
        The tokens; whitespace only separates them.

    Example:
        >>> tokenize_words("I'm home. Are you?")
        ["I'm", 'home', '.', 'Are', 'you', '?']
    """
    return _WORD_RE.findall(text)


def detokenize_words(tokens: Iterable[str]) -> str:
    """Join word-level tokens into text, the inverse of :func:`tokenize_words`.

    Tokens are joined by single spaces, except before closing punctuation, after
    opening brackets, and inside straight double quotes. For text written that way
    (the usual English spacing), ``detokenize_words(tokenize_words(s)) == s``.

    Args:
        tokens: Word-level tokens.

    Returns:
        The text.

    Example:
        >>> detokenize_words(["I'm", "home", ".", "Are", "you", "?"])
        "I'm home. Are you?"
    """
    out: list[str] = []
    quote_open = False
    glue_next = True  # no space before the first token
    for tok in tokens:
        if tok == '"':
            # A straight quote opens or closes, alternately.
            if quote_open:
                out.append(tok)
                glue_next = False
            else:
                out.append(tok if glue_next else " " + tok)
                glue_next = True
            quote_open = not quote_open
            continue
        glue = glue_next or tok in _CLOSING
        out.append(tok if glue else " " + tok)
        glue_next = tok in _OPENING
    return "".join(out)


class Vocab:
    """A vocabulary: tokens <-> ids, with ``<pad> <bos> <eos> <unk>`` at ids 0-3.

    Args:
        tokens: The ordinary tokens, without the specials; they get ids 4, 5, ...
            in this order.
        level: ``"char"`` (every character is a token) or ``"word"`` (words and
            punctuation marks, see :func:`tokenize_words`). Defaults to ``"char"``.

    Call arguments of :meth:`encode`:
        text: A string.
        add_bos / add_eos: Prepend ``<bos>`` / append ``<eos>``. Default to False.

    Returns of :meth:`encode`:
        A list of ids, length ``len(tokenize(text)) (+1) (+1)``; unknown tokens
        become ``unk_id``.

    Example:
        >>> vocab = Vocab.build(["march 3, 1998", "1998-03-03"])
        >>> ids = vocab.encode("march 3", add_eos=True)
        >>> vocab.decode(ids)
        'march 3'
        >>> vocab.encode("z")
        [3]
    """

    PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
    SPECIALS = (PAD, BOS, EOS, UNK)
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str], level: str = "char") -> None:
        if level not in _LEVELS:
            raise ValueError(f"Vocab level must be 'char' or 'word', got {level!r}.")
        tokens = list(tokens)
        if bad := [t for t in tokens if not isinstance(t, str) or not t]:
            raise ValueError(f"Vocab tokens must be non-empty strings, got {bad[:5]!r}.")
        if specials := sorted(set(tokens) & set(self.SPECIALS)):
            raise ValueError(
                f"Vocab tokens must not include the specials {specials}; they are added at ids 0-3."
            )
        if len(set(tokens)) != len(tokens):
            dupes = sorted(t for t, c in Counter(tokens).items() if c > 1)
            raise ValueError(f"Vocab tokens must be unique, got duplicates {dupes[:10]!r}.")
        if level == "char" and (long := [t for t in tokens if len(t) != 1]):
            raise ValueError(f"A char-level Vocab holds single characters, got {long[:5]!r}.")
        self.level = level
        self.itos: list[str] = [*self.SPECIALS, *tokens]
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        level: str = "char",
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocab:
        """Build a vocabulary from texts, most frequent tokens first.

        Args:
            texts: The texts to count tokens in (usually the training split).
            level: ``"char"`` or ``"word"``. Defaults to ``"char"``.
            min_freq: Keep only tokens seen at least this often; rarer ones will
                map to ``<unk>``. Defaults to 1.
            max_size: Keep at most this many ordinary tokens (the four specials
                come on top), or None for all. Defaults to None.

        Returns:
            The vocabulary; ties in frequency are ordered alphabetically, so the
            same texts always give the same ids.

        Example:
            >>> Vocab.build(["a cat", "a dog"], level="word", min_freq=2).itos
            ['<pad>', '<bos>', '<eos>', '<unk>', 'a']
        """
        if level not in _LEVELS:
            raise ValueError(f"Vocab level must be 'char' or 'word', got {level!r}.")
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}.")
        if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
            raise ValueError(f"max_size must be an integer >= 0 or None, got {max_size!r}.")
        if isinstance(texts, str):
            raise TypeError(
                "Vocab.build takes an iterable of texts, got a single string; wrap it in a list."
            )
        counts: Counter[str] = Counter()
        split = list if level == "char" else tokenize_words
        for text in texts:
            counts.update(split(text))
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(kept[:max_size] if max_size is not None else kept, level=level)

    # ------------------------------------------------------------------ text <-> ids
    def tokenize(self, text: str) -> list[str]:
        """Split text into this vocabulary's tokens (characters or words).

        Example:
            >>> Vocab([], level="word").tokenize("Go home!")
            ['Go', 'home', '!']
        """
        return list(text) if self.level == "char" else tokenize_words(text)

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``; unknown tokens become ``unk_id`` (see class docstring)."""
        if not isinstance(text, str):
            raise TypeError(f"Vocab.encode takes a string, got {type(text).__name__}.")
        tokens = self.tokenize(text)
        ids = list(map(self.stoi.get, tokens, itertools.repeat(self.unk_id, len(tokens))))
        head = [self.bos_id] if add_bos else []
        tail = [self.eos_id] if add_eos else []
        return head + ids + tail

    def unknown_tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` this vocabulary does not know, in order, without repeats.

        Example:
            >>> Vocab(list("abc")).unknown_tokens("abzcyz")
            ['z', 'y']
        """
        return list(dict.fromkeys(t for t in self.tokenize(text) if t not in self.stoi))

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> str:
        """Text of a sequence of ids.

        Args:
            ids: Token ids (a list, or a 1-D tensor / array).
            strip_special: Stop at the first ``<eos>`` and drop ``<pad>`` and
                ``<bos>``; ``<unk>`` stays visible as ``"<unk>"`` so a lossy encoding
                is never silent. Defaults to True.

        Returns:
            The text: characters concatenated, or words joined by
            :func:`detokenize_words`.

        Example:
            >>> vocab = Vocab(list("0123456789-"))
            >>> vocab.decode([1, 5, 14, 2, 0, 0])
            '1-'
        """
        tokens: list[str] = []
        size = len(self.itos)
        for i in _as_int_list(ids):
            if not 0 <= i < size:
                raise ValueError(f"Token id {i} is outside this vocabulary (ids 0..{size - 1}).")
            if strip_special:
                if i == self.eos_id:
                    break
                if i in (self.pad_id, self.bos_id):
                    continue
            tokens.append(self.itos[i])
        return "".join(tokens) if self.level == "char" else detokenize_words(tokens)

    # ------------------------------------------------------------------ container API
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __iter__(self) -> Iterator[str]:
        return iter(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.level == other.level and self.itos == other.itos

    def __hash__(self) -> int:
        return hash((self.level, tuple(self.itos)))

    def __repr__(self) -> str:
        preview = ", ".join(repr(t) for t in self.itos[4:12])
        more = ", ..." if len(self.itos) > 12 else ""
        return f"Vocab(size={len(self)}, level={self.level!r}, tokens=[{preview}{more}])"

    @property
    def tokens(self) -> list[str]:
        """The ordinary tokens (ids 4, 5, ...), without the specials."""
        return self.itos[len(self.SPECIALS):]

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """A JSON-able description, ``{"tokens": [...], "level": "char"}`` (specials left out).

        Example:
            >>> Vocab.from_state_dict(vocab.state_dict()) == vocab
            True
        """
        return {"tokens": self.tokens, "level": self.level}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Vocab:
        """Rebuild a vocabulary from :meth:`state_dict`'s output."""
        if not isinstance(state, dict) or "tokens" not in state:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"A Vocab state dict needs 'tokens' (and 'level'), got {got}.")
        return cls(state["tokens"], level=state.get("level", "char"))


def _as_int_list(ids: Iterable[int]) -> list[int]:
    tolist = getattr(ids, "tolist", None)  # tensors and arrays convert in one call
    values = tolist() if tolist is not None else list(ids)
    if isinstance(values, int):
        raise ValueError("Vocab.decode takes a 1-D sequence of ids, got a single id (a 0-d tensor?).")
    if values and isinstance(values[0], list):
        raise ValueError("Vocab.decode takes a 1-D sequence of ids; decode a batch row by row.")
    return [int(i) for i in values]
