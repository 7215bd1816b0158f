"""Which dataset a config names: one split opened from ``data.dataset`` and ``data.data_dir``.

:func:`open_split` is the one dispatch over the dataset kinds (digits, CIFAR files, folders
or ``.tar``/``.tar.gz`` archives of class folders, list files, caches written by ``inception prepare``). How the
samples are read and transformed comes in a :class:`Reading`, decided by
:mod:`~inception.data.pipeline`; nothing is changed on a dataset after it is built.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataCfg, missing_data_dir
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
        raise missing_data_dir(cfg.dataset)
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


# --------------------------------------------------------------------------------------
# Held-out validation (data.holdout)

class Part(Dataset):
    """Samples ``indices`` of ``dataset``, in that order; ``classes``, ``transform`` and the
    rest pass through. ``samples`` and ``targets`` are the part's own, and so are ``images``
    and ``labels`` of an in-memory dataset (so it can still be batched on the device)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], source: str) -> None:
        self.dataset, self.indices, self.source = dataset, [int(i) for i in indices], source
        if hasattr(dataset, "samples"):
            self.samples = [dataset.samples[i] for i in self.indices]
        if hasattr(dataset, "images") and hasattr(dataset, "labels"):
            index = torch.as_tensor(self.indices, dtype=torch.int64)
            self.images, self.labels = dataset.images[index], dataset.labels[index]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]

    def __getattr__(self, name):
        if name == "dataset":      # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    @property
    def targets(self) -> list[int]:
        targets = self.dataset.targets
        return [int(targets[i]) for i in self.indices]

    def __repr__(self) -> str:
        return f"Part({self.source}: {len(self)} images, {len(self.classes)} classes)"


def holdout_indices(targets: Sequence[int], fraction: float, seed: int = 0) -> list[int]:
    """The sorted indices of a class-stratified ``fraction`` of samples: ``round(fraction x n)``
    of each class's ``n``, at least one where ``n >= 2`` and never all of them, drawn by
    ``seed`` alone (not the training seed: every run of a study validates on the same images)."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(targets):
        by_class[int(y)].append(i)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for y in sorted(by_class):
        members = by_class[y]
        k = min(max(round(fraction * len(members)), 1 if len(members) >= 2 else 0), len(members) - 1)
        held.extend(int(i) for i in rng.permutation(members)[:k])
    return sorted(held)


def hold_out(train: Dataset, held_view: Dataset, cfg: DataCfg) -> tuple[Part, Part]:
    """``(training part, held-out part)`` of the train split by ``data.holdout``: ``train`` is
    the split read with the training augmentation, ``held_view`` the same split read for
    evaluation (both list the same samples in the same order)."""
    if len(train) != len(held_view):
        raise ValueError(f"the two readings of the train split differ: {len(train)} and {len(held_view)} samples")
    held = holdout_indices(train.targets, cfg.holdout, cfg.holdout_seed)
    if not held:
        raise UserError(f"data.holdout {cfg.holdout} holds out no image of the {len(train)} in the train split; "
                        "raise it, or set data.holdout: 0 to validate on data.val_split")
    kept = sorted(set(range(len(train))) - set(held))
    source = getattr(train, "source", cfg.train_split)
    tag = f"data.holdout {cfg.holdout:g}, data.holdout_seed {cfg.holdout_seed}"
    return (Part(train, kept, f"{source} less the held-out part ({tag})"),
            Part(held_view, held, f"{source}, held out ({tag})"))
