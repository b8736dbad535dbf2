"""DataModules: the embedded digits default, CIFAR-10 and ImageFolder from local roots, synthetic scenes and chests."""

from lit_xai.data.base import ClassificationDataModule, MappedDataset, TensorImageDataset, UnpaddedDistributedSampler
from lit_xai.data.chest import SyntheticChestDataModule
from lit_xai.data.cifar10 import CIFAR10DataModule, DatasetNotFoundError
from lit_xai.data.digits import DigitsDataModule
from lit_xai.data.imagefolder import ImageFolderDataModule
from lit_xai.data.synthetic import SyntheticShapesDataModule

__all__ = [
    "CIFAR10DataModule",
    "ClassificationDataModule",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "MappedDataset",
    "SyntheticChestDataModule",
    "SyntheticShapesDataModule",
    "TensorImageDataset",
    "UnpaddedDistributedSampler",
]
