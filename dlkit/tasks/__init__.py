"""LightningModules with Keras' compile/fit/evaluate/predict/summary face."""

from dlkit.tasks.base import Task
from dlkit.tasks.classifier import Classifier
from dlkit.tasks.regressor import Regressor
from dlkit.tasks.summary import ModelSummary, summarize

__all__ = ["Classifier", "ModelSummary", "Regressor", "Task", "summarize"]
