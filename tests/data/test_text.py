"""The vocabulary, padding and the dict-batch loader shared by the seq2seq DataModules."""

from __future__ import annotations

import json

import pytest
import torch

from dlkit.data.seq2seq import Seq2SeqBatchLoader, normalize_text, pad_sequences
from dlkit.data.text import Vocab, detokenize_words, tokenize_words


def test_specials_have_fixed_ids() -> None:
    vocab = Vocab(list("abc"))
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert [vocab.stoi[t] for t in (Vocab.PAD, Vocab.BOS, Vocab.EOS, Vocab.UNK)] == [0, 1, 2, 3]
    assert len(vocab) == 7 and vocab.tokens == ["a", "b", "c"] and vocab.stoi["a"] == 4
    assert len(Vocab([], level="word")) == 4


@pytest.mark.parametrize(
    "text", ["3rd of March 1998", "Tue 03/03/98", "  spaces  kept ", "ÉTÉ, ça va? ☃"]
)
def test_char_round_trip(text: str) -> None:
    vocab = Vocab.build([text, "xyz"])
    ids = vocab.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == Vocab.bos_id and ids[-1] == Vocab.eos_id and len(ids) == len(text) + 2
    assert Vocab.unk_id not in ids
    assert vocab.decode(ids) == text == vocab.decode(vocab.encode(text))


@pytest.mark.parametrize(
    "text",
    [
        "I'm home. Are you?",
        'He said "go (now)!" and left; e.g. 3.5% at 10:30.',
        "Well-known words, don't split... ¿Qué?",
    ],
)
def test_word_round_trip(text: str) -> None:
    vocab = Vocab.build([text], level="word")
    assert vocab.decode(vocab.encode(text, add_bos=True, add_eos=True)) == text
    assert detokenize_words(tokenize_words(text)) == text


def test_word_tokens_split_punctuation() -> None:
    vocab = Vocab.build(["Go home.", "Go!"], level="word")
    assert vocab.tokenize("Go home.") == ["Go", "home", "."]
    assert vocab.tokens == ["Go", "!", ".", "home"]  # by frequency, then alphabetically
    assert tokenize_words("don't well-known 3.5 10:30") == ["don't", "well-known", "3.5", "10:30"]


def test_unknown_tokens_map_to_unk_and_are_listed() -> None:
    vocab = Vocab(list("abc"))
    assert vocab.encode("abzcyz") == [4, 5, 3, 6, 3, 3]
    assert vocab.unknown_tokens("abzcyz") == ["z", "y"] and vocab.unknown_tokens("cab") == []
    assert vocab.decode(vocab.encode("abz")) == "ab<unk>"  # a lossy encoding stays visible
    words = Vocab(["go"], level="word")
    assert words.encode("go now") == [4, 3] and words.unknown_tokens("go now") == ["now"]


def test_decode_stops_at_eos_and_strips_specials() -> None:
    vocab = Vocab(list("0123456789-"))
    ids = [1, 5, 14, 2, 6, 0, 0]
    assert vocab.decode(ids) == "1-"
    assert vocab.decode(torch.tensor(ids)) == "1-"  # tensors decode as lists do
    assert vocab.decode(ids, strip_special=False) == "<bos>1-<eos>2<pad><pad>"
    assert vocab.decode([0, 1, 0, 5]) == "1"


def test_build_min_freq_max_size_and_determinism() -> None:
    texts = ["aab", "abc", "ad"]  # a:4 b:2 c:1 d:1
    assert Vocab.build(texts).tokens == ["a", "b", "c", "d"]
    assert Vocab.build(texts, min_freq=2).tokens == ["a", "b"]
    assert Vocab.build(texts, max_size=3).tokens == ["a", "b", "c"]
    assert Vocab.build(reversed(texts)) == Vocab.build(texts)  # order of the texts does not matter
    words = Vocab.build(["the cat", "the dog", "<unk> cat"], level="word", min_freq=2)
    assert words.tokens == ["cat", "the"] and words.level == "word"


def test_state_dict_round_trip_through_json() -> None:
    vocab = Vocab.build(["I'm home.", "Go!"], level="word", min_freq=1)
    state = json.loads(json.dumps(vocab.state_dict()))
    assert state == {"tokens": vocab.tokens, "level": "word"}
    again = Vocab.from_state_dict(state)
    assert again == vocab and again.level == "word" and again.encode("Go home!") == vocab.encode("Go home!")
    assert Vocab.from_state_dict({"tokens": ["a"]}).level == "char"


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Vocab(list("ab"), level="byte"), ValueError, "level must be 'char' or 'word', got 'byte'"),
        (lambda: Vocab(["a", "a"]), ValueError, "must be unique, got duplicates \\['a'\\]"),
        (lambda: Vocab(["a", "<pad>"]), ValueError, "must not include the specials"),
        (lambda: Vocab(["ab"]), ValueError, "holds single characters"),
        (lambda: Vocab([""]), ValueError, "non-empty strings"),
        (lambda: Vocab.build(["ab"], min_freq=0), ValueError, "min_freq must be an integer >= 1"),
        (lambda: Vocab.build("abc"), TypeError, "wrap it in a list"),
        (lambda: Vocab(list("ab")).decode([9]), ValueError, "Token id 9 is outside this vocabulary"),
        (lambda: Vocab(list("ab")).decode(torch.zeros(2, 3, dtype=torch.long)), ValueError, "row by row"),
        (lambda: Vocab(list("ab")).encode(None), TypeError, "takes a string"),  # type: ignore[arg-type]
        (lambda: Vocab.from_state_dict({"level": "char"}), ValueError, "needs 'tokens'"),
    ],
)
def test_bad_input_is_named(make, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_normalize_text_collapses_whitespace() -> None:
    assert normalize_text("  March\u00a0 3,\t1998\u202f ") == "March 3, 1998"


def test_pad_sequences() -> None:
    ids, lengths = pad_sequences([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]] and lengths.tolist() == [3, 1, 2]
    assert ids.dtype == lengths.dtype == torch.long


def test_batch_loader_cuts_each_batch_to_its_longest() -> None:
    src, src_lengths = pad_sequences([[4] * n for n in (1, 2, 8, 3)])
    tgt, _ = pad_sequences([[1, *[5] * n, 2] for n in (2, 1, 1, 6)])
    loader = Seq2SeqBatchLoader(src, src_lengths, tgt, batch_size=2)
    first, second = list(loader)
    assert len(loader) == 2 and first["src"].shape == (2, 2) and first["tgt"].shape == (2, 4)
    assert second["src"].shape == (2, 8) and second["tgt"].shape == (2, 8)
    assert first["src_lengths"].tolist() == [1, 2]
    predict = next(iter(Seq2SeqBatchLoader(src, src_lengths, None, batch_size=4)))
    assert set(predict) == {"src", "src_lengths"}


def test_batch_loader_shuffles_from_the_seed() -> None:
    src, lengths = pad_sequences([[4 + i] for i in range(50)])
    order = lambda loader: torch.cat([b["src"][:, 0] for b in loader]).tolist()  # noqa: E731
    loader = Seq2SeqBatchLoader(src, lengths, batch_size=16, shuffle=True, seed=1)
    epoch1, epoch2 = order(loader), order(loader)
    assert sorted(epoch1) == list(range(4, 54)) and epoch1 != epoch2
    assert order(Seq2SeqBatchLoader(src, lengths, batch_size=16, shuffle=True, seed=1)) == epoch1
    with pytest.raises(ValueError, match="same number of rows"):
        Seq2SeqBatchLoader(src, lengths[:3])
