"""Which dataset a config names: one split opened from ``data.dataset`` and ``data.data_dir``.

:func:`open_split` is the one dispatch over the dataset kinds (digits, CIFAR files, folders
or ``.tar``/``.tar.gz`` archives of class folders, list files, caches written by ``inception prepare``). How the
samples are read and transformed comes in a :class:`Reading`, decided by
:mod:`~inception.data.pipeline`; nothing is changed on a dataset after it is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from ..config import DataCfg
from ..errors import UserError
from .archive import ArchiveDataset, archive_classes, archive_dataset, is_archive, to_memory
from .cache import cache_dataset, is_cache
from .cifar import cifar_dataset, expected_layouts, find_cifar
from .digits import digits_dataset
from .folder import find_classes, folder_dataset, list_dataset, load_image, require_dir
from .synthetic import synthetic_dataset


@dataclass(frozen=True)
class Reading:
    """How one split's samples are read.

    Images decoded into memory (digits, CIFAR) go through ``transform`` (a torchvision
    preset). Image files are read by ``file_loader`` and transformed by ``file_transform``
    (default ``transform``); ``normalize`` is the ``(mean, std)`` their uint8 batches still
    need on the device (the fast pipeline), or None when samples arrive normalized.
    """

    transform: Callable
    size: int | None = None           # the output side (synthetic images are made at it)
    file_loader: Callable = load_image
    file_transform: Callable | None = None
    normalize: tuple | None = field(default=None)

    def files(self) -> dict:
        """Keyword arguments of the image-file datasets."""
        return {"transform": self.file_transform or self.transform, "loader": self.file_loader,
                "normalize": self.normalize}


def open_split(cfg: DataCfg, split: str, reading: Reading) -> Dataset:
    """The dataset of one split, labelled by its own classes."""
    if cfg.dataset == "digits":
        return digits_dataset(is_train_part(cfg, split), reading.transform)
    if cfg.dataset == "synthetic":
        return synthetic_dataset(is_train_part(cfg, split), images=cfg.synthetic_images,
                                 classes=cfg.synthetic_classes, size=reading.size or 32, transform=reading.transform)
    if not cfg.data_dir:
        raise UserError(f"data.dataset '{cfg.dataset}' needs data.data_dir (--data-dir PATH)")
    path = Path(cfg.data_dir).expanduser()
    if cfg.dataset in ("cifar10", "cifar100") and is_archive(path):
        fallbacks = ("test",) if split == cfg.val_split else ()
        return archive_dataset(path, split, reading.transform, fallbacks=fallbacks)
    if cfg.dataset == "folder" and is_archive(path):     # class folders in a .tar/.tar.gz, kept encoded in memory
        return ArchiveDataset(path, split, **reading.files())
    root = require_dir(path, "data directory", "set data.data_dir (--data-dir PATH)")
    fix = "create it or set data.train_split / data.val_split"
    if cfg.dataset in ("cifar10", "cifar100"):
        found = find_cifar(root, cfg.dataset)
        if found is not None:
            return cifar_dataset(cfg.dataset, *found, is_train_part(cfg, split), reading.transform)
        split_dir = root / split
        if split == cfg.val_split and not split_dir.is_dir() and (root / "test").is_dir():
            split_dir = root / "test"
        if not (root / cfg.train_split).is_dir() and not split_dir.is_dir():
            raise UserError(f"no {cfg.dataset} data in '{root}': expected {expected_layouts(cfg.dataset)}, "
                            f"or class folders {root}/{split}/<class>/; set data.data_dir")
        files = folder_dataset(require_dir(split_dir, "split folder", fix), reading.transform)
        return to_memory(files) or files     # CIFAR-sized images: decoded once, held in memory
    if cfg.dataset in ("folder", "list") and is_cache(root):     # written by `inception prepare`
        return cache_dataset(root, split, **reading.files())
    if cfg.dataset == "folder":
        return folder_dataset(require_dir(root / split, "split folder", fix), **reading.files())
    if cfg.dataset == "list":
        return list_dataset(_list_file(cfg, root, split), root, **reading.files())
    raise UserError(f"unknown data.dataset '{cfg.dataset}'; choose digits, cifar10, cifar100, folder, list or "
                    "synthetic")


def folder_classes(cfg: DataCfg, split: str) -> list[str] | None:
    """The class names of a folder dataset's ``split`` (a folder, or a split of an archive),
    None when there is no such split."""
    path = Path(cfg.data_dir).expanduser()
    if is_archive(path):
        return archive_classes(path, split)
    return find_classes(path / split) if (path / split).is_dir() else None


def is_train_part(cfg: DataCfg, split: str) -> bool:
    """For datasets with a fixed train/test pair (digits, CIFAR files, synthetic)."""
    if split in (cfg.train_split, "train"):
        return True
    if split in (cfg.val_split, "val", "test"):
        return False
    raise UserError(f"{cfg.dataset} has the splits 'train' and 'test', not '{split}'")


def _list_file(cfg: DataCfg, root: Path, split: str) -> Path:
    if split == cfg.train_split:
        return Path(cfg.train_list).expanduser() if cfg.train_list else root / "train_list.txt"
    if split == cfg.val_split:
        return Path(cfg.val_list).expanduser() if cfg.val_list else root / "val_list.txt"
    return root / f"{split}_list.txt"


def conform(ds, classes: list[str], *, against: str, fix: str) -> None:
    """Relabel ``ds`` to follow ``classes``; a class of its samples outside them is a UserError."""
    if ds.classes == classes:
        return
    index = {name: i for i, name in enumerate(classes)}
    used = set(ds.targets)
    unknown = [name for i, name in enumerate(ds.classes) if i in used and name not in index]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        raise UserError(f"'{ds.source}' has classes not in {against}: {shown}; {fix}")
    ds.relabel([index.get(name, -1) for name in ds.classes], classes)  # -1: a class with no samples
