"""LayerFreezing under DDP (two CPU processes, gloo): unfreezing never desynchronises the ranks."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from dlkit import Classifier
from dlkit.callbacks import LayerFreezing
from tests.callbacks.test_layer_freezing import TinyCNN

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and sys.platform.startswith("linux")), reason="needs torch.distributed (gloo) on Linux"
)


class SaveWeights(L.Callback):
    """Each rank writes its final parameters, so the test can compare the processes."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Parameters only: BatchNorm's running statistics are each rank's own (DDP copies
        # rank 0's before every forward, so the last update differs), as in any DDP run.
        torch.save({k: v.detach().cpu() for k, v in pl_module.named_parameters()},
                   Path(self.folder) / f"rank{trainer.global_rank}.pt")


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    # A torch DataLoader: Lightning gives each rank its own shard, so the ranks' gradients differ.
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)


def test_groups_unfrozen_mid_run_stay_equal_on_both_ranks(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    net = TinyCNN()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    task = Classifier(net).compile(optimizer="adam", lr=1e-2)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True, start_method="spawn"),
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[LayerFreezing(train_from=-1, unfreeze_at={1: "all"}),
                                               SaveWeights(str(tmp_path))],
    )
    trainer.fit(task, train_dataloaders=_loader())
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), f"{key} differs between the ranks"
    # The stem was frozen in epoch 0 and trained in epoch 1, averaged across the ranks.
    assert not torch.equal(rank0["net.stem.0.weight"], start["stem.0.weight"])


def test_ddp_without_find_unused_parameters_is_refused_with_the_fix() -> None:
    class Fake:  # what setup reads of a two-process DDP trainer
        max_epochs, world_size = 3, 2
        strategy = DDPStrategy()

    task = Classifier(TinyCNN())
    with pytest.raises(ValueError, match=r"trainer\.strategy=ddp_find_unused_parameters_true"):
        LayerFreezing().setup(Fake(), task, "fit")  # type: ignore[arg-type]
