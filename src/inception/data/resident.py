"""Device-resident batches for in-memory datasets (digits, CIFAR files).

:class:`ResidentLoader` holds a :class:`~inception.data.memory.MemoryDataset`'s images on the
training device as uint8 and makes every batch there with a few whole-batch tensor ops:
one gather that crops (zero padding, per-sample offsets) and flips, then the conversion to
float and the normalization. No DataLoader, worker or per-sample transform runs in the
training loop, so on a GPU the input pipeline costs a handful of kernels per step instead of
capping throughput at what CPU workers can transform; on a CPU it is still more than ten
times faster than per-sample transforms. Batches are the ``cifar`` preset's (``RandomCrop(size, padding)`` then a
horizontal flip, each sample its own draw) or, with ``padding=0, hflip=False``, the
``none`` preset's; evaluation batches equal :func:`~inception.data.transforms.eval_transform`'s
bit for bit. :meth:`~inception.data.pipeline.Preprocessing.resident_arguments` gives the
settings of each preset. Progressive resizing (``sizes``, a
:class:`~inception.data.sampling.SizeSchedule`) resizes each train batch to its epoch's size
on the device (antialiased, the model's interpolation) after the crop and flip, and a
:class:`~inception.data.batchaug.BatchAugment` (random erasing, MixUp/CutMix) augments it
there last, as it does the other loaders' batches.

Memory: the device holds ``N x C x (size + 2 * padding)^2`` bytes (CIFAR-10 at 32x32 with
padding 4: 240 MB; at Inception v3's 299x299: 14 GB), besides the dataset's own copy.

Reproducibility. An epoch's order is ``torch.randperm(N)`` from a CPU generator seeded with
``seed + epoch``; its crop offsets and flips come from a second CPU generator seeded from
``(seed, epoch)``, drawn for every position of the epoch at once and moved to the device
once. So batch ``k`` of epoch ``e`` depends on ``(seed, e, k)`` alone, is the same on a CPU
and a GPU, and ``set_epoch(e, start_batch=k)`` resumes an interrupted epoch with exactly the
batches it would have made, without computing the ``k`` skipped ones. As with
``DistributedSampler``, call :meth:`ResidentLoader.set_epoch` before each epoch: without it,
every pass repeats the same epoch.

Distributed (``world_size > 1``):

- Training: every rank draws the same epoch order and takes every ``world_size``-th position
  of it, starting at ``rank``; so global step ``k`` (all ranks together) sees positions
  ``k*B*W .. (k+1)*B*W - 1`` of the order, as one process with batch ``B*W`` would. With
  ``drop_last`` (the default) the order is cut to a multiple of ``B*W``; without, it is
  padded to a multiple of ``W`` by repeating its start (like ``DistributedSampler``), and
  the last batch may be partial. Either way all ranks run the same number of batches.
- Evaluation: rank ``r`` takes samples ``r, r + W, r + 2W, ...`` in dataset order, with no
  padding duplicates, so counts summed over ranks are exactly ``N``. Ranks may then have
  different numbers of samples and of batches (by at most one), which is fine for an
  evaluation loop that only sums counts afterwards, but never put a collective inside it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from .. import accel
from ..errors import UserError
from .batchaug import BatchAugment
from .loader import Batch
from .memory import MemoryDataset
from .transforms import interpolation_mode

# Bound on the float scratch memory of the one-off resize (per chunk of images).
_RESIZE_CHUNK_BYTES = 256 * 2**20


class ResidentLoader:
    """Batches of a uint8 image tensor held on ``device``: :class:`~inception.data.loader.Batch` es
    ``(images, labels, [])`` with images
    ``dtype`` ``B x C x size x size`` normalized with ``mean``/``std`` (in ``[0, 1]`` units)
    and labels int64, both on ``device``.

    ``train=True``: a new order each epoch (see :meth:`set_epoch`), random crop with zero
    ``padding`` and, when ``hflip``, a random horizontal flip (p = 0.5) per sample;
    ``drop_last`` defaults to True. ``train=False``: dataset order, no augmentation, the last
    partial batch kept (``drop_last`` defaults to False). Images not ``size x size`` are
    resized once up front (short side to ``resize_size``, default ``size``, with antialiasing
    and ``interpolation``, then a center crop to ``size``, as the transform presets do).
    ``channels_last`` gives NHWC-strided batches; ``dtype`` is the batches' float type.
    ``sizes`` (epoch -> size) resizes train batches to their epoch's size;
    ``batch_augment(images, labels, epoch, batch)`` augments them last.

    ``len(loader)`` is the number of batches per epoch for this rank (``num_samples`` its
    samples, ``nbytes`` the device memory held); a pass after
    ``set_epoch(e, start_batch=k)`` yields batches ``k .. len(loader) - 1`` only.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, batch_size: int, train: bool, device: torch.device,
                 size: int, mean: Sequence[float], std: Sequence[float], padding: int = 4, hflip: bool = True,
                 drop_last: bool | None = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32,
                 interpolation: str = "bilinear", resize_size: int | None = None,
                 sizes: Callable[[int], int] | None = None, batch_augment: BatchAugment | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")
        n, channels = images.shape[:2]
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel), got {mean} and {std}")
        resize_size = resize_size or size
        if min(batch_size, size, world_size) < 1 or resize_size < size or padding < 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad arguments: batch_size={batch_size}, size={size}, resize_size={resize_size}, "
                             f"padding={padding}, rank={rank}, world_size={world_size}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        self.device = torch.device(device)
        self.batch_size, self.train, self.size = batch_size, train, size
        self.padding = padding if train else 0
        self.hflip = hflip and train
        self.drop_last = train if drop_last is None else drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last, self.dtype = channels_last, dtype
        self.sizes = sizes if train else None
        self.batch_augment = batch_augment if train else None
        self._interpolation = interpolation_mode(interpolation)
        self.dataset_size, self.dataset = n, None      # from_dataset sets the dataset
        self.epoch, self._start_batch = 0, 0

        # Samples per rank and per epoch, and the length of the global epoch order they come from.
        if train:
            if self.drop_last:
                self._total = n // (batch_size * world_size) * (batch_size * world_size)
            else:
                self._total = math.ceil(n / world_size) * world_size
            self.num_samples = self._total // world_size
        else:
            self._total = n
            self.num_samples = len(range(rank, n, world_size))
        whole, part = divmod(self.num_samples, batch_size)
        self._num_batches = whole if self.drop_last else whole + (part > 0)
        if self.drop_last and self._num_batches == 0:
            per = f" for each of {world_size} processes ({batch_size * world_size} images)" if world_size > 1 else ""
            raise UserError(f"the dataset has {n} images, fewer than one batch of {batch_size}{per}; "
                            "lower train.batch_size")

        # uint8 N x C x Hp x Wp, or N x Hp x Wp x C with channels_last; Hp = Wp = size + 2 * padding.
        self._store = self._load(images, channels, interpolation, resize_size)
        self.labels = labels.to(self.device, torch.int64)
        mean_t, std_t = (torch.tensor(v, dtype=torch.float32, device=self.device) for v in (mean, std))
        if channels_last:  # tiled along a row of B x s x (s * C)
            self._mean, self._std = mean_t.repeat(size), std_t.repeat(size)
        else:
            self._mean, self._std = mean_t.view(1, -1, 1, 1), std_t.view(1, -1, 1, 1)
        self._strides, self._window = self._window_offsets(channels)

    @classmethod
    def from_dataset(cls, dataset: MemoryDataset, **kwargs) -> "ResidentLoader":
        """A loader over ``dataset.images`` / ``dataset.labels`` (``loader.dataset`` is
        ``dataset``); :meth:`Preprocessing.resident_arguments
        <inception.data.pipeline.Preprocessing.resident_arguments>` gives the arguments that
        reproduce the transform presets."""
        loader = cls(dataset.images, dataset.labels, **kwargs)
        loader.dataset = dataset
        return loader

    def __len__(self) -> int:
        return self._num_batches

    @property
    def nbytes(self) -> int:
        """Device memory held by the images and labels."""
        return self._store.nbytes + self.labels.nbytes

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Use epoch ``epoch``'s order and augmentation; the next pass starts at batch
        ``start_batch`` (to resume an interrupted epoch), later passes at batch 0."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        self.epoch, self._start_batch = int(epoch), int(start_batch)

    def __iter__(self) -> Iterator[Batch]:
        start, self._start_batch = self._start_batch, 0
        if not self.train:
            return self._eval_batches(start)
        order, aug = self._epoch_plan(self.epoch)
        return self._train_batches(order, aug, start, self.epoch)

    # -- set-up ---------------------------------------------------------------------------

    def _load(self, images: Tensor, channels: int, interpolation: str, resize_size: int) -> Tensor:
        """Copy ``images`` to the device at ``size`` (short side resized to ``resize_size``
        and center-cropped, once, if need be), inside a zero border of ``padding``; channels
        last when ``channels_last`` (batches then need no layout change)."""
        n, _, h, w = images.shape
        s, p = self.size, self.padding
        if self.channels_last:
            store = torch.zeros(n, s + 2 * p, s + 2 * p, channels, dtype=torch.uint8, device=self.device)
            inner = store.permute(0, 3, 1, 2)[:, :, p:p + s, p:p + s]
        else:
            store = torch.zeros(n, channels, s + 2 * p, s + 2 * p, dtype=torch.uint8, device=self.device)
            inner = store[:, :, p:p + s, p:p + s]
        if (h, w) == (s, s) and resize_size == s:
            inner.copy_(images)
            return store
        interp = interpolation_mode(interpolation)
        big = max(h * w, resize_size * resize_size * max(h, w) // min(h, w))
        chunk = max(1, _RESIZE_CHUNK_BYTES // (4 * channels * big))
        for i in range(0, n, chunk):
            part = images[i:i + chunk].to(self.device)
            part = TF.resize(part, [resize_size], interpolation=interp, antialias=True)  # short side, as the presets
            inner[i:i + chunk] = TF.center_crop(part, [s, s])
        return store

    def _window_offsets(self, channels: int) -> tuple[tuple[int, int, int], Tensor]:
        """Strides of (sample, row, column) in the store, and the flat offsets of a window's
        pixels from its first one, in the store's layout: [0] as is, [1] mirrored."""
        st = self._store.stride()
        sn, sy, sx, sc = (st[0], st[1], st[2], st[3]) if self.channels_last else (st[0], st[2], st[3], st[1])
        ar = torch.arange(self.size, device=self.device)
        c = torch.arange(channels, device=self.device)
        windows = []
        for cols in (ar, ar.flip(0)):
            if self.channels_last:   # s x s x C
                windows.append((ar[:, None] * sy + cols * sx)[:, :, None] + c * sc)
            else:                    # C x s x s
                windows.append((c * sc)[:, None, None] + (ar[:, None] * sy + cols * sx))
        return (sn, sy, sx), torch.stack(windows)

    def _to_device(self, t: Tensor) -> Tensor:
        if accel.pin_memory(self.device):
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor]:
        """This rank's sample indices for ``epoch`` and, per index, (row offset, column
        offset, flip), both on the device. Both depend on (seed, epoch) only."""
        n, total, w = self.dataset_size, self._total, self.world_size
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        if total <= n:
            order = order[:total]
        else:  # pad with the start of the order (repeated if need be) to a multiple of the world size
            order = order.repeat(math.ceil(total / n))[:total]
        g = torch.Generator().manual_seed(_aug_seed(self.seed, epoch))
        aug = torch.zeros(total, 3, dtype=torch.int64)
        if self.padding:
            aug[:, :2] = torch.randint(0, 2 * self.padding + 1, (total, 2), generator=g)
        if self.hflip:
            aug[:, 2] = torch.randint(0, 2, (total,), generator=g)
        return self._to_device(order[self.rank::w]), self._to_device(aug[self.rank::w])

    # -- batches --------------------------------------------------------------------------

    def _train_batches(self, order: Tensor, aug: Tensor, start: int, epoch: int) -> Iterator[Batch]:
        b = self.batch_size
        size = self.sizes(epoch) if self.sizes is not None else self.size
        for k in range(start, len(self)):
            idx = order[k * b:(k + 1) * b]
            if self.padding or self.hflip:
                images = self._crop_flip(idx, aug[k * b:(k + 1) * b])
            else:
                images = self._store.index_select(0, idx)
            images, labels = self._normalize(images), self.labels[idx]
            if size != self.size:
                images = self._resize(images, size)
            if self.batch_augment is not None:
                images, labels = self.batch_augment(images, labels, epoch, k)
            yield Batch(images, labels, [])

    def _eval_batches(self, start: int) -> Iterator[Batch]:
        # Rank r's samples are r, r + W, ...: each batch is a strided view, no gather needed.
        b, r, w = self.batch_size, self.rank, self.world_size
        for k in range(start, len(self)):
            lo, hi = k * b, min((k + 1) * b, self.num_samples)
            sl = slice(r + lo * w, r + (hi - 1) * w + 1, w)
            yield Batch(self._normalize(self._store[sl]), self.labels[sl], [])

    def _crop_flip(self, idx: Tensor, aug: Tensor) -> Tensor:
        """One gather (``take`` with flat indices) from the padded store: sample i's window
        starts at row aug[i, 0], column aug[i, 1], and its columns run backwards when aug[i, 2]
        is 1. The result has the store's layout."""
        stride_n, stride_y, stride_x = self._strides
        start = idx * stride_n + aug[:, 0] * stride_y + aug[:, 1] * stride_x      # B: each window's first pixel
        if self.hflip:
            flat = self._window.index_select(0, aug[:, 2]).add_(start.view(-1, 1, 1, 1))
        else:
            flat = self._window[0] + start.view(-1, 1, 1, 1)
        return self._store.view(-1).take(flat)

    def _resize(self, x: Tensor, size: int) -> Tensor:
        """A normalized batch resized to ``size`` (antialiased), in the batches' layout."""
        x = TF.resize(x, [size, size], interpolation=self._interpolation, antialias=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _normalize(self, x: Tensor) -> Tensor:
        """uint8 batch in the store's layout -> normalized ``dtype`` B x C x s x s.

        The same operations as ToDtype(float32, scale=True) + Normalize, so results match
        them exactly. Channels-last batches are normalized as B x s x (s * C) against
        mean/std tiled along a row (a contiguous broadcast; broadcasting over a last dimension
        of 3 is several times slower on CPUs) and returned as a permuted view.
        """
        x = x.to(torch.float32)
        if self.channels_last:
            n, s, _, c = x.shape
            x = x.view(n, s, s * c).mul_(1.0 / 255).sub_(self._mean).div_(self._std).view(n, s, s, c)
            x = x.permute(0, 3, 1, 2)
        else:
            x = x.mul_(1.0 / 255).sub_(self._mean).div_(self._std)
        return x if self.dtype == torch.float32 else x.to(self.dtype)

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        dist = f", rank {self.rank}/{self.world_size}" if self.world_size > 1 else ""
        return (f"{type(self).__name__}({self.dataset_size} images, {mode}, batch {self.batch_size}, "
                f"{len(self)} batches, {self.size}x{self.size} on {self.device}{dist})")


def _aug_seed(seed: int, epoch: int) -> int:
    """A seed for the augmentation draws of (seed, epoch), independent of the order's ``seed + epoch``."""
    # The key keeps the class's earlier name: the same seed draws the same crops and flips as before.
    digest = hashlib.blake2b(f"inception.DeviceLoader:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
