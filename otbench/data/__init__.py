"""Datasets: registered loaders returning in-memory tensors in [0, 1], and deterministic eval subsets."""
from .base import Dataset, DatasetMeta, EvalSubset, dataset_meta, eval_subset, load_dataset, resolve_data_root
from . import vision, digits  # noqa: F401  (registers the built-in datasets)
from . import cifar  # noqa: F401  (registers cifar10)
from . import stl10, tiny_imagenet  # noqa: F401  (register stl10, tiny-imagenet: OT-Classifier section 4)
from . import synthetic  # noqa: F401  (registers gaussian-sphere-STD and merfish)
from . import tabular  # noqa: F401  (registers winequality-red)

__all__ = ["Dataset", "DatasetMeta", "EvalSubset", "dataset_meta", "eval_subset", "load_dataset", "resolve_data_root"]
