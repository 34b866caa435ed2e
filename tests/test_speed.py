"""Speed switches: compile=true, the first-step timer, and bfloat16 on a CPU that only emulates it."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch

import dlkit.speed as speed
from dlkit import Classifier, create_model
from dlkit.callbacks import StepTimer
from dlkit.data.tensor import arrays_to_datamodule

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}


def _data():
    g = torch.Generator().manual_seed(0)
    return arrays_to_datamodule(torch.randn(64, 1, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g),
                                batch_size=16)


def test_the_step_timer_states_the_first_step_against_the_rest(caplog) -> None:
    timer = StepTimer(steps=2)
    with caplog.at_level("INFO", logger="dlkit.callbacks.step_timer"):
        L.Trainer(max_epochs=1, callbacks=[timer], **QUIET).fit(Classifier(create_model("lenet5")), datamodule=_data())
    assert timer.first_step_s > 0 and timer.step_s > 0
    assert "First training step" in caplog.text and "median of 2" in caplog.text


def test_compile_true_trains_and_keeps_the_state_dict_names() -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # no code marked "run eagerly" by an earlier test in this process
    counters.clear()
    net = create_model("lenet5")
    names = list(net.state_dict())
    speed.compile_network(net)
    assert list(net.state_dict()) == names
    timer = StepTimer(steps=1)
    L.Trainer(max_epochs=1, callbacks=[timer], **QUIET).fit(Classifier(net), datamodule=_data())
    assert counters["frames"]["ok"] >= 1 and counters["stats"]["unique_graphs"] >= 1  # dynamo compiled it
    assert timer.first_step_s > timer.step_s  # and the first step paid for that


def test_bf16_mixed_runs_a_few_steps_on_the_cpu() -> None:
    trainer = L.Trainer(max_epochs=1, precision="bf16-mixed", **QUIET)
    trainer.fit(Classifier(create_model("lenet5")), datamodule=_data())
    assert trainer.global_step == 4


def test_emulated_bf16_warns_with_the_measured_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"bf16-mixed on a CPU without bfloat16 hardware.*measured \d+\.\dx"):
        ratio = speed.check_precision("bf16-mixed", "cpu")
    assert ratio > 0
    monkeypatch.setattr(speed, "native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert speed.check_precision("bf16-mixed", "cpu") is None
        assert speed.check_precision("32-true", "cpu") is None


@pytest.mark.parametrize(("setting", "accelerator", "converted"), [
    ("auto", "cpu", False),   # oneDNN picks its own layouts
    ("auto", "gpu", True),    # cuDNN is fastest in NHWC (the call itself needs no GPU)
    (True, "cpu", True),
    (False, "gpu", False),
])
def test_channels_last_for_cnns_on_a_gpu(setting, accelerator: str, converted: bool) -> None:
    from dlkit.models import create_model
    from dlkit.speed import use_channels_last

    torch.manual_seed(0)
    net = create_model("lenet5", num_classes=3).eval()
    x = torch.randn(2, 1, 32, 32)
    before = net(x)
    assert use_channels_last(net, setting, accelerator) is converted
    # The second convolution: a 1-channel kernel is contiguous in both layouts.
    conv = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][1]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is converted
    torch.testing.assert_close(net(x), before)  # the same function, another layout


def test_channels_last_refuses_an_unknown_setting() -> None:
    from dlkit.speed import use_channels_last

    with pytest.raises(ValueError, match="channels_last must be auto, true or false, got 'yes'"):
        use_channels_last(torch.nn.Conv2d(1, 1, 1), "yes", "cpu")
    # An MLP has no convolution: auto leaves it alone even on a GPU.
    assert use_channels_last(torch.nn.Linear(2, 2), "auto", "gpu") is False


def test_batches_are_pinned_for_a_cuda_gpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.accelerators import CUDAAccelerator

    from dlkit.data import DigitsDataModule
    from dlkit.speed import pin_memory_for

    data = DigitsDataModule(batch_size=8)
    assert pin_memory_for(data, L.Trainer(accelerator="cpu", logger=False)) is False and data.pin_memory is False
    gpu_trainer = type("GPUTrainer", (), {"accelerator": CUDAAccelerator()})()
    assert pin_memory_for(data, gpu_trainer) is True and data.pin_memory is True
    # No CUDA here: Tensor.pin_memory is stood in for, to see every batch tensor go through it.
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t.shape) or t)
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    assert pinned == [x.shape, y.shape]
