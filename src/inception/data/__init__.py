"""Datasets, transforms and loaders.

:mod:`~inception.data.pipeline` decides, from the config, how images reach the model:
``build_loaders(cfg.data, model.data_config, dist, ...)`` gives the train and val loaders,
``build_datasets`` the datasets behind them. :mod:`~inception.data.datasets` opens one split
of any dataset kind (``data.dataset``): ``digits`` (built in), ``cifar10`` / ``cifar100``
(official binary or python files, archives or class folders), ``folder``
(``<split>/<class>/<image>``) and ``list`` (PaddleClas list files). Every user mistake (a
missing path, an empty class, an unknown class) is a one-line
:class:`~inception.errors.UserError` raised while building.
"""

from .folder import load_image
from .loader import Batch, FileLoader, build_loader
from .pipeline import (
                       Preprocessing,
                       augment_preset,
                       build_datasets,
                       build_eval_dataset,
                       build_eval_loader,
                       build_loaders,
                       eval_preprocessing,
                       hflip_enabled,
                       image_size,
)
from .resident import ResidentLoader
from .transforms import eval_transform, train_transform

__all__ = ["Batch", "FileLoader", "Preprocessing", "ResidentLoader", "augment_preset", "build_datasets",
           "build_eval_dataset", "build_eval_loader", "build_loader", "build_loaders", "eval_preprocessing",
           "eval_transform", "hflip_enabled", "image_size", "load_image", "train_transform"]
