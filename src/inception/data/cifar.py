"""CIFAR-10 / CIFAR-100 from the official binary or python-pickle files, read into memory.

(The third layout, folders of per-class images, is read by :mod:`.folder`.) ``data_dir``
may be the parent of the extracted folder (``cifar-10-batches-bin``, ...) or that folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import UserError
from ..safe_pickle import UnsafePickleError, load_numpy_pickle
from .memory import MemoryDataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PIXELS = 3 * 32 * 32

# dataset -> layout -> (folder name, train files, test file, meta file)
_FILES = {
    "cifar10": {
        "binary": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin",
                   "batches.meta.txt"),
        "pickle": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"),
    },
    "cifar100": {
        "binary": ("cifar-100-binary", ["train.bin"], "test.bin", "fine_label_names.txt"),
        "pickle": ("cifar-100-python", ["train"], "test", "meta"),
    },
}


def find_cifar(root: Path, dataset: str) -> tuple[str, Path] | None:
    """``('binary' | 'pickle', folder)`` for the CIFAR files under ``root``, or None."""
    for layout, (folder, _, test_file, _) in _FILES[dataset].items():
        for candidate in (root / folder, root):
            if (candidate / test_file).is_file():
                return layout, candidate
    return None


def expected_layouts(dataset: str) -> str:
    return " or ".join(f"{folder}/{test}" for folder, _, test, _ in _FILES[dataset].values())


def cifar_dataset(dataset: str, layout: str, folder: Path, train: bool,
                  transform: Callable | None = None) -> MemoryDataset:
    """The train batches or the test batch of ``folder`` (found by :func:`find_cifar`)."""
    _, train_files, test_file, meta_file = _FILES[dataset][layout]
    files = [folder / f for f in (train_files if train else [test_file])]
    for f in files:
        if not f.is_file():
            raise UserError(f"CIFAR file '{f}' is missing; extract the complete {folder.name} archive")
    read = _read_binary if layout == "binary" else _read_pickle
    parts = [read(f, dataset) for f in files]
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    classes = _class_names(dataset, layout, folder / meta_file)
    if int(labels.max()) >= len(classes):
        raise UserError(f"CIFAR files in '{folder}' hold label {int(labels.max())} but {dataset} has "
                        f"{len(classes)} classes; check data.dataset")
    return MemoryDataset(images, labels, classes, transform=transform,
                         source=f"{folder} ({'train' if train else 'test'})")


def _read_binary(path: Path, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Records of label byte(s) + 3072 pixel bytes (R, G, B planes, row-major)."""
    label_bytes = 1 if dataset == "cifar10" else 2  # cifar100: coarse, fine
    record = label_bytes + PIXELS
    size = path.stat().st_size
    whole, rest = divmod(size, record)
    if size == 0 or rest:
        raise UserError(f"CIFAR file '{path}' is truncated: record {whole + 1} is incomplete ({rest} of {record} "
                        f"bytes, at byte {whole * record}); extract the archive again")
    data = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    images = torch.from_numpy(data[:, label_bytes:].copy()).reshape(-1, 3, 32, 32)
    labels = torch.from_numpy(data[:, label_bytes - 1].astype(np.int64))
    return images, labels


def _unpickle(path: Path) -> dict:
    """A CIFAR python batch: a dict of numpy arrays and lists, read by the project's one
    restricted unpickler (no code, no object arrays, no sizes beyond the file's own)."""
    try:
        obj = load_numpy_pickle(path.read_bytes(), encoding="bytes")
    except UnsafePickleError as e:
        raise UserError(f"CIFAR file '{path}' is refused, for safety: it holds {e}; extract the official "
                        "archive again") from None
    except Exception as e:
        raise UserError(f"CIFAR file '{path}' is not a valid CIFAR python pickle ({type(e).__name__}: {e}); "
                        "extract the archive again") from None
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR file '{path}' is not a valid CIFAR python pickle (no dict inside)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_pickle(path: Path, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    d = _unpickle(path)
    key = "labels" if dataset == "cifar10" else "fine_labels"
    if "data" not in d or key not in d:
        raise UserError(f"CIFAR file '{path}' has no '{key}' and 'data' entries; is it a {dataset} file?")
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d[key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise UserError(f"CIFAR file '{path}' holds entries that are not pixel bytes and integer labels ({e}); "
                        "extract the archive again") from None
    if data.ndim != 2 or data.shape[1] != PIXELS or labels.ndim != 1 or len(data) != len(labels):
        raise UserError(f"CIFAR file '{path}' holds data of shape {data.shape} for labels of shape {labels.shape}; "
                        f"expected (N, {PIXELS}) and (N,); extract the archive again")
    if len(labels) and labels.min() < 0:
        raise UserError(f"CIFAR file '{path}' holds a negative label ({int(labels.min())}); extract the archive "
                        "again")
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    return images, torch.from_numpy(labels)


def _class_names(dataset: str, layout: str, meta: Path) -> list[str]:
    """From the meta file; CIFAR-10 falls back to the standard names when it is absent."""
    if meta.is_file():
        if layout == "binary":
            names = [line.strip() for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            key = "label_names" if dataset == "cifar10" else "fine_label_names"
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(meta).get(key, [])]
        if names:
            return names
    if dataset == "cifar10":
        return list(CIFAR10_CLASSES)
    raise UserError(f"CIFAR-100 class names file '{meta}' is missing or empty; extract the complete archive")
