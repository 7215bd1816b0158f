"""DataLoaders that repeat exactly for a given seed."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UserError


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from torch's per-worker seed, which the loader
    derives from its generator (so it too is fixed by ``seed``)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int, seed: int,
                 device: torch.device, drop_last: bool | None = None, sampler: Sampler | None = None,
                 collate_fn=None) -> DataLoader:
    """Shuffled (by a generator seeded with ``seed``) and dropping the last partial batch
    when ``train``; pinned memory for CUDA; persistent workers when ``workers > 0``.

    A ``sampler`` (e.g. a ``DistributedSampler``) replaces the shuffling; its batches are
    ``batch_size`` per process."""
    drop_last = train if drop_last is None else drop_last
    if drop_last and (len(sampler) if sampler is not None else len(dataset)) < batch_size:
        raise UserError(f"the dataset has {len(dataset)} images, fewer than one batch of {batch_size}; "
                        "lower train.batch_size")
    return DataLoader(
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
        collate_fn=collate_fn,
    )
