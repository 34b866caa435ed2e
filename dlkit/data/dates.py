"""Human-written dates -> ISO dates: the classic attention demo, generated from a seed.

"3rd of March 1998", "Tue 03/03/98", "MARCH 3, 1998" and two dozen other ways of
writing a day all translate to ``1998-03-03``. The data is generated, so it needs no
download and is a pure function of its seed; the calendar days are split into
train / val / test *before* anything is written, so the test set holds dates the
model has never seen in any format.

Every format is unambiguous: a ``/`` always reads month/day/year (US), a ``.``
day.month.year unless it starts with a four-digit year, and two-digit years are
used only when the year range spans at most 100 years (1950-2049 by default, so
``98`` is 1998 and ``07`` is 2007).
"""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Literal

from dlkit.data.seq2seq import Pair, Seq2SeqDataModule
from dlkit.data.text import Vocab

__all__ = ["DATE_FORMATS", "DateTranslationDataModule", "render_date"]

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Format name -> template. Fields: d 3, dd 03, dth 3rd, m 3, mm 03, Month March,
# Mon Mar, yyyy 1998, yy 98, Weekday Tuesday, Wkd Tue. Examples are for 1998-03-03.
DATE_FORMATS: dict[str, str] = {
    "dth_of_month": "{dth} of {Month} {yyyy}",  # 3rd of March 1998
    "the_dth_of_month": "the {dth} of {Month}, {yyyy}",  # the 3rd of March, 1998
    "dth_month": "{dth} {Month} {yyyy}",  # 3rd March 1998
    "month_d": "{Month} {d}, {yyyy}",  # March 3, 1998
    "month_dth": "{Month} {dth}, {yyyy}",  # March 3rd, 1998
    "month_the_dth": "{Month} the {dth}, {yyyy}",  # March the 3rd, 1998
    "d_month": "{d} {Month} {yyyy}",  # 3 March 1998
    "dd_month": "{dd} {Month} {yyyy}",  # 03 March 1998
    "d_mon": "{d} {Mon} {yyyy}",  # 3 Mar 1998
    "d_mon_yy": "{d} {Mon} {yy}",  # 3 Mar 98
    "dd_mon_yy_dashed": "{dd}-{Mon}-{yy}",  # 03-Mar-98
    "d_mon_dashed": "{d}-{Mon}-{yyyy}",  # 3-Mar-1998
    "mon_d": "{Mon} {d} {yyyy}",  # Mar 3 1998
    "mon_dd": "{Mon} {dd}, {yyyy}",  # Mar 03, 1998
    "weekday_month_d": "{Weekday}, {Month} {d}, {yyyy}",  # Tuesday, March 3, 1998
    "weekday_d_month": "{Weekday} {d} {Month} {yyyy}",  # Tuesday 3 March 1998
    "wkd_d_mon": "{Wkd}, {d} {Mon} {yyyy}",  # Tue, 3 Mar 1998 (e-mail headers)
    "wkd_mon_d": "{Wkd} {Mon} {d} {yyyy}",  # Tue Mar 3 1998 (ctime)
    "wkd_us_numeric": "{Wkd} {mm}/{dd}/{yy}",  # Tue 03/03/98
    "us_numeric": "{m}/{d}/{yyyy}",  # 3/3/1998
    "us_padded": "{mm}/{dd}/{yyyy}",  # 03/03/1998
    "us_short": "{m}/{d}/{yy}",  # 3/3/98
    "eu_dotted": "{dd}.{mm}.{yyyy}",  # 03.03.1998
    "eu_dotted_short": "{d}.{m}.{yy}",  # 3.3.98
    "ymd_dotted": "{yyyy}.{mm}.{dd}",  # 1998.03.03
    "ymd_slashed": "{yyyy}/{mm}/{dd}",  # 1998/03/03
    "iso_spaced": "{yyyy} {mm} {dd}",  # 1998 03 03
    "iso_basic": "{yyyy}{mm}{dd}",  # 19980303
    "iso": "{yyyy}-{mm}-{dd}",  # 1998-03-03 (already ISO: the model must copy it)
}
_TWO_DIGIT_YEAR = frozenset(name for name, t in DATE_FORMATS.items() if "{yy}" in t)
# Formats with letters in them (names, ordinals, "of"), which are also written in lower/UPPER case.
_WORDY = frozenset(
    name for name, t in DATE_FORMATS.items()
    if any(f"{{{field}}}" in t for field in ("dth", "Month", "Mon", "Weekday", "Wkd"))
    or any(c.isalpha() for c in re.sub(r"\{\w+\}", "", t))
)
# How a wordy date is cased: as written (Title) most of the time, else lower or UPPER.
CASES = ("as_is", "lower", "upper")
_CASE_WEIGHTS = (0.6, 0.2, 0.2)
# The target alphabet: an ISO date is digits and dashes.
TARGET_TOKENS = tuple("0123456789-")


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def render_date(day: dt.date, fmt: str, case: str = "as_is") -> str:
    """Write a date in one of :data:`DATE_FORMATS`.

    Args:
        day: The date.
        fmt: A format name, a key of :data:`DATE_FORMATS`.
        case: ``"as_is"``, ``"lower"`` or ``"upper"``. Defaults to ``"as_is"``.

    Returns:
        The written date.

    Example:
        >>> render_date(dt.date(1998, 3, 3), "wkd_us_numeric")
        'Tue 03/03/98'
        >>> render_date(dt.date(1998, 3, 3), "month_d", case="upper")
        'MARCH 3, 1998'
    """
    if fmt not in DATE_FORMATS:
        raise ValueError(f"Unknown date format {fmt!r}; choose one of {sorted(DATE_FORMATS)}.")
    month, weekday = MONTHS[day.month - 1], WEEKDAYS[day.weekday()]
    text = DATE_FORMATS[fmt].format(
        d=day.day, dd=f"{day.day:02d}", dth=_ordinal(day.day),
        m=day.month, mm=f"{day.month:02d}", Month=month, Mon=month[:3],
        yyyy=f"{day.year:04d}", yy=f"{day.year % 100:02d}", Weekday=weekday, Wkd=weekday[:3],
    )  # fmt: skip
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    if case != "as_is":
        raise ValueError(f"case must be one of {CASES}, got {case!r}.")
    return text


class DateTranslationDataModule(Seq2SeqDataModule):
    """Human-written dates paired with their ISO form, generated from a seed.

    All days from ``min_year``-01-01 to ``max_year``-12-31 are shuffled with
    ``random.Random(seed)`` and cut into test days (``num_test``), validation days
    (``num_val``) and training days (the rest), so val/test dates never occur in
    training, in any format. Each example draws a format (uniformly among
    :data:`DATE_FORMATS`) and, for formats with words, a case (as written 60 %,
    lower 20 %, upper 20 %). Val and test use every one of their days once; training
    uses ``num_train`` days, each at most once while days remain (then again, in
    new formats).

    The source vocabulary holds the characters of the training sources; the target
    vocabulary is the 10 digits and ``-``. Batches are padded to their own longest
    sequence (see :class:`~dlkit.data.seq2seq.Seq2SeqDataModule`).

    Args:
        num_train: Training pairs. Defaults to 20000.
        num_val: Validation pairs (= distinct validation days). Defaults to 1000.
        num_test: Test pairs (= distinct test days). Defaults to 2000.
        seed: Seed of the split, the formats and the training order. Defaults to 42.
        batch_size: Pairs per batch. Defaults to 128.
        min_year: First year of the calendar. Defaults to 1950.
        max_year: Last year of the calendar. Two-digit-year formats are used only
            when ``max_year - min_year < 100``. Defaults to 2049.
        max_src_len: Longest source in characters (the longest format has 29).
            Defaults to 40.
        on_overlong: A longer source (e.g. passed to :meth:`encode_sources`) is
            ``"truncate"``-d with a warning or an ``"error"``. Defaults to
            ``"truncate"``.

    Batches:
        ``{"src": (B, S) int64, "src_lengths": (B,) int64, "tgt": (B, 12) int64}``;
        the target is ``[<bos>, 10 ISO characters, <eos>]``.

    Example:
        >>> dm = DateTranslationDataModule(num_train=2000, num_val=100, num_test=100)
        >>> dm.examples("train")[0]
        ('...', '....-..-..')
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch["tgt"].shape
        torch.Size([128, 12])
    """

    def __init__(
        self,
        num_train: int = 20000,
        num_val: int = 1000,
        num_test: int = 2000,
        seed: int = 42,
        batch_size: int = 128,
        min_year: int = 1950,
        max_year: int = 2049,
        max_src_len: int | None = 40,
        on_overlong: Literal["truncate", "error"] = "truncate",
    ) -> None:
        super().__init__(batch_size=batch_size, max_src_len=max_src_len, on_overlong=on_overlong, seed=seed)
        sizes = (("num_train", num_train, 1), ("num_val", num_val, 0), ("num_test", num_test, 0))
        for key, value, low in sizes:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"data.{key} must be an integer >= {low}, got {value!r}.")
        if not (1 <= min_year <= max_year <= 9999):
            raise ValueError(
                f"data.min_year and data.max_year must satisfy 1 <= min_year <= max_year <= 9999, "
                f"got {min_year} and {max_year}."
            )
        num_days = (dt.date(max_year, 12, 31) - dt.date(min_year, 1, 1)).days + 1
        if num_val + num_test >= num_days:
            raise ValueError(
                f"data.num_val + data.num_test ({num_val} + {num_test}) must leave training days among "
                f"the {num_days} days of {min_year}-{max_year}; lower them or widen the year range."
            )
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.min_year, self.max_year = min_year, max_year
        # A two-digit year names one year only within a 100-year window.
        self.formats = tuple(
            name for name in DATE_FORMATS if max_year - min_year < 100 or name not in _TWO_DIGIT_YEAR
        )
        self._formats: dict[str, list[str]] = {}

    def split_days(self) -> dict[str, list[dt.date]]:
        """The calendar days of each split, disjoint: ``{"train": [...], "val": [...], "test": [...]}``."""
        first = dt.date(self.min_year, 1, 1)
        num_days = (dt.date(self.max_year, 12, 31) - first).days + 1
        order = list(range(num_days))
        random.Random(self.seed).shuffle(order)
        days = [first + dt.timedelta(days=i) for i in order]
        n_test, n_val = self.num_test, self.num_val
        return {
            "test": days[:n_test],
            "val": days[n_test : n_test + n_val],
            "train": days[n_test + n_val :],
        }

    def load_pairs(self) -> dict[str, list[Pair]]:
        """Generate every split's ``(written date, ISO date)`` pairs."""
        days = self.split_days()
        # The training days repeat (in new formats) only once all of them are used.
        train_days = days["train"]
        days["train"] = [train_days[i % len(train_days)] for i in range(self.num_train)]
        pairs: dict[str, list[Pair]] = {}
        for split in ("train", "val", "test"):
            # One stream per split (a string seed is hashed with SHA-512, so it is stable
            # across processes): the val/test renderings do not move when num_train does.
            rng = random.Random(f"dlkit-dates/{self.seed}/{split}")
            formats = [rng.choice(self.formats) for _ in days[split]]
            cases = [
                rng.choices(CASES, _CASE_WEIGHTS)[0] if fmt in _WORDY else "as_is" for fmt in formats
            ]
            pairs[split] = [
                (render_date(day, fmt, case), day.isoformat())
                for day, fmt, case in zip(days[split], formats, cases)
            ]
            self._formats[split] = formats
        return pairs

    def build_vocabs(self, train_pairs: list[Pair]) -> tuple[Vocab, Vocab]:
        """Characters of the training sources; digits and ``-`` for the ISO targets."""
        return Vocab.build((s for s, _ in train_pairs), level="char"), Vocab(TARGET_TOKENS, level="char")

    def example_formats(self, split: str) -> list[str]:
        """The format name of each example of a split, aligned with :meth:`examples`.

        Example:
            >>> from collections import Counter
            >>> Counter(dm.example_formats("test")).most_common(3)
        """
        self.examples(split)  # sets up, and names the split in the error
        return list(self._formats[split])
