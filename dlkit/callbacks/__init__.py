"""Callbacks: Keras' History and EarlyStopping(restore_best_weights), and more."""

from dlkit.callbacks.early_stopping import EarlyStopping
from dlkit.callbacks.history import History
from dlkit.callbacks.attention_logger import AttentionHeatmapLogger
from dlkit.callbacks.teacher_forcing import TeacherForcingSchedule

__all__ = ["EarlyStopping", "History"]
__all__ += ["AttentionHeatmapLogger", "TeacherForcingSchedule"]
