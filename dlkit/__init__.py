"""dlkit: a Keras-style deep-learning framework on PyTorch Lightning."""

__version__ = "0.1.0"
