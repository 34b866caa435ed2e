"""The Seq2Seq task: masked loss, metrics on hand-made examples, the Keras face, checkpoints, bad input."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.text import BLEUScore

import dlkit.tasks.metrics as metrics_module
from dlkit.data import DateTranslationDataModule
from dlkit.data.seq2seq import encode_sources
from dlkit.data.text import Vocab
from dlkit.losses import CrossEntropyLoss
from dlkit.tasks import Seq2Seq
from dlkit.tasks.metrics import (
    build_metric,
    canonical_name,
    exact_match,
    sequence_bleu_strings,
    sequence_metric,
    token_accuracy,
    token_hits,
    trim_sequences,
)
from dlkit.tasks.seq2seq import CKPT_KEY, sequence_cross_entropy
from tests.tasks.seq2seq_standins import CopyOracle, TinySeq2Seq, date_data, tiny_task

# Tiny models: a second intra-op thread only adds contention.
pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"verbose": False, "enable_model_summary": False}
PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(scope="module")
def dates() -> DateTranslationDataModule:
    return date_data(num_train=256, num_val=64, num_test=64, batch_size=64, seed=0)


# ----------------------------------------------------------------------------- loss
def test_loss_is_the_mean_over_real_tokens_and_ignores_padding() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7, requires_grad=True)
    target = torch.tensor([[4, 5, EOS, PAD], [6, EOS, PAD, PAD]])
    loss = sequence_cross_entropy(logits, target, pad_id=PAD)
    real = target != PAD
    expected = F.cross_entropy(logits[real], target[real])  # 5 real tokens
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (logits.grad[~real] == 0).all() and (logits.grad[real] != 0).any()
    # Whatever the network says at padded positions does not matter.
    changed = logits.detach().clone()
    changed[~real] = 100.0 * torch.randn_like(changed[~real])
    torch.testing.assert_close(sequence_cross_entropy(changed, target), loss.detach())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_task_loss_masks_padding_with_label_smoothing(smoothing: float) -> None:
    task = Seq2Seq(TinySeq2Seq(10, 9), label_smoothing=smoothing)
    logits = torch.randn(3, 5, 9)
    target = torch.tensor([[4, 5, 6, EOS, PAD], [7, EOS, PAD, PAD, PAD], [4, 4, 4, 4, EOS]])
    expected = F.cross_entropy(logits.reshape(-1, 9), target.reshape(-1), ignore_index=PAD, label_smoothing=smoothing)
    torch.testing.assert_close(task._token_loss(logits, target), expected)
    torch.testing.assert_close(sequence_cross_entropy(logits, target, label_smoothing=smoothing), expected)


def test_a_given_loss_sees_only_real_tokens() -> None:
    seen = {}

    def loss(pred, target):
        seen["shapes"] = (tuple(pred.shape), tuple(target.shape))
        return F.cross_entropy(pred, target)

    task = Seq2Seq(TinySeq2Seq(10, 9), loss=loss)
    task._token_loss(torch.randn(2, 3, 9), torch.tensor([[4, EOS, PAD], [5, 6, EOS]]))
    assert seen["shapes"] == ((5, 9), (5,))
    with pytest.raises(ValueError, match="label_smoothing"):
        Seq2Seq(TinySeq2Seq(10, 9), loss=CrossEntropyLoss(), label_smoothing=0.1)


# ----------------------------------------------------------------------------- metrics by hand
def test_token_accuracy_counts_only_non_padding_positions() -> None:
    target = torch.tensor([[4, 5, EOS, PAD], [6, EOS, PAD, PAD]])
    predicted = torch.tensor([[4, 9, EOS, 7], [6, 6, 4, 4]])  # right: 4, EOS, 6 -> 3 of 5
    logits = F.one_hot(predicted, 10).float()
    correct, total = token_accuracy(logits, target, pad_id=PAD)
    assert (int(correct), int(total)) == (3, 5)


def test_exact_match_compares_up_to_eos_and_ignores_what_follows() -> None:
    pred = torch.tensor([[4, 5, EOS, 6], [4, 5, 6, EOS], [4, 5, PAD, PAD], [4, EOS, PAD, PAD]])
    ref = torch.tensor([[4, 5, EOS, PAD], [4, 5, EOS, PAD], [4, 5, EOS, PAD], [4, 6, EOS, PAD]])
    assert exact_match(pred, ref).tolist() == [True, False, True, False]
    assert trim_sequences(pred) == [[4, 5], [4, 5, 6], [4, 5], [4]]
    assert trim_sequences(torch.tensor([[BOS, 4, EOS]]), bos_id=BOS) == [[4]]


def test_bleu_is_computed_on_tokens() -> None:
    vocab = Vocab(list("0123456789-"))
    refs = ["1998-03-03", "2001-12-25"]
    preds = ["1998-03-04", "2001-12-25"]
    ref_ids = torch.tensor([vocab.encode(r, add_eos=True) for r in refs])
    pred_ids = torch.tensor([vocab.encode(p, add_eos=True) for p in preds])
    p_str, r_str = sequence_bleu_strings(pred_ids, ref_ids)
    by_ids = BLEUScore(n_gram=4, smooth=True)(p_str, r_str)
    by_chars = BLEUScore(n_gram=4, smooth=True)([" ".join(p) for p in preds], [[" ".join(r)] for r in refs])
    torch.testing.assert_close(by_ids, by_chars)
    assert 0.5 < float(by_ids) < 1.0
    perfect = BLEUScore(n_gram=4, smooth=True)(*sequence_bleu_strings(ref_ids, ref_ids))
    assert float(perfect) == pytest.approx(1.0)


def test_mean_metric_fractions_equal_hits_over_count_exactly() -> None:
    # Token accuracy and exact match are MeanMetrics fed 0/1 hits: over uneven batches they
    # give sum(hits) / sum(count), the number a hand-written hits/count accumulator gives.
    torch.manual_seed(0)
    metric = sequence_metric("token_acc")
    hits = total = 0
    for B, T in [(3, 5), (7, 2), (1, 9), (4, 4)]:
        target = torch.randint(3, 10, (B, T))
        target[0, T // 2 :] = PAD  # padding is not scored
        logits = torch.randn(B, T, 10)
        metric.update(token_hits(logits, target, PAD))
        correct, count = token_accuracy(logits, target, PAD)
        hits, total = hits + int(correct), total + int(count)
    assert metric.compute().item() == hits / total
    em = sequence_metric("exact_match")
    em.update(exact_match(torch.tensor([[4, EOS], [5, EOS]]), torch.tensor([[4, EOS], [6, EOS]])).float())
    em.update(exact_match(torch.tensor([[4, EOS]]), torch.tensor([[4, EOS]])).float())
    assert em.compute().item() == 2 / 3


def test_one_metric_table_names_every_task() -> None:
    assert canonical_name("accuracy") == "acc" and canonical_name("accuracy", "seq2seq") == "token_acc"
    assert canonical_name("seq_acc", "seq2seq") == "exact_match"
    assert build_metric("bleu", "seq2seq")[0] == "bleu"
    with pytest.raises(ValueError, match="does not apply to classification"):
        build_metric("bleu", "multiclass", num_classes=3)


def test_metrics_docstring_examples(docstring_examples) -> None:
    docstring_examples(metrics_module)


def _copy_batches(pairs: list[tuple[list[int], list[int]]], batch_size: int) -> list[dict]:
    """Dict batches of (source ids, reference ids) pairs, padded per batch."""
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        S = max(len(s) for s, _ in chunk)
        T = max(len(r) for _, r in chunk) + 2
        src = torch.tensor([s + [PAD] * (S - len(s)) for s, _ in chunk])
        tgt = torch.tensor([[BOS, *r, EOS] + [PAD] * (T - len(r) - 2) for _, r in chunk])
        out.append({"src": src, "src_lengths": torch.tensor([len(s) for s, _ in chunk]), "tgt": tgt})
    return out


def test_evaluate_accumulates_metrics_over_batches_exactly() -> None:
    # A perfect copier scored against references of which some are wrong: every number
    # is known by hand.
    pairs = [([4, 5, 6], [4, 5, 6]), ([7, 8], [7, 8]), ([4, 4, 5, 5], [4, 4, 5, 9]), ([6], [6]), ([5, 7], [5])]
    task = Seq2Seq(CopyOracle(10), max_decode_len=8)
    result = task.evaluate(_copy_batches(pairs, batch_size=2), **QUIET)
    assert result["exact_match"] == pytest.approx(3 / 5)
    # Reference tokens (eos included): 4 + 3 + 5 + 2 + 2 = 16; wrong: the 9, and in the last
    # pair the copier says 7 where the reference ends (eos).
    assert result["token_acc"] == pytest.approx(14 / 16)
    expected_bleu = BLEUScore(n_gram=4, smooth=True)(
        ["4 5 6", "7 8", "4 4 5 5", "6", "5 7"], [["4 5 6"], ["7 8"], ["4 4 5 9"], ["6"], ["5"]]
    )
    assert result["bleu"] == pytest.approx(float(expected_bleu), abs=1e-6)
    assert set(result) == {"loss", "token_acc", "exact_match", "bleu"}


def test_metrics_can_be_chosen_and_unknown_ones_are_named() -> None:
    task = Seq2Seq(CopyOracle(10), metrics=["token_acc"], max_decode_len=8)
    result = task.evaluate(_copy_batches([([4, 5], [4, 5])], 1), **QUIET)
    assert set(result) == {"loss", "token_acc"}
    with pytest.raises(ValueError, match="Unknown seq2seq metric 'rouge'.*bleu"):
        Seq2Seq(CopyOracle(10), metrics=["rouge"])


# ----------------------------------------------------------------------------- training
def test_teacher_forcing_ratio_reaches_the_network(dates) -> None:
    task = tiny_task(dates, teacher_forcing=0.25, metrics=["token_acc"])
    task.fit(dates, epochs=1, limit_train_batches=2, limit_val_batches=1, **QUIET)
    assert task.net.ratios[:2] == [0.25, 0.25]  # training batches
    assert task.net.ratios[-1] == 1.0  # validation is teacher-forced
    with pytest.raises(ValueError, match="teacher_forcing"):
        task.teacher_forcing = 1.5


def test_keras_face_fit_evaluate_predict_summary(dates, capsys) -> None:
    L.seed_everything(0, verbose=False)
    task = tiny_task(dates).compile(optimizer="adam", lr=1e-2)
    history = task.fit(dates, epochs=2, **QUIET)
    for key in ("train/loss", "train/token_acc", "val/loss", "val/token_acc", "val/exact_match", "val/bleu",
                "val/exact_match_best", "train/lr"):
        assert len(history.history[key]) == 2, key
    assert history.history["train/loss"][1] < history.history["train/loss"][0]
    assert task.max_decode_len == 16  # 1.5 x the 10 ISO characters + 1, from the data

    result = task.evaluate(dates)
    assert set(result) == {"loss", "token_acc", "exact_match", "bleu"}
    assert 0.0 <= result["exact_match"] <= 1.0

    sources = [s for s, _ in dates.examples("test")]
    predicted = task.predict(dates)
    assert len(predicted) == len(sources) and all(isinstance(p, str) for p in predicted)
    assert task.predict(sources[:5]) == predicted[:5]  # strings and the DataModule agree
    assert task.predict(sources[0]) == predicted[0]  # one string in, one string out
    assert task.predict(sources[:3], beam_size=3)  # beam search runs too

    table = task.summary((2, 12, 11))
    out = capsys.readouterr().out
    assert "Total params" in out and table.total_params == sum(p.numel() for p in task.net.parameters())
    assert any(name == "encoder" and shape.startswith("(") for name, _, shape, _ in table.rows)


def test_fit_on_arrays_says_what_data_seq2seq_needs(dates) -> None:
    task = tiny_task(dates)
    with pytest.raises(TypeError, match="seq2seq DataModule"):
        task.fit(np.zeros((4, 3)), np.zeros(4), epochs=1)
    with pytest.raises(ValueError, match="dict batches with keys"):
        task.training_step((torch.zeros(2, 3), torch.zeros(2)), 0)


# ----------------------------------------------------------------------------- vocabularies and checkpoints
def test_checkpoint_carries_vocabularies_and_decoding_length(dates, tmp_path) -> None:
    task = tiny_task(dates)
    task.fit(dates, epochs=1, limit_train_batches=1, limit_val_batches=1, **QUIET)
    path = tmp_path / "model.ckpt"
    task.trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # plain data only
    stored = checkpoint[CKPT_KEY]
    assert stored["src_vocab"] == dates.src_vocab.state_dict() and stored["max_decode_len"] == 16
    assert stored["max_src_len"] == 40 and stored["on_overlong"] == "truncate"

    fresh = tiny_task(dates)
    fresh.load_state_dict(checkpoint["state_dict"])
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.src_vocab == dates.src_vocab and fresh.tgt_vocab == dates.tgt_vocab
    assert fresh.source_encoder is None  # no DataModule: the stored vocabulary encodes
    sources = [s for s, _ in dates.examples("val")[:8]]
    assert fresh.predict(sources) == task.predict(sources)


def test_loading_a_checkpoint_without_seq2seq_state_is_a_clear_error() -> None:
    task = Seq2Seq(TinySeq2Seq(10, 9))
    with pytest.raises(ValueError, match=f"lacks '{CKPT_KEY}'.*not written by dlkit-train with a Seq2Seq task"):
        task.on_load_checkpoint({"state_dict": task.state_dict()})
    # A task fit on batches (no vocabularies) still writes the entry, and loads it back.
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    task.on_load_checkpoint(checkpoint)
    assert task.src_vocab is None and checkpoint[CKPT_KEY]["src_vocab"] is None


def test_predict_without_vocabulary_explains_how_to_get_one() -> None:
    task = Seq2Seq(TinySeq2Seq(10, 9))
    with pytest.raises(RuntimeError, match="from_checkpoint"):
        task.predict(["abc"])


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bound", [True, False], ids=["datamodule", "stored-vocab"])
def test_unknown_characters_are_reported_and_mapped_to_unk(dates, bound: bool) -> None:
    task = tiny_task(dates)
    task.bind_data(dates)
    if not bound:
        task.source_encoder = None
    with pytest.warns(UserWarning, match=r"(?s)<unk>.*'§'"):
        out = task.predict(["3 March 1998 §"])
    assert isinstance(out, list) and len(out) == 1
    with pytest.warns(UserWarning, match="<unk>"):
        batch = task.encode_sources(["§3"])
    assert batch["src"][0, 0].item() == Vocab.unk_id


@pytest.mark.parametrize("text", ["3 March 1998 §", "3 March 1998 " * 10], ids=["unknown-token", "overlong"])
def test_datamodule_and_stored_vocabulary_encode_alike(dates, text: str) -> None:
    # One encoding function behind both paths: the same ids and the same warning.
    task = tiny_task(dates)
    task.bind_data(dates)
    results = []
    for source_encoder in (dates, None):
        task.source_encoder = source_encoder
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batch = task.encode_sources([text, "3/3/1998"])
        results.append((batch, [str(w.message) for w in caught]))
    (by_data, data_warnings), (by_vocab, vocab_warnings) = results
    assert torch.equal(by_data["src"], by_vocab["src"])
    assert torch.equal(by_data["src_lengths"], by_vocab["src_lengths"])
    assert len(data_warnings) == 1 and data_warnings == vocab_warnings
    with pytest.warns(UserWarning):
        direct = encode_sources([text, "3/3/1998"], dates.src_vocab, dates.max_src_len, dates.on_overlong)
    assert torch.equal(direct["src"], by_data["src"].cpu())


@pytest.mark.parametrize("bound", [True, False], ids=["datamodule", "stored-vocab"])
@pytest.mark.parametrize("text", ["", "   "])
def test_empty_input_is_a_clear_error(dates, bound: bool, text: str) -> None:
    task = tiny_task(dates)
    task.bind_data(dates)
    if not bound:
        task.source_encoder = None
    with pytest.raises(ValueError, match="empty"):
        task.predict(["3 March 1998", text])


@pytest.mark.parametrize("bound", [True, False], ids=["datamodule", "stored-vocab"])
def test_overlong_input_follows_the_data_policy(dates, bound: bool) -> None:
    task = tiny_task(dates)
    task.bind_data(dates)
    if not bound:
        task.source_encoder = None
    long_text = "3 March 1998 " * 10  # 130 characters > max_src_len=40
    with pytest.warns(UserWarning, match="truncated to 40"):
        batch = task.encode_sources([long_text])
    assert batch["src"].shape[1] == 40
    task.on_overlong = "error"
    strict = DateTranslationDataModule(num_train=256, num_val=64, num_test=64, on_overlong="error", seed=0)
    strict.load_state_dict(dates.state_dict())
    if bound:
        task.source_encoder = strict
    with pytest.raises(ValueError, match="max_src_len"):
        task.predict([long_text])


def test_bad_constructor_values_are_named() -> None:
    net = TinySeq2Seq(10, 9)
    for kwargs, key in [({"beam_size": 0}, "beam_size"), ({"label_smoothing": 1.0}, "label_smoothing"),
                        ({"teacher_forcing": -0.1}, "teacher_forcing"), ({"length_penalty": -1}, "length_penalty"),
                        ({"max_decode_len": 0}, "max_decode_len")]:
        with pytest.raises(ValueError, match=key):
            Seq2Seq(net, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Seq2Seq(net)  # the defaults are valid and quiet
