"""The built-in ``digits`` dataset: scikit-learn's 1,797 handwritten 8x8 digits (bundled with
scikit-learn, no download), upsampled to 32x32 RGB so CIFAR-sized models train on it."""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from .memory import MemoryDataset

CLASSES = [str(d) for d in range(10)]
SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{'train': (images, labels), 'test': ...}``: a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 - scikit-learn takes a second to import; digits only
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    digits = load_digits()
    pixels = torch.from_numpy(digits.data).float().reshape(-1, 1, 8, 8) / 16.0  # values 0..16
    pixels = F.interpolate(pixels, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    images = (pixels * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(torch.arange(len(labels)).numpy(), test_size=TEST_FRACTION,
                                           stratify=digits.target, random_state=SPLIT_SEED)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return {"train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}


def digits_dataset(train: bool, transform: Callable | None = None) -> MemoryDataset:
    """The train (1,437 images) or test (360 images) part; the split is the same on every call."""
    part = "train" if train else "test"
    images, labels = _load()[part]
    return MemoryDataset(images, labels.clone(), CLASSES, transform=transform, source=f"digits ({part})")
