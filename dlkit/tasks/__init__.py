"""LightningModules with Keras' compile/fit/evaluate/predict/summary face."""

from dlkit.tasks.base import Task
from dlkit.tasks.optim import build_optimizer
from dlkit.tasks.classifier import Classifier
from dlkit.tasks.regressor import Regressor
from dlkit.tasks.seq2seq import Seq2Seq
from dlkit.tasks.summary import ModelSummary, summarize
from dlkit.tasks.fine_tune import fine_tune
from dlkit.tasks.param_groups import GroupRates, parse_lr
from dlkit.tasks.saving import load_model

__all__ = ["Classifier", "ModelSummary", "Regressor", "Task", "build_optimizer", "summarize"]
__all__ += ["Seq2Seq"]
__all__ += ["GroupRates", "fine_tune", "parse_lr"]
__all__ += ["load_model"]
