"""A user's tab-separated translation file: parsing, bad lines, splits by sentence, batches."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from dlkit.data import ParallelTextDataModule, Vocab
from dlkit.data.parallel_text import read_parallel_text

ATTRIBUTION = "CC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #1158250 (Wittydev)"
# 40 sentences; "Go." and "Run!" have two translations each, as in Tatoeba.
PAIRS = [
    ("Go.", "Va !"), ("Go.", "Marche."), ("Run!", "Cours !"), ("Run!", "Courez !"),
    ("Hi.", "Salut !"), ("Who?", "Qui ?"), ("Wow!", "Ça alors !"), ("Fire!", "Au feu !"),
    ("Help!", "À l'aide !"), ("Jump.", "Saute."), ("Stop!", "Ça suffit !"), ("Wait!", "Attends !"),
] + [(f"I see {n} cats.", f"Je vois {n} chats.") for n in range(30)]  # fmt: skip


def write_pairs(path: Path, pairs=PAIRS, extra: str = f"\t{ATTRIBUTION}") -> Path:
    lines = [f"{s}\t{t}{extra}" for s, t in pairs]
    lines.insert(3, "")  # blank lines are skipped
    lines.insert(7, "   ")
    # A byte-order mark and CRLF line ends, as Windows editors write them.
    path.write_text("\ufeff" + "\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "fra.txt")


def test_read_ignores_extra_columns_blank_lines_bom_and_crlf(tsv: Path) -> None:
    pairs = read_parallel_text(tsv)
    assert pairs == PAIRS
    two_columns = write_pairs(tsv.parent / "two.txt", extra="")
    assert read_parallel_text(two_columns) == PAIRS


@pytest.mark.parametrize(
    ("line", "problem"),
    [("Go. Va !", "no tab"), ("\tVa !", "an empty source"), ("Go.\t  ", "an empty target")],
)
def test_malformed_line_names_file_line_and_content(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(f"Hi.\tSalut !\n\nWho?\tQui ?\n{line}\nRun!\tCours !\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_parallel_text(path)
    message = str(err.value)
    assert f"{path}, line 4:" in message and problem in message and repr(line) in message
    with pytest.raises(ValueError, match="line 4"):  # the DataModule reports the same, when loading
        ParallelTextDataModule(path).setup()


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Hi.\tSalut !\nSummer\tÉté\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt, line 2: not valid UTF-8 .*Re-save the file"):
        read_parallel_text(latin1)
    with pytest.raises(FileNotFoundError, match="missing.txt' does not exist. Set data.path"):
        read_parallel_text(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no 'source<TAB>target' pairs"):
        read_parallel_text(tmp_path / "blank.txt")
    with pytest.raises(ValueError, match="needs a file: set data.path="):
        ParallelTextDataModule().setup()


def test_splits_by_source_sentence_deterministically(tsv: Path) -> None:
    dm = ParallelTextDataModule(tsv, val_fraction=0.2, test_fraction=0.2, seed=0)
    splits = {s: dm.examples(s) for s in ("train", "val", "test")}
    sources = {s: {src for src, _ in pairs} for s, pairs in splits.items()}
    assert len(sources["val"]) == len(sources["test"]) == 8  # of 40 sentences
    assert len(sources["train"]) == 24
    assert not sources["train"] & sources["test"] and not sources["train"] & sources["val"]
    assert not sources["val"] & sources["test"]
    assert sorted(p for pairs in splits.values() for p in pairs) == sorted(PAIRS)  # every translation kept
    again = ParallelTextDataModule(tsv, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert again.examples("test") == splits["test"]
    other = ParallelTextDataModule(tsv, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert {s for s, _ in other.examples("test")} != sources["test"]


def test_vocabularies_come_from_the_training_split(tsv: Path) -> None:
    dm = ParallelTextDataModule(tsv, seed=0)
    train_words = {w for s, _ in dm.examples("train") for w in dm.src_vocab.tokenize(s)}
    assert set(dm.src_vocab.tokens) == train_words and dm.src_vocab.level == "word"
    assert dm.model_hints() == {
        "src_vocab_size": len(dm.src_vocab), "tgt_vocab_size": len(dm.tgt_vocab),
        "pad_id": 0, "bos_id": 1, "eos_id": 2,
    }  # fmt: skip
    rare = ParallelTextDataModule(tsv, seed=0, min_freq=3)
    assert "cats" in rare.src_vocab and "Hi" not in rare.src_vocab
    capped = ParallelTextDataModule(tsv, seed=0, max_vocab_size=5)
    assert len(capped.src_vocab) == len(capped.tgt_vocab) == 9


def test_batches_decode_back_to_the_examples(tsv: Path) -> None:
    dm = ParallelTextDataModule(tsv, batch_size=4, seed=0)
    batch = next(iter(dm.train_dataloader()))
    src, lengths, tgt = batch["src"], batch["src_lengths"], batch["tgt"]
    B, S = src.shape
    assert B == 4 and src.dtype == tgt.dtype == lengths.dtype == torch.int64 and S == int(lengths.max())
    assert (tgt[:, 0] == Vocab.bos_id).all() and ((tgt == Vocab.eos_id).sum(1) == 1).all()
    examples = iter(dm.examples("val"))
    for batch in dm.val_dataloader():
        for row in range(len(batch["src"])):
            src_text, tgt_text = next(examples)
            n = int(batch["src_lengths"][row])
            assert batch["src"][row, :n].tolist() == dm.src_vocab.encode(src_text)  # val words may be <unk>
            if Vocab.unk_id not in batch["src"][row]:
                assert dm.src_vocab.decode(batch["src"][row]) == src_text
            if Vocab.unk_id not in batch["tgt"][row]:
                assert dm.tgt_vocab.decode(batch["tgt"][row]) == tgt_text  # word level round trip


def test_char_level_and_lowercase(tsv: Path) -> None:
    dm = ParallelTextDataModule(tsv, src_level="char", tgt_level="char", lowercase=True, seed=0)
    assert all(s == s.lower() and t == t.lower() for s, t in dm.examples("train"))
    assert dm.src_vocab.level == dm.tgt_vocab.level == "char" and "G" not in dm.src_vocab
    batch = dm.encode_sources(["I SEE 7 CATS."])  # inputs are lowercased too
    assert dm.src_vocab.decode(batch["src"][0]) == "i see 7 cats."


def test_unknown_words_and_overlong_inputs(tsv: Path) -> None:
    dm = ParallelTextDataModule(tsv, seed=0, max_src_len=5)
    with pytest.warns(UserWarning, match=r"mapped to <unk>: input 0 'I see 3 dogs\.': \['dogs'\]"):
        batch = dm.encode_sources(["I see 3 dogs."])
    assert batch["src"][0].tolist()[3] == Vocab.unk_id
    with pytest.warns(UserWarning, match="1 of 2 inputs are longer than data.max_src_len=5 tokens"):
        assert dm.encode_sources(["I see 3 cats. I see", "I see"])["src"].shape == (2, 5)
    with pytest.raises(ValueError, match="Input 0 is empty"):
        dm.encode_sources([""])


def test_truncated_targets_keep_their_eos(tsv: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = ParallelTextDataModule(tsv, seed=0, max_tgt_len=2)
        dm.setup()
    assert "train targets are longer than data.max_tgt_len=2 tokens" in str(caught[0].message)
    tgt = next(iter(dm.train_dataloader()))["tgt"]
    assert tgt.shape[1] <= 4 and ((tgt == Vocab.eos_id).sum(1) == 1).all()
    with pytest.raises(ValueError, match="longer than data.max_tgt_len=2 .* set data.on_overlong=truncate"):
        ParallelTextDataModule(tsv, max_tgt_len=2, on_overlong="error").setup()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"src_level": "bpe"}, "data.src_level must be 'word' or 'char', got 'bpe'"),
        ({"min_freq": 0}, "data.min_freq must be an integer >= 1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "sum to less than 1"),
        ({"max_tgt_len": -1}, "data.max_tgt_len must be a positive integer or null"),
    ],
)
def test_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ParallelTextDataModule("x.txt", **kwargs)


def test_too_few_sentences_for_the_splits(tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "tiny.txt", pairs=PAIRS[:4])  # two distinct source sentences
    with pytest.raises(ValueError, match="2 distinct source sentences; .* leave none for training"):
        ParallelTextDataModule(path, val_fraction=0.4, test_fraction=0.4).setup()
    # Fractions that round to no sentence leave the split empty: no validation, not an error.
    dm = ParallelTextDataModule(path, val_fraction=0.1, test_fraction=0.1)
    assert dm.val_dataloader() == [] and len(dm.examples("train")) == 4
