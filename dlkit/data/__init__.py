"""LightningDataModules on real data that ships with the installed packages."""

from dlkit.data.diabetes import DiabetesDataModule
from dlkit.data.digits import DigitsDataModule
from dlkit.data.tensor import TensorBatchLoader, TensorDataModule, stratified_split

__all__ = [
    "DiabetesDataModule",
    "DigitsDataModule",
    "TensorBatchLoader",
    "TensorDataModule",
    "stratified_split",
]
