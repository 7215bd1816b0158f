"""A dataset of images decoded into memory as one uint8 NCHW tensor (digits, CIFAR files)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset


class MemoryDataset(Dataset):
    """``images`` (uint8 N x 3 x H x W) and ``labels`` (int64 N); ``transform`` runs per sample.

    ``source`` names where the images came from, for error messages.
    """

    def __init__(self, images: Tensor, labels: Tensor, classes: list[str], *,
                 transform: Callable | None = None, source: str = "") -> None:
        assert images.dtype == torch.uint8 and images.dim() == 4 and len(images) == len(labels)
        self.images = images
        self.labels = labels.to(torch.int64)
        self.classes = list(classes)
        self.transform = transform
        self.source = source

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def relabel(self, mapping: list[int], classes: list[str]) -> None:
        """Label ``i`` becomes ``mapping[i]``, an index into the new ``classes``."""
        self.labels = torch.tensor(mapping, dtype=torch.int64)[self.labels]
        self.classes = list(classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source}: {len(self)} images, {len(self.classes)} classes)"
