"""LightningModules with Keras' compile/fit/evaluate/predict/summary face."""

from dlkit.tasks.base import Task
from dlkit.tasks.optim import build_optimizer
from dlkit.tasks.classifier import Classifier
from dlkit.tasks.regressor import Regressor
from dlkit.tasks.seq2seq import Seq2Seq
from dlkit.tasks.summary import ModelSummary, summarize

__all__ = ["Classifier", "ModelSummary", "Regressor", "Task", "build_optimizer", "summarize"]
__all__ += ["Seq2Seq"]
