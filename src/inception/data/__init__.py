"""Datasets, transforms and loaders.

``build_datasets(cfg.data, model.data_config)`` gives the train and val datasets; each
yields ``(float32 CxHxW tensor normalized for the model, int label)`` and has ``.classes``
(index = label). ``build_loader`` wraps one in a DataLoader that repeats exactly for a seed.

Datasets (``data.dataset``): ``digits`` (built in), ``cifar10`` / ``cifar100`` (official
binary or python files, or class folders), ``folder`` (``<split>/<class>/<image>``) and
``list`` (PaddleClas list files). Every user mistake (a missing path, an empty class, an
unknown class) is a one-line :class:`~inception.errors.UserError` raised while building.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..config import DataCfg
from ..errors import UserError
from ..models.layers import DataConfig
from .archive import archive_dataset, is_archive, to_memory
from .cache import cache_dataset, is_cache
from .cifar import cifar_dataset, expected_layouts, find_cifar
from .digits import digits_dataset
from .folder import ImageFileDataset, find_classes, folder_dataset, list_dataset, load_image, require_dir
from .device import DeviceLoader, transform_arguments
from .loader import build_loader
from .transforms import eval_transform, train_transform

__all__ = ["DeviceLoader", "fast_transforms", "transform_arguments", "build_datasets", "build_eval_dataset", "build_loader", "train_transform", "eval_transform",
           "load_image", "image_size", "augment_preset", "hflip_enabled", "eval_preprocessing"]

_CIFAR_STYLE = ("digits", "cifar10", "cifar100")


def image_size(cfg: DataCfg, data_config: DataConfig) -> int:
    """``data.image_size``, or the model's input size."""
    return cfg.image_size or data_config.input_size[1]


def augment_preset(cfg: DataCfg) -> str:
    """``data.augment`` with ``auto`` resolved: cifar for small-image datasets, else imagenet."""
    if cfg.augment != "auto":
        return cfg.augment
    return "cifar" if cfg.dataset in _CIFAR_STYLE else "imagenet"


def hflip_enabled(cfg: DataCfg) -> bool:
    """``data.hflip``; by default on, except for digits (they are not mirror-symmetric)."""
    return cfg.dataset != "digits" if cfg.hflip is None else cfg.hflip


def _train_tf(cfg: DataCfg, dc: DataConfig):
    return train_transform(preset=augment_preset(cfg), size=image_size(cfg, dc), mean=dc.mean, std=dc.std,
                           interpolation=dc.interpolation, hflip=hflip_enabled(cfg),
                           color_jitter=cfg.color_jitter, crop_scale=cfg.crop_scale, crop_padding=cfg.crop_padding)


def eval_preprocessing(cfg: DataCfg, dc: DataConfig) -> dict:
    """The eval preprocessing of a model trained with ``cfg``, as plain values (what an
    exported model's metadata carries): resize the short side to ``resize_size`` with
    ``interpolation``, center-crop ``image_size``, scale to [0, 1], normalize with mean/std.

    The cifar preset trains on whole images at ``image_size`` (pad + crop keeps the scale),
    so evaluation sees whole images too (``crop_pct`` 1.0); the model's crop fraction
    applies to imagenet-style data.
    """
    size = image_size(cfg, dc)
    crop_pct = 1.0 if augment_preset(cfg) == "cifar" else dc.crop_pct
    return {"image_size": size, "crop_pct": crop_pct, "resize_size": int(size / crop_pct),
            "interpolation": dc.interpolation, "mean": list(dc.mean), "std": list(dc.std)}


def _eval_tf(cfg: DataCfg, dc: DataConfig):
    pre = eval_preprocessing(cfg, dc)
    return eval_transform(size=pre["image_size"], mean=pre["mean"], std=pre["std"],
                          interpolation=pre["interpolation"], crop_pct=pre["crop_pct"])


def fast_transforms(cfg: DataCfg, dc: DataConfig) -> tuple | None:
    """``(train decoder, eval decoder, (mean, std))`` of the fast pipeline for image-file
    datasets, or None where it does not apply (``data.pipeline: torchvision``, the cifar
    preset, colour jitter): those use the torchvision presets."""
    if cfg.pipeline != "fast" or augment_preset(cfg) not in ("imagenet", "none") or cfg.color_jitter:
        if cfg.gpu_decode:
            raise UserError("data.gpu_decode needs the fast pipeline (data.pipeline: fast) with the imagenet or none "
                            "augmentation and no color_jitter; set data.gpu_decode: false")
        return None
    from .decode import CenterCropDecode, RandomResizedCropDecode

    size, pre = image_size(cfg, dc), eval_preprocessing(cfg, dc)
    if augment_preset(cfg) == "imagenet":
        train = RandomResizedCropDecode(size, scale=cfg.crop_scale, interpolation=dc.interpolation,
                                        hflip=hflip_enabled(cfg), defer=cfg.gpu_decode)
    else:   # none: Resize(size) + CenterCrop(size)
        train = CenterCropDecode(size, resize_size=size, interpolation=dc.interpolation, defer=cfg.gpu_decode)
    evaluate = CenterCropDecode(size, resize_size=pre["resize_size"], interpolation=dc.interpolation,
                                defer=cfg.gpu_decode)
    return train, evaluate, (tuple(dc.mean), tuple(dc.std))


def _use_fast(ds: Dataset, decoder, normalize) -> Dataset:
    """Switch an image-file dataset to the fast pipeline (others are left alone)."""
    if isinstance(ds, ImageFileDataset) and decoder is not None:
        from .decode import read_encoded

        if ds.loader is load_image:
            ds.loader = read_encoded
        ds.transform, ds.normalize = decoder, normalize
    return ds


def build_datasets(cfg: DataCfg, data_config: DataConfig) -> tuple[Dataset, Dataset]:
    """Train (augmented) and validation (eval transform) datasets; val labels follow train's classes.

    Image files (folder, list) use the fast pipeline (``data.pipeline``): their samples are
    uint8 and carry ``.normalize``, which :func:`build_loader` applies on the device."""
    fast = fast_transforms(cfg, data_config)
    train = _open(cfg, cfg.train_split, _train_tf(cfg, data_config))
    val = _open(cfg, cfg.val_split, _eval_tf(cfg, data_config))
    if fast is not None:
        _use_fast(train, fast[0], fast[2])
        _use_fast(val, fast[1], fast[2])
    _conform(val, train.classes, against="the training data",
             fix="remove them from the validation data or add them to the training data")
    return train, val


def build_eval_dataset(cfg: DataCfg, data_config: DataConfig, split: str | None = None,
                       class_names: list[str] | None = None) -> Dataset:
    """One split (default ``data.val_split``) with the eval transform.

    With ``class_names`` (a checkpoint's) labels follow that order, and a class outside it
    is a UserError. Without, folder datasets take their classes from the train split when
    it exists, so labels match those a model was trained with.
    """
    split = split or cfg.val_split
    ds = _open(cfg, split, _eval_tf(cfg, data_config))
    fast = fast_transforms(cfg, data_config)
    if fast is not None:
        _use_fast(ds, fast[1], fast[2])
    if class_names is not None:
        _conform(ds, list(class_names), against="the checkpoint's classes",
                 fix="evaluate with a checkpoint trained on these classes")
    elif isinstance(ds, ImageFileDataset) and cfg.dataset != "list" and split != cfg.train_split:
        train_dir = Path(cfg.data_dir).expanduser() / cfg.train_split
        if train_dir.is_dir():
            _conform(ds, find_classes(train_dir), against=f"the training split '{train_dir}'",
                     fix="remove them or pass the checkpoint's class names")
    return ds


def _open(cfg: DataCfg, split: str, transform) -> Dataset:
    """The dataset of one split, labelled by its own classes."""
    if cfg.dataset == "digits":
        return digits_dataset(_is_train_part(cfg, split), transform)
    if not cfg.data_dir:
        raise UserError(f"data.dataset '{cfg.dataset}' needs data.data_dir (--data-dir PATH)")
    path = Path(cfg.data_dir).expanduser()
    if cfg.dataset in ("cifar10", "cifar100") and is_archive(path):
        fallbacks = ("test",) if split == cfg.val_split else ()
        return archive_dataset(path, split, transform, fallbacks=fallbacks)
    root = require_dir(path, "data directory", "set data.data_dir (--data-dir PATH)")
    fix = "create it or set data.train_split / data.val_split"
    if cfg.dataset in ("cifar10", "cifar100"):
        found = find_cifar(root, cfg.dataset)
        if found is not None:
            return cifar_dataset(cfg.dataset, *found, _is_train_part(cfg, split), transform)
        split_dir = root / split
        if split == cfg.val_split and not split_dir.is_dir() and (root / "test").is_dir():
            split_dir = root / "test"
        if not (root / cfg.train_split).is_dir() and not split_dir.is_dir():
            raise UserError(f"no {cfg.dataset} data in '{root}': expected {expected_layouts(cfg.dataset)}, "
                            f"or class folders {root}/{split}/<class>/; set data.data_dir")
        files = folder_dataset(require_dir(split_dir, "split folder", fix), transform)
        return to_memory(files) or files     # CIFAR-sized images: decoded once, held in memory
    if cfg.dataset in ("folder", "list") and is_cache(root):     # written by `inception prepare`
        return cache_dataset(root, split, transform)
    if cfg.dataset == "folder":
        return folder_dataset(require_dir(root / split, "split folder", fix), transform)
    if cfg.dataset == "list":
        return list_dataset(_list_file(cfg, root, split), root, transform)
    raise UserError(f"unknown data.dataset '{cfg.dataset}'; choose digits, cifar10, cifar100, folder or list")


def _is_train_part(cfg: DataCfg, split: str) -> bool:
    """For datasets with a fixed train/test pair (digits, CIFAR files)."""
    if split in (cfg.train_split, "train"):
        return True
    if split in (cfg.val_split, "val", "test"):
        return False
    raise UserError(f"{cfg.dataset} has the splits 'train' and 'test', not '{split}'")


def _list_file(cfg: DataCfg, root: Path, split: str) -> Path:
    if split == cfg.train_split:
        return Path(cfg.train_list).expanduser() if cfg.train_list else root / "train_list.txt"
    if split == cfg.val_split:
        return Path(cfg.val_list).expanduser() if cfg.val_list else root / "val_list.txt"
    return root / f"{split}_list.txt"


def _conform(ds, classes: list[str], *, against: str, fix: str) -> None:
    """Relabel ``ds`` to follow ``classes``; a class of its samples outside them is a UserError."""
    if ds.classes == classes:
        return
    index = {name: i for i, name in enumerate(classes)}
    used = set(ds.targets)
    unknown = [name for i, name in enumerate(ds.classes) if i in used and name not in index]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        raise UserError(f"'{ds.source}' has classes not in {against}: {shown}; {fix}")
    ds.relabel([index.get(name, -1) for name in ds.classes], classes)  # -1: a class with no samples
