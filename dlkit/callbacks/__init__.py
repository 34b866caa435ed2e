"""Callbacks: Keras' History and EarlyStopping(restore_best_weights), and more."""

from dlkit.callbacks.early_stopping import EarlyStopping
from dlkit.callbacks.history import History

__all__ = ["EarlyStopping", "History"]
