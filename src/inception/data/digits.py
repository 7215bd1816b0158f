"""The built-in ``digits`` dataset: the 1,797 handwritten 8x8 digits of the UCI "Optical
Recognition of Handwritten Digits" set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), as
scikit-learn bundles them (``sklearn.datasets.load_digits``), shipped in this package
(``digits.npz``, 49 KB: pixels 0..16, labels, and scikit-learn's stratified 80/20 split with
``random_state=0``, in its order), upsampled to 32x32 RGB so CIFAR-sized models train on it.
No download and no scikit-learn: ``make demo`` needs only the core install."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .memory import MemoryDataset

CLASSES = [str(d) for d in range(10)]
SIZE = 32
FILE = Path(__file__).with_name("digits.npz")


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{'train': (images, labels), 'test': ...}``: the fixed stratified 80/20 split."""
    with np.load(FILE) as f:
        raw, target, parts = f["pixels"], f["labels"], {"train": f["train"], "test": f["test"]}
    pixels = torch.from_numpy(raw.astype(np.float32)).reshape(-1, 1, 8, 8) / 16.0  # values 0..16
    pixels = F.interpolate(pixels, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    images = (pixels * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(target.astype(np.int64))
    index = {part: torch.from_numpy(idx.astype(np.int64)) for part, idx in parts.items()}
    return {part: (images[i], labels[i]) for part, i in index.items()}


def digits_dataset(train: bool, transform: Callable | None = None) -> MemoryDataset:
    """The train (1,437 images) or test (360 images) part; the split is the same on every call."""
    part = "train" if train else "test"
    images, labels = _load()[part]
    return MemoryDataset(images, labels.clone(), CLASSES, transform=transform, source=f"digits ({part})")
