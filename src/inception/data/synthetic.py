"""The ``synthetic`` dataset: random uint8 images made in memory (seeded, no files), so that
``inception train`` can time its own loop with no input pipeline in the way, as
``inception bench model`` times the step alone. Held on the device and batched there like
the digits and CIFAR files (``data.device_resident``), with the same crops and flips."""

from __future__ import annotations

from typing import Callable

import torch

from .memory import MemoryDataset

SEEDS = {True: 0, False: 1}     # train, val


def synthetic_dataset(train: bool, *, images: int, classes: int, size: int,
                      transform: Callable | None = None) -> MemoryDataset:
    """``images`` random RGB images (train; a tenth of them, at least one, for val) of
    ``size`` x ``size``, labelled ``0, 1, ..., classes - 1`` in turn."""
    count = images if train else max(1, images // 10)
    gen = torch.Generator().manual_seed(SEEDS[train])
    pixels = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(count) % classes
    names = [f"class{i:0{len(str(classes - 1))}d}" for i in range(classes)]
    return MemoryDataset(pixels, labels, names, transform=transform,
                         source=f"synthetic ({'train' if train else 'val'}, {size}x{size})")
