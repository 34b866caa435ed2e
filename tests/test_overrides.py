"""dlkit.overrides: an unknown key on the command line gets the closest valid keys."""

from __future__ import annotations

import sys

import pytest

from dlkit import eval as dlkit_eval
from dlkit import train as dlkit_train
from dlkit.overrides import close_keys, override_hint

KEYS = ["optimizer", "optimizer.lr", "optimizer.betas", "trainer", "trainer.max_epochs",
        "trainer.min_epochs", "callbacks", "callbacks.early_stopping", "callbacks.early_stopping.patience"]


@pytest.mark.parametrize(("wrong", "meant"), [
    ("optimizer.lrr", ["optimizer.lr"]),                       # a typo in the leaf
    ("trainr.max_epochs", ["trainer.max_epochs"]),             # a typo in the parent
    ("trainer.lr", ["optimizer.lr"]),                          # the right leaf under the wrong parent
    ("callbacks.early_stoping.patience", ["callbacks.early_stopping.patience"]),
    ("trainer.max_epoch", ["trainer.max_epochs", "trainer.min_epochs"]),
    ("zzz.qqq", []),                                           # nothing close: no guess
])
def test_close_keys(wrong: str, meant: list[str]) -> None:
    assert close_keys(wrong, KEYS) == meant


@pytest.mark.parametrize(("args", "expected"), [
    (["optimizer.lrr=0.1"], ["'optimizer.lrr'. Did you mean optimizer.lr? `dlkit-train --cfg job` (without it) "
                             "prints every key; +optimizer.lrr=... adds a new one."]),
    # Several wrong keys are named one by one; a sweep and -m do not get in the way.
    (["-m", "optimizer.lrr=0.1,0.2", "trainr.max_epochs=3"],
     ["'optimizer.lrr'. Did you mean optimizer.lr?", "'trainr.max_epochs'. Did you mean trainer.max_epochs?"]),
    (["~optimizer.lrr"], ["'optimizer.lrr'. Did you mean optimizer.lr? `dlkit-train --cfg job` (without it) prints every key."]),
])
def test_the_hint_names_each_unknown_key(args: list[str], expected: list[str]) -> None:
    hint = override_hint(args)
    assert hint is not None and len(hint.splitlines()) == len(expected)
    for line, part in zip(hint.splitlines(), expected):
        assert line.startswith("dlkit: there is no config key ") and part in line


@pytest.mark.parametrize("args", [["optimizer.lr=0.1"], ["optimizer=adamm"], ["optimizer.lr=(("]])
def test_no_hint_when_hydra_has_said_it_all(args: list[str]) -> None:
    # Composes, an unknown option (Hydra lists the options), a syntax error (Hydra points at it).
    assert override_hint(args) is None


@pytest.mark.parametrize("entry", [dlkit_train, dlkit_eval], ids=["dlkit-train", "dlkit-eval"])
def test_the_console_commands_print_the_hint_under_hydras_error(entry, monkeypatch, capsys) -> None:
    name = entry.__name__.rpartition(".")[2]
    monkeypatch.setattr(sys, "argv", [f"dlkit-{name}", "trainer.max_epoch=1", "ckpt_path=unused.ckpt"])
    with pytest.raises(SystemExit) as exit_:
        entry.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Could not override 'trainer.max_epoch'" in err  # Hydra's own message stays, the hint comes under it
    assert err.rstrip().endswith(f"dlkit: there is no config key 'trainer.max_epoch'. Did you mean trainer.max_epochs "
                                 f"or trainer.min_epochs? `dlkit-{name} --cfg job` (without it) prints every key; "
                                 "+trainer.max_epoch=... adds a new one.")
