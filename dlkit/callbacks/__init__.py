"""Callbacks: Keras' History and EarlyStopping(restore_best_weights), and more."""

from dlkit.callbacks.early_stopping import EarlyStopping
from dlkit.callbacks.history import History
from dlkit.callbacks.last_checkpoint import LastCheckpoint
from dlkit.callbacks.resume_state import ResumeState
from dlkit.callbacks.attention_logger import AttentionHeatmapLogger, attention_figure, token_label
from dlkit.callbacks.teacher_forcing import TeacherForcingSchedule
from dlkit.callbacks.terminate_on_nan import NonFiniteLossError, TerminateOnNaN
from dlkit.callbacks.dropout_schedule import DropoutSchedule
from dlkit.callbacks.lr_logger import LearningRateLogger
from dlkit.callbacks.step_timer import StepTimer
from dlkit.callbacks.layer_freezing import LayerFreezing
from dlkit.callbacks.gradient_health import GradientHealth
from dlkit.callbacks.confusion_matrix import ConfusionMatrix
from dlkit.callbacks.misclassified import Misclassified
from dlkit.callbacks.optuna_pruning import OptunaPruning
from dlkit.callbacks.hparams import HParamsSession
from dlkit.callbacks.epoch_log import EpochLog
from dlkit.callbacks.model_summary import ModelSummary
from dlkit.callbacks.weight_constraint import WeightConstraint

__all__ = ["EarlyStopping", "History"]
__all__ += ["AttentionHeatmapLogger", "TeacherForcingSchedule", "attention_figure", "token_label"]
__all__ += ["LastCheckpoint", "ResumeState"]
__all__ += ["ConfusionMatrix", "GradientHealth", "Misclassified"]
__all__ += ["DropoutSchedule", "LayerFreezing", "LearningRateLogger"]
__all__ += ["NonFiniteLossError", "StepTimer", "TerminateOnNaN"]
__all__ += ["HParamsSession", "OptunaPruning"]
__all__ += ["EpochLog", "ModelSummary", "WeightConstraint"]
