"""Loaders of datasets that are not held on the device: a DataLoader whose batches arrive
on the device, in the same :class:`Batch` form as the device-resident loader's."""

from __future__ import annotations

import logging
import os
import random
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import accel
from ..errors import UserError
from .batchaug import BatchAugment
from .decode import DeferredBatch, collate_images
from .folder import ImageReadError
from .sampling import Skipped

log = logging.getLogger("inception")
_capped: set = set()


class Batch(NamedTuple):
    """What every loader yields: images and labels on the device (``images`` is None when
    every image of the batch was unreadable) and the :class:`Skipped` records of the
    images left out."""

    images: Tensor | None
    labels: Tensor | None
    skipped: list = []


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cap_workers(workers: int) -> int:
    """``workers``, at most the usable cores: more worker processes than cores only
    compete for them (PyTorch warns about it). Noted once per value."""
    cores = usable_cores()
    if workers <= cores:
        return workers
    if workers not in _capped:
        _capped.add(workers)
        log.info("data.workers %d capped at the %d usable CPU cores", workers, cores)
    return cores


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from torch's per-worker seed, which the loader
    derives from its generator (so it too is fixed by ``seed``)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class FileLoader:
    """A DataLoader whose batches arrive on ``device`` as :class:`Batch` es.

    Float samples (the torchvision presets) are moved there; uint8 samples (the fast
    pipeline; ``normalize`` is their ``(mean, std)``) are converted and normalized there in
    one pass, ``(x / 255 - mean) / std``. Batches of :class:`~inception.data.decode.Deferred`
    JPEGs (``data.gpu_decode``) are decoded there first. ``channels_last`` gives NHWC
    batches. ``set_epoch(epoch, start_batch)`` selects the epoch's order and the batch the
    next pass starts at, as the device-resident loader's does. A ``batch_augment``
    (:class:`~inception.data.batchaug.BatchAugment`: random erasing, MixUp/CutMix) then
    augments batch ``k`` of the epoch on the device. ``sampler``, ``dataset``, ``len()``...
    are the DataLoader's.
    """

    def __init__(self, loader: DataLoader, device: torch.device, normalize: tuple | None = None, *,
                 channels_last: bool = False, bad_image: str = "skip", seed: int = 0,
                 batch_augment: BatchAugment | None = None) -> None:
        self.loader, self.device, self.channels_last = loader, torch.device(device), channels_last
        self.normalize, self.bad_image, self.seed = normalize, bad_image, seed
        self.batch_augment, self.epoch, self.start_batch = batch_augment, 0, 0
        if normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32) for v in normalize)
            self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(self.device)
            self.shift = (-mean / std).view(1, -1, 1, 1).to(self.device)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Epoch ``epoch``'s order, starting at batch ``start_batch`` of it (a resumed epoch)."""
        self.epoch, self.start_batch = epoch, start_batch
        sampler = self.loader.sampler
        if callable(getattr(sampler, "set_epoch", None)):     # EpochSampler, ShardSampler
            sampler.set_epoch(epoch, start_batch=start_batch, batch_size=self.loader.batch_size)
        elif start_batch:
            raise ValueError("this loader shuffles with a plain generator and cannot start mid-epoch; "
                             "build it with an EpochSampler")
        else:
            self.loader.generator.manual_seed(self.seed + epoch)

    def prepare(self, images: Tensor) -> Tensor:
        """A batch of samples -> on the device (uint8 ones converted and normalized there)."""
        x = images.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)    # on the uint8: 4x fewer bytes to move
        return x.float().mul_(self.scale).add_(self.shift) if self.normalize is not None else x

    def __iter__(self):
        for k, (images, labels, *rest) in enumerate(self.loader, start=self.start_batch):
            skipped = rest[0] if rest and isinstance(rest[0], list) else []
            if isinstance(images, DeferredBatch):      # data.gpu_decode: the JPEGs are decoded here
                images, failed = images.decode(self.device)
                if failed:
                    labels, skipped = self._drop(labels, rest, failed)
                if len(labels) == 0:
                    images = None
            if images is not None:
                images = self.prepare(images)
                labels = labels.to(self.device, non_blocking=True)
                if self.batch_augment is not None:
                    images, labels = self.batch_augment(images, labels, self.epoch, k)
            yield Batch(images, labels, skipped)

    def _drop(self, labels: Tensor, rest: list, failed: list) -> tuple:
        """Labels without the images that failed to decode on the device; the failures join
        the batch's skipped-image records (``data.bad_image: skip``) or stop with one line."""
        if self.bad_image == "error" or not (rest and isinstance(rest[0], list)):
            raise ImageReadError(failed[0][2] + (" (or set data.bad_image: skip to skip such files)"
                                                 if self.bad_image == "error" else ""))
        bad = {i for i, _, _ in failed}
        keep = torch.tensor([i not in bad for i in range(len(labels))])
        return labels[keep], rest[0] + [Skipped(name, message) for _, name, message in failed]

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int, seed: int,
                 device: torch.device, drop_last: bool | None = None, sampler: Sampler | None = None,
                 collate_fn=None, channels_last: bool = False,
                 batch_augment: BatchAugment | None = None) -> FileLoader:
    """A :class:`FileLoader`: shuffled (by a generator seeded with ``seed``) and dropping the
    last partial batch when ``train``; pinned memory for CUDA; persistent workers when
    ``workers > 0`` (at most the usable cores).

    A ``sampler`` (an :class:`~inception.data.sampling.EpochSampler` or ``ShardSampler``)
    replaces the shuffling; its batches are ``batch_size`` per process. A dataset whose
    samples are uint8 (``dataset.normalize`` is their ``(mean, std)``: the fast pipeline) has
    its batches converted and normalized on ``device``; ``batch_augment`` then augments them there."""
    drop_last = train if drop_last is None else drop_last
    if drop_last and (len(sampler) if sampler is not None else len(dataset)) < batch_size:
        raise UserError(f"the dataset has {len(dataset)} images, fewer than one batch of {batch_size}; "
                        "lower train.batch_size")
    workers = cap_workers(workers)
    normalize = getattr(dataset, "normalize", None)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train if sampler is None else None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=accel.pin_memory(torch.device(device)),
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_fn or (collate_images if normalize else None),
    )
    return FileLoader(loader, device, normalize, channels_last=channels_last,
                      bad_image=getattr(dataset, "bad_image", "skip"), seed=seed, batch_augment=batch_augment)
