"""LightningModules with Keras' compile/fit/evaluate/predict/summary face."""

from dlkit.tasks.base import Task
from dlkit.tasks.classifier import Classifier
from dlkit.tasks.regressor import Regressor
from dlkit.tasks.seq2seq import Seq2Seq
from dlkit.tasks.decoding import beam_search, greedy_decode
from dlkit.tasks.summary import ModelSummary, summarize

__all__ = ["Classifier", "ModelSummary", "Regressor", "Task", "summarize"]
__all__ += ["Seq2Seq", "beam_search", "greedy_decode"]
