"""LightningDataModules on real data that ships with the installed packages."""

from dlkit.data.dates import DateTranslationDataModule
from dlkit.data.diabetes import DiabetesDataModule
from dlkit.data.digits import DigitsDataModule
from dlkit.data.image import ImageDataModule
from dlkit.data.idx import FashionMNISTDataModule, IDXDataModule, MNISTDataModule, read_idx
from dlkit.data.image_folder import ImageFolderDataModule
from dlkit.data.parallel_text import ParallelTextDataModule
from dlkit.data.seq2seq import Seq2SeqBatchLoader, Seq2SeqDataModule
from dlkit.data.tensor import TensorBatchLoader, TensorDataModule, stratified_split
from dlkit.data.text import Vocab

__all__ = [
    "DateTranslationDataModule",
    "DiabetesDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "IDXDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "ParallelTextDataModule",
    "Seq2SeqBatchLoader",
    "Seq2SeqDataModule",
    "TensorBatchLoader",
    "TensorDataModule",
    "Vocab",
    "read_idx",
    "stratified_split",
]
