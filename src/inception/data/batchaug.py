"""Train-batch augmentation on the device: random erasing, MixUp and CutMix.

Every loader kind (:class:`~inception.data.loader.FileLoader`,
:class:`~inception.data.resident.ResidentLoader`) hands its normalized train batches to one
:class:`BatchAugment`, on the device the batch is already on, so the augmentation costs no
host work and is the same for files, in-memory and device-resident data:

1. ``data.random_erasing``: torchvision's ``v2.RandomErasing`` per sample (probability p;
   a box of 2-33% of the area, aspect ratio 0.3-3.3, the first of 10 draws that fits; set
   to 0, i.e. the mean colour after normalization), all boxes of a batch drawn at once and
   applied as one masked fill;
2. ``data.mixup_alpha`` / ``data.cutmix_alpha``: torchvision's ``v2.MixUp`` / ``v2.CutMix``
   (``v2.RandomChoice`` of the two when both are set) on the whole batch, with probability
   ``data.mix_prob``; labels become soft ``B x num_classes`` float targets (one-hot for a
   batch left unmixed, so every batch of a run has the same target type).

Batch ``k`` of epoch ``e`` on rank ``r`` is augmented from seeds of ``(seed, r, e, k)`` alone
(drawn on the CPU, the process's own RNG state restored), so a resumed epoch reproduces its
batches exactly, on a CPU as on a GPU.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor
from torch.nn.functional import one_hot
from torchvision.transforms import v2

from ..config import DataCfg

#: torchvision's RandomErasing defaults.
ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10


class BatchAugment:
    """``(images, labels) -> (images, labels)`` for train batch ``batch`` of ``epoch`` (see the module)."""

    def __init__(self, *, num_classes: int, erasing: float = 0.0, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, mix_prob: float = 1.0, seed: int = 0, rank: int = 0) -> None:
        self.num_classes, self.erasing, self.mix_prob = num_classes, erasing, mix_prob
        self.seed, self.rank = seed, rank
        mixers = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + \
                 ([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
        self.mix = None if not mixers else mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    @classmethod
    def from_config(cls, cfg: DataCfg, *, num_classes: int, seed: int = 0, rank: int = 0) -> "BatchAugment | None":
        """The batch augmentation ``cfg`` asks for, or None (no random erasing, no mixing)."""
        if not (cfg.random_erasing or cfg.mixup_alpha or cfg.cutmix_alpha):
            return None
        return cls(num_classes=num_classes, erasing=cfg.random_erasing, mixup_alpha=cfg.mixup_alpha,
                   cutmix_alpha=cfg.cutmix_alpha, mix_prob=cfg.mix_prob, seed=seed, rank=rank)

    def __call__(self, images: Tensor, labels: Tensor, epoch: int, batch: int) -> tuple[Tensor, Tensor]:
        if self.erasing:
            g = torch.Generator().manual_seed(self._seed("erase", epoch, batch))
            images = erase(images, self.erasing, g)
        if self.mix is None:
            return images, labels
        channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
        with torch.random.fork_rng(devices=[]):      # the CPU generator only, restored afterwards
            torch.default_generator.manual_seed(self._seed("mix", epoch, batch))
            if self.mix_prob >= 1 or float(torch.rand(())) < self.mix_prob:
                images, labels = self.mix(images, labels)
            else:
                labels = one_hot(labels, self.num_classes).float()
        if channels_last:                                # MixUp's roll gives a contiguous batch
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def _seed(self, what: str, epoch: int, batch: int) -> int:
        key = f"inception.BatchAugment:{what}:{self.seed}:{self.rank}:{epoch}:{batch}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & (2**63 - 1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(erasing={self.erasing}, mix={self.mix!r}, mix_prob={self.mix_prob}, "
                f"num_classes={self.num_classes})")


def erase_boxes(n: int, height: int, width: int, p: float, g: torch.Generator) -> tuple[Tensor, ...]:
    """``(top, left, h, w, erased)`` (int64, bool; ``n`` each, on the CPU): torchvision's
    ``RandomErasing.make_params`` for ``n`` images at once. Image i is erased with probability
    ``p``, with the first of 10 boxes (area in ``ERASE_SCALE`` of the image, log-uniform
    aspect ratio in ``ERASE_RATIO``) that fits inside it; with none, it is left alone."""
    apply = torch.rand(n, generator=g) < p
    area = height * width * torch.empty(n, ERASE_TRIES).uniform_(*ERASE_SCALE, generator=g)
    aspect = torch.empty(n, ERASE_TRIES).uniform_(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), generator=g).exp()
    h = (area * aspect).sqrt().round().long()
    w = (area / aspect).sqrt().round().long()
    fits = (h < height) & (w < width)
    first = fits.long().argmax(1, keepdim=True)          # the first box that fits (0 when none does)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    top = (torch.rand(n, generator=g) * (height - h + 1)).long()     # uniform in [0, height - h]
    left = (torch.rand(n, generator=g) * (width - w + 1)).long()
    return top, left, h, w, apply & fits.any(1)


def erase(images: Tensor, p: float, g: torch.Generator) -> Tensor:
    """:func:`erase_boxes` applied to a ``B x C x H x W`` batch in place (one masked fill with 0)."""
    n, _, height, width = images.shape
    top, left, h, w, on = (t.to(images.device, non_blocking=True) for t in erase_boxes(n, height, width, p, g))
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None]) & on[:, None]       # B x H
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])                  # B x W
    return images.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)
