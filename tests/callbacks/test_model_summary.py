"""ModelSummary: the dlkit-train table is task.summary()'s: the network's layers, logged after freezing."""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlkit.callbacks import ModelSummary
from dlkit.train import train

SHORT = ("trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1", "test=false",
         "~callbacks.rich_progress_bar")


def test_the_cli_table_is_task_summary_after_freezing(compose_train, caplog) -> None:
    cfg = compose_train(*SHORT, "callbacks=[default,freezing]")
    with caplog.at_level(logging.INFO):
        _, objects = train(cfg)
    tables = [r.getMessage() for r in caplog.records if r.name == "dlkit.callbacks.model_summary"]
    assert len(tables) == 1
    printed: list[str] = []
    summary = objects["task"].summary(print_fn=printed.append)
    assert tables[0].splitlines() == printed[0].splitlines()
    rows = tables[0].splitlines()
    assert rows[0] == 'Model: "LeNet5"' and any(r.startswith("head.fc3 (Linear)") for r in rows)
    # Frozen by the freezing callback (train_from=-1) before the table was made.
    assert 0 < summary.trainable_params < summary.total_params
    assert f"Non-trainable params: {summary.non_trainable_params:,}" in rows
    # The task's plumbing is not in it, nor Lightning's own table anywhere.
    for plumbing in ("Metric", "CrossEntropy", "loss_fns", "best_trackers", "train_metrics"):
        assert plumbing not in tables[0] and plumbing not in caplog.text


class Plain(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.lin(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_module_without_summary_gets_lightnings_table(caplog) -> None:
    trainer = L.Trainer(max_epochs=1, callbacks=[ModelSummary()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False)
    with caplog.at_level(logging.INFO):
        trainer.fit(Plain(), DataLoader(TensorDataset(torch.ones(2, 2)), batch_size=2))
    assert sum("Trainable params" in r.getMessage() for r in caplog.records) == 1
