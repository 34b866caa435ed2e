"""Generated date translation data: determinism, correctness of every format, held-out days, batches."""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings

import pytest
import torch

from dlkit.data import DateTranslationDataModule, Vocab
from dlkit.data.dates import DATE_FORMATS, render_date

SMALL = {"num_train": 3000, "num_val": 200, "num_test": 300}

# An independent oracle: strptime patterns per format (ordinal suffixes removed first).
STRPTIME = {
    "dth_of_month": "%d of %B %Y", "the_dth_of_month": "the %d of %B, %Y", "dth_month": "%d %B %Y",
    "month_d": "%B %d, %Y", "month_dth": "%B %d, %Y", "month_the_dth": "%B the %d, %Y",
    "d_month": "%d %B %Y", "dd_month": "%d %B %Y", "d_mon": "%d %b %Y", "d_mon_yy": "%d %b %y",
    "dd_mon_yy_dashed": "%d-%b-%y", "d_mon_dashed": "%d-%b-%Y", "mon_d": "%b %d %Y",
    "mon_dd": "%b %d, %Y", "weekday_month_d": "%A, %B %d, %Y", "weekday_d_month": "%A %d %B %Y",
    "wkd_d_mon": "%a, %d %b %Y", "wkd_mon_d": "%a %b %d %Y", "wkd_us_numeric": "%a %m/%d/%y",
    "us_numeric": "%m/%d/%Y", "us_padded": "%m/%d/%Y", "us_short": "%m/%d/%y",
    "eu_dotted": "%d.%m.%Y", "eu_dotted_short": "%d.%m.%y", "ymd_dotted": "%Y.%m.%d",
    "ymd_slashed": "%Y/%m/%d", "iso_spaced": "%Y %m %d", "iso_basic": "%Y%m%d", "iso": "%Y-%m-%d",
}  # fmt: skip


@pytest.fixture(scope="module")
def dm() -> DateTranslationDataModule:
    data = DateTranslationDataModule(**SMALL, batch_size=64)
    data.setup("fit")
    return data


def test_examples_from_the_issue() -> None:
    day = dt.date(1998, 3, 3)  # a Tuesday
    assert render_date(day, "dth_of_month") == "3rd of March 1998"
    assert render_date(day, "wkd_us_numeric") == "Tue 03/03/98"
    assert render_date(day, "month_d", case="upper") == "MARCH 3, 1998"
    assert render_date(day, "d_mon", case="lower") == "3 mar 1998"
    assert render_date(day, "ymd_dotted") == "1998.03.03"
    assert render_date(day, "dd_mon_yy_dashed") == "03-Mar-98"
    assert render_date(day, "weekday_month_d") == "Tuesday, March 3, 1998"
    assert render_date(day, "us_numeric") == "3/3/1998"
    days = (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)
    ordinals = [render_date(dt.date(2000, 1, d), "dth_month").split()[0] for d in days]
    assert ordinals == ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"]
    with pytest.raises(ValueError, match="Unknown date format 'nope'"):
        render_date(day, "nope")


def test_same_seed_same_data_other_seed_other_data(dm: DateTranslationDataModule) -> None:
    again = DateTranslationDataModule(**SMALL)
    for split in ("train", "val", "test"):
        assert again.examples(split) == dm.examples(split)
    assert again.src_vocab == dm.src_vocab
    other = DateTranslationDataModule(**SMALL, seed=7)
    assert other.examples("train") != dm.examples("train") and other.examples("test") != dm.examples("test")
    # The held-out renderings do not move when only the training size changes.
    bigger = DateTranslationDataModule(num_train=4000, num_val=200, num_test=300)
    assert bigger.examples("test") == dm.examples("test")


def test_every_source_names_its_target_date(dm: DateTranslationDataModule) -> None:
    checked = set()
    for split in ("train", "val", "test"):
        for (src, tgt), fmt in zip(dm.examples(split), dm.example_formats(split)):
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", tgt), tgt
            day = dt.date.fromisoformat(tgt)
            assert 1950 <= day.year <= 2049
            plain = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", src, flags=re.IGNORECASE)
            parsed = dt.datetime.strptime(plain, STRPTIME[fmt]).date()
            assert (parsed.month, parsed.day) == (day.month, day.day), src
            assert parsed.year % 100 == day.year % 100, src
            if "%Y" in STRPTIME[fmt]:
                assert parsed.year == day.year, src
            if "%a" in STRPTIME[fmt] or "%A" in STRPTIME[fmt]:
                # strptime ignores the weekday; check that it is the date's real one.
                named = src.split()[0].rstrip(",").lower()
                assert named in (day.strftime("%A").lower(), day.strftime("%a").lower()), (src, tgt)
            checked.add(fmt)
    assert checked == set(DATE_FORMATS)


def test_every_format_and_case_appears(dm: DateTranslationDataModule) -> None:
    assert len(DATE_FORMATS) >= 20
    assert set(dm.example_formats("train")) == set(DATE_FORMATS)
    sources = [s for s, _ in dm.examples("train")]
    assert any(s.isupper() for s in sources) and any(re.search("[a-z]", s) and s.islower() for s in sources)
    assert any(s[0].isupper() and not s.isupper() for s in sources)


def test_two_digit_years_only_within_a_century() -> None:
    wide = DateTranslationDataModule(num_train=500, num_val=10, num_test=10, min_year=1900, max_year=2099)
    assert "us_short" not in wide.formats and "us_numeric" in wide.formats
    assert "us_short" not in wide.example_formats("train")


def test_val_and_test_dates_are_unseen_in_training(dm: DateTranslationDataModule) -> None:
    dates = {split: {t for _, t in dm.examples(split)} for split in ("train", "val", "test")}
    assert len(dates["test"]) == 300 and len(dates["val"]) == 200  # distinct days
    assert not dates["train"] & dates["test"] and not dates["train"] & dates["val"]
    assert not dates["val"] & dates["test"]
    assert len(dates["train"]) == 3000  # fewer training pairs than days: each day once


def test_vocabularies_and_model_hints(dm: DateTranslationDataModule) -> None:
    assert dm.tgt_vocab.tokens == list("0123456789-")
    train_chars = {c for s, _ in dm.examples("train") for c in s}
    assert set(dm.src_vocab.tokens) == train_chars and dm.src_vocab.level == "char"
    assert dm.model_hints() == {
        "src_vocab_size": len(dm.src_vocab), "tgt_vocab_size": 15, "pad_id": 0, "bos_id": 1, "eos_id": 2,
    }  # fmt: skip


def test_model_hints_before_setup() -> None:
    # dlkit-train asks for the hints right after building the DataModule.
    fresh = DateTranslationDataModule(num_train=200, num_val=10, num_test=10)
    assert fresh.model_hints()["tgt_vocab_size"] == 15


def test_batches_shapes_padding_and_order(dm: DateTranslationDataModule) -> None:
    batch = next(iter(dm.train_dataloader()))
    src, lengths, tgt = batch["src"], batch["src_lengths"], batch["tgt"]
    assert src.dtype == lengths.dtype == tgt.dtype == torch.int64
    B, S = src.shape
    assert B == 64 and lengths.shape == (B,) and tgt.shape == (B, 12) and S == int(lengths.max())
    assert lengths.min() >= 1
    valid = torch.arange(S) < lengths.unsqueeze(1)  # (B, S)
    assert (src[~valid] == Vocab.pad_id).all() and (src[valid] > Vocab.unk_id).all()
    assert (tgt[:, 0] == Vocab.bos_id).all() and (tgt[:, -1] == Vocab.eos_id).all()
    # Val/test loaders follow examples(); decoding gives the strings back.
    pairs = iter(dm.examples("test"))
    for batch in dm.test_dataloader():
        for row in range(len(batch["src"])):
            src_text, tgt_text = next(pairs)
            assert dm.src_vocab.decode(batch["src"][row]) == src_text
            assert dm.tgt_vocab.decode(batch["tgt"][row]) == tgt_text
    predict = next(iter(dm.predict_dataloader()))
    assert set(predict) == {"src", "src_lengths"}
    assert len(dm.train_dataloader()) == 47 and len(dm.val_dataloader()) == 4


def test_training_order_is_reshuffled_each_epoch(dm: DateTranslationDataModule) -> None:
    loader = dm.train_dataloader()
    first = [next(iter(loader))["src"][:4].tolist() for _ in range(2)]
    assert first[0] != first[1]
    assert next(iter(dm.train_dataloader()))["src"][:4].tolist() == first[0]  # from the seed


def test_encode_sources_matches_training_encoding(dm: DateTranslationDataModule) -> None:
    texts = [s for s, _ in dm.examples("val")[:3]]
    batch = dm.encode_sources(texts)
    stored = next(iter(dm.val_dataloader()))
    L = int(batch["src_lengths"].max())
    assert torch.equal(batch["src"], stored["src"][:3, :L])
    assert torch.equal(batch["src_lengths"], stored["src_lengths"][:3])
    single = dm.encode_sources("  Tue   03/03/98 ")  # one string; whitespace normalised
    assert single["src"].shape == (1, 12) and dm.src_vocab.decode(single["src"][0]) == "Tue 03/03/98"


def test_unknown_characters_map_to_unk_and_are_reported(dm: DateTranslationDataModule) -> None:
    # No month or weekday has a z.
    expected = r"1 of 2 inputs .* mapped to <unk>: input 1 '3 März 1998 ☃': \['ä', 'z', '☃'\]"
    with pytest.warns(UserWarning, match=expected):
        batch = dm.encode_sources(["3 Mar 1998", "3 März 1998 ☃"])
    assert (batch["src"][1] == Vocab.unk_id).sum() == 3 and (batch["src"][0] != Vocab.unk_id).all()


def test_overlong_input_truncated_with_warning_or_refused(dm: DateTranslationDataModule) -> None:
    long = "Tuesday, the 3rd of March in the year of our lord 1998"
    expected = "1 of 2 inputs are longer than data.max_src_len=40 tokens .* truncated"
    with pytest.warns(UserWarning, match=expected):
        batch = dm.encode_sources([long, "3/3/1998"])
    assert batch["src"].shape == (2, 40) and batch["src_lengths"].tolist() == [40, 8]
    strict = DateTranslationDataModule(**SMALL, on_overlong="error")
    with pytest.raises(ValueError, match="max_src_len=40 .* set data.on_overlong=truncate"):
        strict.encode_sources([long])


def test_overlong_training_sources_follow_the_policy() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        short = DateTranslationDataModule(num_train=300, num_val=10, num_test=10, max_src_len=12)
        short.setup()
    messages = [str(w.message) for w in caught]
    for split in ("train", "val", "test"):  # one warning per split, saying what happened
        assert sum(f"{split} sources are longer than data.max_src_len=12" in m for m in messages) == 1
    assert all("truncated to 12 tokens" in m for m in messages)
    assert next(iter(short.train_dataloader()))["src"].shape[1] <= 12
    strict = DateTranslationDataModule(
        num_train=300, num_val=10, num_test=10, max_src_len=12, on_overlong="error"
    )
    with pytest.raises(ValueError, match="train sources are longer than data.max_src_len=12"):
        strict.setup()


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["3/3/1998", ""], "Input 1 is empty"),
        (["   "], "Input 0 is empty after normalising"),
        ([], "at least one"),
    ],
)
def test_empty_input_is_refused(dm: DateTranslationDataModule, texts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dm.encode_sources(texts)


def test_vocabularies_travel_in_the_state_dict(dm: DateTranslationDataModule) -> None:
    state = json.loads(json.dumps(dm.state_dict()))
    other = DateTranslationDataModule(num_train=50, num_val=5, num_test=5, seed=3)
    other.load_state_dict(state)  # before setup: the checkpoint's vocabulary is used from the start
    assert other.src_vocab == dm.src_vocab and other.tgt_vocab == dm.tgt_vocab
    late = DateTranslationDataModule(num_train=50, num_val=5, num_test=5, seed=3)
    late.setup()
    assert late.src_vocab != dm.src_vocab  # 50 dates do not hold every character
    with pytest.warns(UserWarning, match="checkpoint's are used"):
        late.load_state_dict(state)
    batch = next(iter(late.test_dataloader()))  # re-encoded with the checkpoint's vocabulary
    assert dm.src_vocab.decode(batch["src"][0]) == late.examples("test")[0][0]


def test_vocabularies_are_saved_in_lightning_checkpoints(tmp_path) -> None:
    import lightning as L

    class Tiny(L.LightningModule):  # a stand-in for a seq2seq task: reads the dict batches
        def __init__(self, vocab_size: int) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(vocab_size, 4)

        def training_step(self, batch, batch_idx):
            assert batch["src_lengths"].device == batch["src"].device
            return self.emb(batch["src"]).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DateTranslationDataModule(num_train=64, num_val=8, num_test=8, batch_size=32)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Tiny(data.model_hints()["src_vocab_size"]), datamodule=data)
    trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    ckpt = torch.load(tmp_path / "tiny.ckpt", weights_only=True)
    assert ckpt["DateTranslationDataModule"]["src_vocab"] == data.src_vocab.state_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_train": 0}, "data.num_train must be an integer >= 1"),
        ({"num_test": -1}, "data.num_test must be an integer >= 0"),
        ({"min_year": 2000, "max_year": 1999}, "min_year <= max_year"),
        ({"min_year": 2000, "max_year": 2000, "num_val": 200, "num_test": 200}, "must leave training days"),
        ({"on_overlong": "drop"}, "data.on_overlong must be 'truncate' or 'error'"),
        ({"batch_size": 0}, "data.batch_size must be a positive integer"),
        ({"max_src_len": 0}, "data.max_src_len must be a positive integer or null"),
    ],
)
def test_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DateTranslationDataModule(**kwargs)


def test_the_default_set_has_its_documented_size() -> None:
    # Its generation time belongs in a benchmark, not in a timed test on shared cores.
    data = DateTranslationDataModule()  # 20,000 + 1,000 + 2,000 pairs
    data.setup()
    assert len(data.examples("train")) == 20000 and len(data.train_dataloader()) == 157
