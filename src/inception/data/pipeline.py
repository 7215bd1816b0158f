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
``set_epoch(epoch, start_batch)``, so the training loop treats them alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from ..config import DataCfg
from ..errors import UserError
from ..models.layers import DataConfig
from .datasets import Reading, conform, folder_classes, open_split
from .decode import CenterCropDecode, RandomResizedCropDecode, read_encoded
from .folder import ImageFileDataset
from .loader import build_loader
from .resident import ResidentLoader
from .sampling import EpochSampler, SeededSamples, ShardSampler, collate_skipping
from .transforms import eval_transform, train_transform

_CIFAR_STYLE = ("digits", "cifar10", "cifar100")

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
    ``crop_padding`` for cifar), ``hflip``, ``color_jitter``. Evaluation: resize the short
    side to ``resize_size`` (``size / crop_pct``) with ``interpolation``, center-crop ``size``.
    Both scale to [0, 1] and normalize with ``mean``/``std``.
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

    @classmethod
    def from_config(cls, cfg: DataCfg, dc: DataConfig) -> "Preprocessing":
        """The cifar preset trains on whole images (pad + crop keeps the scale), so it
        evaluates whole images too (``crop_pct`` 1.0); otherwise the model's crop fraction,
        unless ``data.crop_pct`` sets one."""
        preset = augment_preset(cfg)
        crop_pct = cfg.crop_pct or (1.0 if preset == "cifar" else dc.crop_pct)
        return cls(size=image_size(cfg, dc), augment=preset, hflip=hflip_enabled(cfg),
                   color_jitter=cfg.color_jitter, crop_scale=tuple(cfg.crop_scale), crop_padding=cfg.crop_padding,
                   interpolation=dc.interpolation, mean=tuple(dc.mean), std=tuple(dc.std), crop_pct=crop_pct)

    @property
    def resize_size(self) -> int:
        return int(self.size / self.crop_pct)

    def eval_dict(self) -> dict:
        """The eval preprocessing as plain values (what an exported model's metadata carries)."""
        return {"image_size": self.size, "crop_pct": self.crop_pct, "resize_size": self.resize_size,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}

    # -- the torchvision presets ------------------------------------------------------------
    def train_transform(self):
        return train_transform(preset=self.augment, size=self.size, mean=self.mean, std=self.std,
                               interpolation=self.interpolation, hflip=self.hflip, color_jitter=self.color_jitter,
                               crop_scale=self.crop_scale, crop_padding=self.crop_padding)

    def eval_transform(self):
        return eval_transform(size=self.size, mean=self.mean, std=self.std, interpolation=self.interpolation,
                              crop_pct=self.crop_pct)

    # -- the fast decoder -------------------------------------------------------------------
    def train_decoder(self, defer: bool = False):
        if self.augment == "imagenet":
            return RandomResizedCropDecode(self.size, scale=self.crop_scale, interpolation=self.interpolation,
                                           hflip=self.hflip, defer=defer)
        return CenterCropDecode(self.size, resize_size=self.size, interpolation=self.interpolation, defer=defer)

    def eval_decoder(self, defer: bool = False):
        return CenterCropDecode(self.size, resize_size=self.resize_size, interpolation=self.interpolation,
                                defer=defer)

    # -- device-resident batches ------------------------------------------------------------
    def resident_arguments(self, train: bool) -> dict:
        """The :class:`ResidentLoader` arguments that make the batches the train (cifar or
        none preset) or eval transform would."""
        common = {"size": self.size, "mean": self.mean, "std": self.std, "interpolation": self.interpolation}
        if not train:
            return {**common, "padding": 0, "hflip": False, "resize_size": self.resize_size}
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
    return fast


def _reading(cfg: DataCfg, pre: Preprocessing, train: bool) -> Reading:
    transform = pre.train_transform() if train else pre.eval_transform()
    if not uses_fast_decoder(cfg):
        return Reading(transform)
    decoder = pre.train_decoder(cfg.gpu_decode) if train else pre.eval_decoder(cfg.gpu_decode)
    return Reading(transform, file_loader=read_encoded, file_transform=decoder, normalize=(pre.mean, pre.std))


def build_datasets(cfg: DataCfg, data_config: DataConfig) -> tuple[Dataset, Dataset]:
    """Train (augmented) and validation (eval preprocessing) datasets; val labels follow
    train's classes. With the fast decoder, image-file samples are uint8 and carry
    ``.normalize``, which their loader applies on the device."""
    pre = Preprocessing.from_config(cfg, data_config)
    train = open_split(cfg, cfg.train_split, _reading(cfg, pre, train=True))
    val = open_split(cfg, cfg.val_split, _reading(cfg, pre, train=False))
    conform(val, train.classes, against="the training data",
            fix="remove them from the validation data or add them to the training data")
    return train, val


def build_eval_dataset(cfg: DataCfg, data_config: DataConfig, split: str | None = None,
                       class_names: list[str] | None = None) -> Dataset:
    """One split (default ``data.val_split``) with the eval preprocessing.

    With ``class_names`` (a checkpoint's) labels follow that order, and a class outside it
    is a UserError. Without, folder datasets take their classes from the train split when
    it exists, so labels match those a model was trained with.
    """
    split = split or cfg.val_split
    ds = open_split(cfg, split, _reading(cfg, Preprocessing.from_config(cfg, data_config), train=False))
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
    in-memory dataset with the cifar or none preset, no colour jitter, at most 4 GiB there)."""
    in_memory = hasattr(dataset, "images") and hasattr(dataset, "labels")
    if cfg.device_resident is None:
        if not in_memory or pre.augment not in ("cifar", "none") or pre.color_jitter:
            return False
        side = pre.size + 2 * pre.crop_padding
        return len(dataset) * dataset.images.shape[1] * side * side <= DEVICE_RESIDENT_MAX_BYTES
    if cfg.device_resident and not in_memory:
        raise UserError(f"data.device_resident needs an in-memory dataset (digits or CIFAR files), "
                        f"not '{cfg.dataset}'; set data.device_resident: false")
    return cfg.device_resident


def loader_for(dataset: Dataset, cfg: DataCfg, pre: Preprocessing, *, train: bool, batch_size: int, seed: int,
               device: torch.device, rank: int = 0, world_size: int = 1, channels_last: bool = False):
    """The loader of one split, of the kind the config asks for.

    Training order is DistributedSampler's (the same for any world size) and each sample's
    augmentation is seeded by (seed, epoch, index), so a resumed epoch reproduces its batches
    exactly; evaluation gives each process its own shard, without padding duplicates."""
    if resident(dataset, cfg, pre):
        return ResidentLoader.from_dataset(dataset, batch_size=batch_size, train=train, device=device,
                                           seed=seed, rank=rank, world_size=world_size,
                                           channels_last=channels_last, **pre.resident_arguments(train))
    if train:
        sampler = EpochSampler(len(dataset), rank=rank, world_size=world_size, seed=seed)
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    return build_loader(SeededSamples(dataset, seed=seed, bad_image=cfg.bad_image), batch_size, train=train,
                        workers=cfg.workers, seed=seed + rank if train else seed, device=device, sampler=sampler,
                        collate_fn=collate_skipping, channels_last=channels_last)


def build_loaders(cfg: DataCfg, data_config: DataConfig, dist=None, *, batch_size: int, seed: int = 0,
                  device: torch.device | str = "cpu", channels_last: bool = False,
                  datasets: tuple[Dataset, Dataset] | None = None) -> tuple:
    """``(train loader, val loader)`` for ``cfg`` and a model's ``data_config``; ``dist`` (with
    ``rank`` and ``world_size``; None: one process) shards them. ``loader.dataset`` is the
    split's dataset (``classes``, ``len``); ``datasets`` are those of :func:`build_datasets`
    when the caller already has them."""
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    pre = Preprocessing.from_config(cfg, data_config)
    train_set, val_set = datasets or build_datasets(cfg, data_config)
    if len(train_set) < batch_size * world:
        raise UserError(f"train.batch_size {batch_size} x {world} processes is larger than the training set "
                        f"({len(train_set)} images); lower --batch-size")
    common = {"batch_size": batch_size, "seed": seed, "device": torch.device(device), "rank": rank,
              "world_size": world, "channels_last": channels_last}
    return (loader_for(train_set, cfg, pre, train=True, **common),
            loader_for(val_set, cfg, pre, train=False, **common))


def build_eval_loader(cfg: DataCfg, data_config: DataConfig, *, split: str | None = None,
                      class_names: list[str] | None = None, batch_size: int, device: torch.device | str = "cpu",
                      channels_last: bool = False):
    """The loader of one split with the eval preprocessing (see :func:`build_eval_dataset`)."""
    ds = build_eval_dataset(cfg, data_config, split=split, class_names=class_names)
    return loader_for(ds, cfg, Preprocessing.from_config(cfg, data_config), train=False, batch_size=batch_size,
                      seed=0, device=torch.device(device), channels_last=channels_last)
