"""EpochMeanLogging's shortcut for the attribute Lightning sets around every hook call."""

from __future__ import annotations

import torch
from torch import nn

from dlkit import Classifier


def test_hook_name_skips_module_bookkeeping_and_the_rest_still_registers(monkeypatch) -> None:
    task = Classifier(nn.Linear(3, 2))
    extra, scale = nn.Linear(2, 2), nn.Parameter(torch.ones(1))
    seen: list[str] = []
    original = nn.Module.__setattr__

    def spy(self: nn.Module, name: str, value: object) -> None:
        seen.append(name)
        original(self, name, value)

    monkeypatch.setattr(nn.Module, "__setattr__", spy)
    task._current_fx_name = "training_step"
    task._current_fx_name = None
    assert seen == [] and task._current_fx_name is None
    task.extra, task.scale = extra, scale  # modules and parameters still go through nn.Module
    assert seen == ["extra", "scale"]
    assert "extra" in dict(task.named_children()) and "scale" in dict(task.named_parameters())
