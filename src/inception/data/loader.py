"""DataLoaders that repeat exactly for a given seed."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UserError
from .decode import DeferredBatch, collate_images


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from torch's per-worker seed, which the loader
    derives from its generator (so it too is fixed by ``seed``)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class DeviceBatches:
    """A DataLoader of uint8 image batches (the fast pipeline's) that yields them on
    ``device`` as float32, normalized: ``(x / 255 - mean) / std`` in one pass there, in
    ``channels_last`` when asked (``normalize=False``: uint8, as they arrived). Batches of
    :class:`~inception.data.decode.Deferred` JPEGs (``data.gpu_decode``) are decoded there
    first. Other items of a batch (labels, skipped-image records) pass through; labels go
    to the device too. ``sampler``, ``dataset``, ``len()``... are the DataLoader's."""

    def __init__(self, loader: DataLoader, device: torch.device, mean, std, *, channels_last: bool = False,
                 bad_image: str = "skip", normalize: bool = True) -> None:
        self.loader, self.device, self.channels_last = loader, torch.device(device), channels_last
        self.bad_image, self.normalize = bad_image, normalize
        std_t = torch.tensor(std, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(1, -1, 1, 1).to(self.device)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 ``N x C x H x W`` batch -> normalized float32 on the device."""
        x = images.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)    # on the uint8: 4x fewer bytes to move
        return x.float().mul_(self.scale).add_(self.shift) if self.normalize else x

    def __iter__(self):
        for batch in self.loader:
            images, labels, *rest = batch
            if isinstance(images, DeferredBatch):      # data.gpu_decode: the JPEGs are decoded here
                images, failed = images.decode(self.device)
                if failed:
                    labels, rest = self._drop(labels, rest, failed)
                if len(labels) == 0:
                    images = None
            if images is not None:
                images = self.prepare(images)
                labels = labels.to(self.device, non_blocking=True)
            yield (images, labels, *rest)

    def _drop(self, labels: torch.Tensor, rest: list, failed: list) -> tuple:
        """Labels without the images that failed to decode on the device; the failures join
        the batch's skipped-image records (``data.bad_image: skip``) or stop with one line."""
        from .folder import ImageReadError
        from .sampling import Skipped

        if self.bad_image == "error" or not (rest and isinstance(rest[0], list)):
            raise ImageReadError(failed[0][2] + (" (or set data.bad_image: skip to skip such files)"
                                                 if self.bad_image == "error" else ""))
        bad = {i for i, _, _ in failed}
        keep = torch.tensor([i not in bad for i in range(len(labels))])
        return labels[keep], [rest[0] + [Skipped(name, message) for _, name, message in failed], *rest[1:]]

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int, seed: int,
                 device: torch.device, drop_last: bool | None = None, sampler: Sampler | None = None,
                 collate_fn=None, channels_last: bool = False) -> DataLoader | DeviceBatches:
    """Shuffled (by a generator seeded with ``seed``) and dropping the last partial batch
    when ``train``; pinned memory for CUDA; persistent workers when ``workers > 0``.

    A ``sampler`` (e.g. a ``DistributedSampler``) replaces the shuffling; its batches are
    ``batch_size`` per process.

    A dataset whose samples are uint8 (``dataset.normalize`` is its ``(mean, std)``: the
    fast pipeline) is wrapped in :class:`DeviceBatches`, so batches arrive on ``device``
    converted and normalized, as with any other dataset."""
    drop_last = train if drop_last is None else drop_last
    if drop_last and (len(sampler) if sampler is not None else len(dataset)) < batch_size:
        raise UserError(f"the dataset has {len(dataset)} images, fewer than one batch of {batch_size}; "
                        "lower train.batch_size")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train if sampler is None else None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_fn or (collate_images if getattr(dataset, "normalize", None) else None),
    )
    normalize = getattr(dataset, "normalize", None)
    if normalize is None:
        return loader
    return DeviceBatches(loader, device, *normalize, channels_last=channels_last,
                         bad_image=getattr(dataset, "bad_image", "skip"))
