"""The one place that decides how a config's images reach the model.

    Preprocessing.from_config(cfg.data, model.data_config)   every setting, resolved once
      -> build_datasets                                      datasets built to be read that way
      -> build_loaders(cfg.data, data_config, dist, ...)     one loader per split, of one of:

* :class:`~inception.data.resident.ResidentLoader`: in-memory datasets (digits, CIFAR files)
  held on the device as uint8 and augmented there in whole batches (``data.device_resident``;
  by default with the ``cifar`` and ``none`` presets when they fit in 4 GiB);
* the fast decoder (:mod:`~inception.data.decode`): image files decoded, cropped and resized
  in one step by DataLoader workers, uint8 until the device (``data.pipeline: fast`` with the
  ``imagenet`` or ``none`` preset), optionally decoding the JPEGs on the device
  (``data.gpu_decode``);
* the torchvision presets (:mod:`~inception.data.transforms`): everything else.

Every loader yields :class:`~inception.data.loader.Batch` es already on the device and has
``set_epoch(epoch, start_batch)``, so the training loop treats them alike. Augmentation:

* per sample, seeded by (seed, epoch, index): the preset's crop and flip, then a policy
  (``data.auto_augment``: RandAugment, TrivialAugmentWide, AutoAugment) on the uint8 crop, in
  the torchvision presets and after the fast decoder alike (in the DataLoader workers, so a
  policy takes in-memory data off the device);
* per train batch, on the device, seeded by (seed, rank, epoch, batch), for every loader:
  random erasing, then MixUp / CutMix (:class:`~inception.data.batchaug.BatchAugment`);
* progressive resizing (``data.progressive_sizes``): the train size is a function of the
  epoch (:class:`~inception.data.sampling.SizeSchedule`); it reaches the workers' transforms
  in the sampler's keys, and device-resident batches are resized on the device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..config import DataCfg
from ..errors import UserError
from ..spec import DataConfig
from .batchaug import BatchAugment
from .datasets import Reading, conform, folder_classes, hold_out, open_split
from .decode import CenterCropDecode, RandomResizedCropDecode, read_encoded
from .folder import ImageFileDataset
from .loader import build_loader
from .resident import ResidentLoader
from .sampling import EpochSampler, SeededSamples, ShardSampler, SizeSchedule, collate_skipping
from .transforms import SizedTransform, augment_policy, eval_transform, train_transform

_CIFAR_STYLE = ("digits", "cifar10", "cifar100", "synthetic")

#: Largest dataset held on the device by default (data.device_resident unset).
DEVICE_RESIDENT_MAX_BYTES = 4 * 2**30


def augment_preset(cfg: DataCfg) -> str:
    """``data.augment`` with ``auto`` resolved: cifar for small-image datasets, else imagenet."""
    if cfg.augment != "auto":
        return cfg.augment
    return "cifar" if cfg.dataset in _CIFAR_STYLE else "imagenet"


def hflip_enabled(cfg: DataCfg) -> bool:
    """``data.hflip``; by default on, except for digits (they are not mirror-symmetric)."""
    return cfg.dataset != "digits" if cfg.hflip is None else cfg.hflip


def image_size(cfg: DataCfg, data_config: DataConfig) -> int:
    """``data.image_size``, or the model's input size."""
    return cfg.image_size or data_config.input_size[1]


@dataclass(frozen=True)
class Preprocessing:
    """Every setting of the train and eval input pipelines of a model trained with a config.

    Training: the ``augment`` preset at ``size`` (``crop_scale`` for imagenet,
    ``crop_padding`` for cifar), ``hflip``, the ``auto_augment`` policy, ``color_jitter``;
    with ``sizes`` (progressive resizing) at the size of each epoch instead. Evaluation:
    resize the short side to ``resize_size`` (``eval_size / crop_pct``) with ``interpolation``,
    center-crop ``eval_size`` (``data.eval_image_size``, else ``size``). Both scale to [0, 1]
    and normalize with ``mean``/``std``.
    """

    size: int
    augment: str
    hflip: bool
    color_jitter: float
    crop_scale: tuple[float, float]
    crop_padding: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    auto_augment: str = "none"
    randaugment_magnitude: int = 9
    randaugment_ops: int = 2
    sizes: tuple[int, ...] = ()
    eval_image_size: int | None = None

    @classmethod
    def from_config(cls, cfg: DataCfg, dc: DataConfig) -> "Preprocessing":
        """The cifar preset trains on whole images (pad + crop keeps the scale), so it
        evaluates whole images too (``crop_pct`` 1.0); otherwise the model's crop fraction,
        unless ``data.crop_pct`` sets one."""
        preset = augment_preset(cfg)
        crop_pct = cfg.crop_pct or (1.0 if preset == "cifar" else dc.crop_pct)
        if cfg.progressive_sizes and min(cfg.progressive_sizes) < dc.min_input_size:
            raise UserError(f"data.progressive_sizes {cfg.progressive_sizes} go below the model's minimum input size "
                            f"{dc.min_input_size}; start at {dc.min_input_size} or more")
        if cfg.eval_image_size is not None and cfg.eval_image_size < dc.min_input_size:
            raise UserError(f"data.eval_image_size {cfg.eval_image_size} is below the model's minimum input size "
                            f"{dc.min_input_size}; use {dc.min_input_size} or more")
        return cls(size=image_size(cfg, dc), augment=preset, hflip=hflip_enabled(cfg),
                   color_jitter=cfg.color_jitter, crop_scale=tuple(cfg.crop_scale), crop_padding=cfg.crop_padding,
                   interpolation=dc.interpolation, mean=tuple(dc.mean), std=tuple(dc.std), crop_pct=crop_pct,
                   auto_augment=cfg.auto_augment, randaugment_magnitude=cfg.randaugment_magnitude,
                   randaugment_ops=cfg.randaugment_ops, sizes=tuple(cfg.progressive_sizes),
                   eval_image_size=cfg.eval_image_size)

    @property
    def eval_size(self) -> int:
        """The side of evaluated images (``data.eval_image_size``, else the training size)."""
        return self.eval_image_size or self.size

    @property
    def resize_size(self) -> int:
        return int(self.eval_size / self.crop_pct)

    def eval_dict(self) -> dict:
        """The eval preprocessing as plain values (what an exported model's metadata carries)."""
        return {"image_size": self.eval_size, "crop_pct": self.crop_pct, "resize_size": self.resize_size,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}

    def policy(self):
        """The ``auto_augment`` policy (a torchvision v2 transform), or None."""
        return augment_policy(self.auto_augment, magnitude=self.randaugment_magnitude, ops=self.randaugment_ops)

    def size_schedule(self, epochs: int) -> SizeSchedule | None:
        """Progressive resizing over ``epochs`` (None when off)."""
        return SizeSchedule(self.sizes, epochs) if self.sizes else None

    def sized(self, make):
        """``make(size=size)``; with progressive resizing a :class:`SizedTransform` that makes
        it at the size each sample's key selects."""
        return SizedTransform(make, self.size) if self.sizes else make(size=self.size)

    # -- the torchvision presets ------------------------------------------------------------
    def train_transform(self, size: int | None = None):
        return train_transform(preset=self.augment, size=size or self.size, mean=self.mean, std=self.std,
                               interpolation=self.interpolation, hflip=self.hflip, color_jitter=self.color_jitter,
                               crop_scale=self.crop_scale, crop_padding=self.crop_padding, policy=self.policy())

    def eval_transform(self):
        return eval_transform(size=self.eval_size, mean=self.mean, std=self.std, interpolation=self.interpolation,
                              crop_pct=self.crop_pct)

    # -- the fast decoder -------------------------------------------------------------------
    def train_decoder(self, defer: bool = False, size: int | None = None):
        """The decoder's uint8 crop (and flip) at ``size``, then the policy on it."""
        size = size or self.size
        if self.augment == "imagenet":
            decoder = RandomResizedCropDecode(size, scale=self.crop_scale, interpolation=self.interpolation,
                                              hflip=self.hflip, defer=defer)
        else:
            decoder = CenterCropDecode(size, resize_size=size, interpolation=self.interpolation, defer=defer)
        policy = self.policy()
        return decoder if policy is None else v2.Compose([decoder, policy])

    def eval_decoder(self, defer: bool = False):
        return CenterCropDecode(self.eval_size, resize_size=self.resize_size, interpolation=self.interpolation,
                                defer=defer)

    # -- device-resident batches ------------------------------------------------------------
    def resident_arguments(self, train: bool) -> dict:
        """The :class:`ResidentLoader` arguments that make the batches the train (cifar or
        none preset) or eval transform would."""
        common = {"size": self.size, "mean": self.mean, "std": self.std, "interpolation": self.interpolation}
        if not train:
            return {**common, "size": self.eval_size, "padding": 0, "hflip": False, "resize_size": self.resize_size}
        if self.augment not in ("cifar", "none") or self.color_jitter:
            raise UserError(f"the {self.augment} augmentation{' with color_jitter' if self.color_jitter else ''} "
                            "cannot run on the device; set data.device_resident: false, or use data.augment cifar "
                            "or none without color_jitter")
        cifar = self.augment == "cifar"
        return {**common, "padding": self.crop_padding if cifar else 0, "hflip": self.hflip and cifar,
                "resize_size": self.size}


def eval_preprocessing(cfg: DataCfg, dc: DataConfig) -> dict:
    """The eval preprocessing of a model trained with ``cfg``, as plain values."""
    return Preprocessing.from_config(cfg, dc).eval_dict()


def uses_fast_decoder(cfg: DataCfg) -> bool:
    """Whether image files go through the fast decoder: ``data.pipeline: fast`` with the
    imagenet or none preset and no colour jitter (the others need the torchvision presets)."""
    fast = cfg.pipeline == "fast" and augment_preset(cfg) in ("imagenet", "none") and not cfg.color_jitter
    if cfg.gpu_decode and not fast:
        raise UserError("data.gpu_decode needs the fast pipeline (data.pipeline: fast) with the imagenet or none "
                        "augmentation and no color_jitter; set data.gpu_decode: false")
    if cfg.gpu_decode and cfg.auto_augment != "none":
        raise UserError(f"data.auto_augment {cfg.auto_augment} runs on each decoded crop in the DataLoader workers, "
                        "but data.gpu_decode decodes on the device; set data.gpu_decode: false")
    return fast


def _reading(cfg: DataCfg, pre: Preprocessing, train: bool) -> Reading:
    fast = uses_fast_decoder(cfg)
    if train:
        transform = pre.sized(pre.train_transform)
        decoder = pre.sized(functools.partial(pre.train_decoder, cfg.gpu_decode)) if fast else None
    else:
        transform = pre.eval_transform()
        decoder = pre.eval_decoder(cfg.gpu_decode) if fast else None
    size = pre.size if train else pre.eval_size
    if decoder is None:
        return Reading(transform, size=size)
    return Reading(transform, size=size, file_loader=read_encoded, file_transform=decoder,
                   normalize=(pre.mean, pre.std))


def build_datasets(cfg: DataCfg, data_config: DataConfig) -> tuple[Dataset, Dataset]:
    """Train (augmented) and validation (eval preprocessing) datasets; val labels follow
    train's classes. With ``data.holdout`` both are parts of the train split (validation: the
    held-out part). With the fast decoder, image-file samples are uint8 and carry
    ``.normalize``, which their loader applies on the device."""
    pre = Preprocessing.from_config(cfg, data_config)
    train = open_split(cfg, cfg.train_split, _reading(cfg, pre, train=True))
    if cfg.holdout:
        return hold_out(train, open_split(cfg, cfg.train_split, _reading(cfg, pre, train=False)), cfg)
    val = open_split(cfg, cfg.val_split, _reading(cfg, pre, train=False))
    conform(val, train.classes, against="the training data",
            fix="remove them from the validation data or add them to the training data")
    return train, val


HOLDOUT = "holdout"


def build_eval_dataset(cfg: DataCfg, data_config: DataConfig, split: str | None = None,
                       class_names: list[str] | None = None) -> Dataset:
    """One split (default ``data.val_split``) with the eval preprocessing; ``holdout``: the
    part of the train split that ``data.holdout`` held out (what a holdout run validated on).

    With ``class_names`` (a checkpoint's) labels follow that order, and a class outside it
    is a UserError. Without, folder datasets take their classes from the train split when
    it exists, so labels match those a model was trained with.
    """
    split = split or cfg.val_split
    reading = _reading(cfg, Preprocessing.from_config(cfg, data_config), train=False)
    if split == HOLDOUT and cfg.holdout:
        whole = open_split(cfg, cfg.train_split, reading)
        ds = hold_out(whole, whole, cfg)[1]
    else:
        try:
            ds = open_split(cfg, split, reading)
        except UserError as e:
            if split != HOLDOUT:
                raise
            raise UserError(f"{e} (split '{HOLDOUT}' names the held-out part of the train split only for a run "
                            "trained with data.holdout; this one had data.holdout 0)") from None
    if class_names is not None:
        conform(ds, list(class_names), against="the checkpoint's classes",
                fix="evaluate with a checkpoint trained on these classes")
    elif isinstance(ds, ImageFileDataset) and cfg.dataset != "list" and split != cfg.train_split:
        train_classes = folder_classes(cfg, cfg.train_split)
        if train_classes is not None:
            conform(ds, train_classes, against=f"the training split '{cfg.data_dir}/{cfg.train_split}'",
                    fix="remove them or pass the checkpoint's class names")
    return ds


def resident(dataset: Dataset, cfg: DataCfg, pre: Preprocessing) -> bool:
    """Whether ``dataset`` is batched on the device (``data.device_resident``; by default an
    in-memory dataset with the cifar or none preset, no colour jitter, no auto_augment policy
    (per-sample ops: they run in DataLoader workers), at most 4 GiB there)."""
    in_memory = hasattr(dataset, "images") and hasattr(dataset, "labels")
    if cfg.device_resident is None:
        if not in_memory or pre.augment not in ("cifar", "none") or pre.color_jitter or pre.auto_augment != "none":
            return False
        side = pre.size + 2 * pre.crop_padding
        return len(dataset) * dataset.images.shape[1] * side * side <= DEVICE_RESIDENT_MAX_BYTES
    if cfg.device_resident and not in_memory:
        raise UserError(f"data.device_resident needs an in-memory dataset (digits or CIFAR files), "
                        f"not '{cfg.dataset}'; set data.device_resident: false")
    if cfg.device_resident and pre.auto_augment != "none":
        raise UserError(f"data.auto_augment {pre.auto_augment} runs per sample in DataLoader workers, not on whole "
                        "device-resident batches; set data.device_resident: false (or data.auto_augment: none)")
    return cfg.device_resident


def loader_for(dataset: Dataset, cfg: DataCfg, pre: Preprocessing, *, train: bool, batch_size: int, seed: int,
               device: torch.device, rank: int = 0, world_size: int = 1, channels_last: bool = False,
               sizes: SizeSchedule | None = None, batch_augment: BatchAugment | None = None):
    """The loader of one split, of the kind the config asks for.

    Training order is DistributedSampler's (the same for any world size) and each sample's
    augmentation is seeded by (seed, epoch, index), so a resumed epoch reproduces its batches
    exactly; evaluation gives each process its own shard, without padding duplicates.
    Training only: ``sizes`` gives each epoch's image size (progressive resizing),
    ``batch_augment`` augments whole batches on the device."""
    if resident(dataset, cfg, pre):
        return ResidentLoader.from_dataset(dataset, batch_size=batch_size, train=train, device=device,
                                           seed=seed, rank=rank, world_size=world_size, channels_last=channels_last,
                                           sizes=sizes, batch_augment=batch_augment, **pre.resident_arguments(train))
    if train:
        sampler = EpochSampler(len(dataset), rank=rank, world_size=world_size, seed=seed, sizes=sizes)
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    return build_loader(SeededSamples(dataset, seed=seed, bad_image=cfg.bad_image), batch_size, train=train,
                        workers=cfg.workers, seed=seed + rank if train else seed, device=device, sampler=sampler,
                        collate_fn=collate_skipping, channels_last=channels_last,
                        batch_augment=batch_augment if train else None)


def build_loaders(cfg: DataCfg, data_config: DataConfig, dist=None, *, batch_size: int, seed: int = 0,
                  device: torch.device | str = "cpu", channels_last: bool = False,
                  datasets: tuple[Dataset, Dataset] | None = None, epochs: int | None = None) -> tuple:
    """``(train loader, val loader)`` for ``cfg`` and a model's ``data_config``; ``dist`` (with
    ``rank`` and ``world_size``; None: one process) shards them. ``loader.dataset`` is the
    split's dataset (``classes``, ``len``); ``datasets`` are those of :func:`build_datasets`
    when the caller already has them. ``epochs`` (train.epochs) spreads
    ``data.progressive_sizes`` over the run. MixUp / CutMix targets have one column per
    class of the train split."""
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    pre = Preprocessing.from_config(cfg, data_config)
    train_set, val_set = datasets or build_datasets(cfg, data_config)
    if len(train_set) < batch_size * world:
        raise UserError(f"train.batch_size {batch_size} x {world} processes is larger than the training set "
                        f"({len(train_set)} images); lower --batch-size")
    if pre.sizes and epochs is None:
        raise ValueError("build_loaders needs epochs (train.epochs) with data.progressive_sizes")
    common = {"batch_size": batch_size, "seed": seed, "device": torch.device(device), "rank": rank,
              "world_size": world, "channels_last": channels_last}
    augment = BatchAugment.from_config(cfg, num_classes=len(train_set.classes), seed=seed, rank=rank)
    return (loader_for(train_set, cfg, pre, train=True, sizes=pre.size_schedule(epochs or 1), batch_augment=augment,
                       **common),
            loader_for(val_set, cfg, pre, train=False, **common))


def build_eval_loader(cfg: DataCfg, data_config: DataConfig, *, split: str | None = None,
                      class_names: list[str] | None = None, batch_size: int, device: torch.device | str = "cpu",
                      channels_last: bool = False):
    """The loader of one split with the eval preprocessing (see :func:`build_eval_dataset`)."""
    ds = build_eval_dataset(cfg, data_config, split=split, class_names=class_names)
    return loader_for(ds, cfg, Preprocessing.from_config(cfg, data_config), train=False, batch_size=batch_size,
                      seed=0, device=torch.device(device), channels_last=channels_last)
