"""HParamsSession: the HPARAMS tab compares runs: a short typed list, written at the start, a status at the end.

The event files are read back with TensorBoard's ``EventAccumulator``, and the column list
is computed by TensorBoard's own hparams backend (``backend_context.Context``), the code
behind the HPARAMS tab: it sorts the hparams whose values differ first, and the tab shows
those by default.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, backend_context, metadata

from dlkit.run_output import run_hparams
from dlkit.train import train
from tests.conftest import FAST

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["trainer.max_epochs=2", "compile=false", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=true",
        "+trainer.limit_test_batches=1", *FAST]


def _events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return acc


def _hparams_content(runs: dict[str, Path]) -> dict[str, dict[str, bytes]]:
    """What TensorBoard's hparams backend reads: ``{run: {tag: plugin content}}``."""
    return {name: _events(run).PluginTagToContent(metadata.PLUGIN_NAME) for name, run in runs.items()}


class Explode(L.Callback):
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise RuntimeError("a failing job")


def test_the_list_is_short_typed_and_names_the_choices(compose_train) -> None:
    params = run_hparams(compose_train("optimizer.lr=0.002", "compile=false", "callbacks=[default,freezing]"))
    assert params["model"] == "lenet5" and params["optimizer"] == "adam" and params["data"] == "digits"
    assert params["optimizer.lr"] == 0.002 and params["callbacks"] == "default,freezing"
    assert params["compile"] is False  # a boolean, not 0.0
    assert params["data.batch_size"] == 64 and params["seed"] == 42 and params["trainer.max_epochs"] == 40
    assert len(params) < 25, params
    assert not any("_target_" in str(k) or "_partial_" in str(k) or k.startswith(("hydra", "paths.")) for k in params)


def test_a_two_job_sweep_leads_with_the_swept_key(compose_train, tmp_path: Path) -> None:
    runs = {}
    for job, lr in enumerate(("0.001", "0.002")):
        runs[str(job)] = tmp_path / "sweep" / str(job)
        train(compose_train(f"optimizer.lr={lr}", *TINY, output_dir=runs[str(job)]))
    content = _hparams_content(runs)
    for name, tags in content.items():
        # Sessions only: an experiment summary in any run would fix the columns for all of them.
        assert set(tags) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}, tags
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["optimizer.lr"].number_value == (0.001, 0.002)[int(name)]
        assert start.hparams["compile"].WhichOneof("kind") == "bool_value"
        end = metadata.parse_session_end_info_plugin_data(tags[metadata.SESSION_END_INFO_TAG])
        assert end.status == api_pb2.STATUS_SUCCESS
    experiment = backend_context.Context(None).experiment_from_metadata(
        None, "", include_metrics=False, hparams_run_to_tag_to_content=content, data_provider_hparams=None,
        hparams_limit=5)
    first = experiment.hparam_infos[0]
    assert (first.name, first.differs) == ("optimizer.lr", True)
    assert not any(info.differs for info in experiment.hparam_infos[1:])
    # The metric columns are the runs' own curves, read at their last value.
    scalars = set(_events(runs["0"]).Tags()["scalars"])
    assert {"val/acc", "val/acc_best", "test/acc"} <= scalars and not any(t.startswith("hp/") for t in scalars)


def test_a_running_job_is_listed_and_a_failed_one_says_so(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(*TINY, "+callbacks.explode._target_=tests.callbacks.test_hparams.Explode")
    with pytest.raises(RuntimeError, match="a failing job"):
        train(cfg)
    tags = _hparams_content({"run": tmp_path / "run"})["run"]
    assert metadata.SESSION_START_INFO_TAG in tags  # written when the run started, before anything failed
    end = metadata.parse_session_end_info_plugin_data(tags[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_FAILURE
