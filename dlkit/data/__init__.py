"""LightningDataModules on real data that ships with the installed packages."""

from dlkit.data.diabetes import DiabetesDataModule
from dlkit.data.digits import DigitsDataModule
from dlkit.data.idx import FashionMNISTDataModule, IDXDataModule, MNISTDataModule, read_idx
from dlkit.data.image_folder import ImageFolderDataModule
from dlkit.data.tensor import TensorBatchLoader, TensorDataModule, stratified_split
from dlkit.data.transforms import ImageDataModule

__all__ = [
    "DiabetesDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "IDXDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "TensorBatchLoader",
    "TensorDataModule",
    "read_idx",
    "stratified_split",
]
