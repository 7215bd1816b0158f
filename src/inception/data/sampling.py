"""A training data order that resumes exactly, and datasets that survive bad images.

Exact resume needs the batches after a restart to be the very ones an uninterrupted run
would have drawn, augmentation included. Saving DataLoader workers' RNG states cannot do
that (workers are processes that die with the run), so nothing random depends on them:

* :class:`EpochSampler` draws a permutation from ``(seed, epoch)`` (the same one
  ``DistributedSampler`` draws, so the order is the same for any world size), shards it
  by rank, and starts at any batch of the epoch, so a resumed epoch reads only the
  batches it still needs. It yields ``(epoch, index)`` keys, or ``(epoch, index, size)``
  with a :class:`SizeSchedule` (progressive resizing: the size is a function of the epoch).
* :class:`ShardSampler` gives each process its own slice of an evaluation set, with no
  duplicates, so counts summed over processes are exact.
* :class:`SeededSamples` seeds each sample's augmentation from ``(seed, epoch, index)``,
  in whichever worker it lands, and restores the caller's RNG afterwards (with
  ``workers=0`` the training process's own RNG, which dropout uses, is untouched); a key's
  size selects the size of the dataset's :class:`~inception.data.transforms.SizedTransform`.

:class:`SeededSamples` also applies the ``data.bad_image`` policy: with ``skip`` an image
that cannot be decoded becomes a :class:`Skipped` record that :func:`collate_skipping`
drops from the batch and reports; with ``error`` it stops training with a line naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.utils.data import Dataset, Sampler

from ..errors import UserError
from .decode import collate_images

BAD_IMAGE_POLICIES = ("skip", "error")


class Skipped(NamedTuple):
    """A sample that could not be read."""

    path: str
    reason: str


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation, well mixed (splitmix64-style)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    x ^= x >> 32
    return x & (2**63 - 1)


@dataclass(frozen=True)
class SizeSchedule:
    """Progressive resizing: the train image size of each epoch, ``sizes`` in equal shares of
    ``epochs`` (epoch ``e`` trains at ``sizes[e * len(sizes) // epochs]``; epochs past
    ``epochs`` at the last size). A pure function of the epoch, so a resumed epoch has the
    size it had."""

    sizes: tuple[int, ...]
    epochs: int

    def __call__(self, epoch: int) -> int:
        return self.sizes[min(epoch * len(self.sizes) // self.epochs, len(self.sizes) - 1)]


class EpochSampler(Sampler):
    """``DistributedSampler(shuffle=True, drop_last=True)``'s order, startable mid-epoch.

    ``set_epoch(epoch, start_batch, batch_size)`` selects the epoch and skips the first
    ``start_batch`` batches of this rank; iteration yields ``(epoch, index)``, or
    ``(epoch, index, sizes(epoch))`` with ``sizes`` (a :class:`SizeSchedule`).
    """

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 sizes: Callable[[int], int] | None = None) -> None:
        self.size, self.rank, self.world_size, self.seed, self.sizes = size, rank, world_size, seed, sizes
        self.num_samples = size // world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0, batch_size: int = 1) -> None:
        self.epoch, self.start = epoch, start_batch * batch_size

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=g)[: self.num_samples * self.world_size]
        return order[self.rank::self.world_size].tolist()

    def __iter__(self):
        epoch = self.epoch
        if self.sizes is None:
            for index in self.indices()[self.start:]:
                yield epoch, index
        else:
            size = self.sizes(epoch)
            for index in self.indices()[self.start:]:
                yield epoch, index, size

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: every sample on exactly one process, with no
    padding duplicates (unlike ``DistributedSampler``), so summed counts are exact (for
    evaluation). ``set_epoch`` only sets where the next pass starts: the order is fixed."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size
        self.start = 0

    def set_epoch(self, epoch: int, start_batch: int = 0, batch_size: int = 1) -> None:
        self.start = start_batch * batch_size

    def __iter__(self):
        return iter(range(self.rank + self.start * self.world_size, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank + self.start * self.world_size, self.n, self.world_size))


class SeededSamples(Dataset):
    """Wraps a dataset: key ``(epoch, index)`` (or a plain index, epoch 0) gives sample
    ``index`` with its augmentation seeded by ``(seed, epoch, index)``; unreadable images
    follow ``bad_image``. Key ``(epoch, index, size)`` also selects ``size`` in the dataset's
    transform (a :class:`~inception.data.transforms.SizedTransform`). Other attributes
    (``classes``, ``targets``...) pass through."""

    def __init__(self, dataset: Dataset, *, seed: int = 0, bad_image: str = "skip") -> None:
        if bad_image not in BAD_IMAGE_POLICIES:
            raise UserError(f"data.bad_image '{bad_image}' is not valid; choose skip or error")
        self.dataset, self.seed, self.bad_image = dataset, seed, bad_image

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        if name == "dataset":      # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _path(self, index: int) -> str:
        samples = getattr(self.dataset, "samples", None)
        return str(samples[index][0]) if samples is not None else f"sample {index}"

    def __getitem__(self, key):
        epoch, index, *size = key if isinstance(key, tuple) else (0, key)
        if size:
            self.dataset.transform.size = size[0]
        # Only the CPU generator: torch.manual_seed also seeds every accelerator's (~0.1 ms a call).
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return self.dataset[index]
        except UserError as e:   # ImageReadError: corrupt, empty, not an image, too large
            if self.bad_image == "error":
                raise UserError(f"{e} (or set data.bad_image: skip to skip such files)") from None
            return Skipped(self._path(index), str(e))
        finally:
            torch.set_rng_state(state)


def collate_skipping(batch: list) -> tuple:
    """``(images, labels, skipped)``: the readable samples collated, and the
    :class:`Skipped` records (``images`` is None when the whole batch was unreadable)."""
    good = [item for item in batch if not isinstance(item, Skipped)]
    skipped = [item for item in batch if isinstance(item, Skipped)]
    if not good:
        return None, None, skipped
    images, labels = collate_images(good)
    return images, labels, skipped
