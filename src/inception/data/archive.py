"""Small image datasets read whole into memory: class folders inside a ``.tar``/``.tar.gz``
archive (e.g. ``cifar10-jpg.tar.gz``: ``train/<class>/*.jpg``, ``test/<class>/*.jpg``), or
extracted CIFAR-style class folders.

Every image is decoded once into one uint8 ``N x 3 x H x W`` tensor (a
:class:`~inception.data.memory.MemoryDataset`), which the trainer can then hold on the
GPU and augment there in batches. All images must share one size (CIFAR's 32x32).
"""

from __future__ import annotations

import functools
import io
import tarfile
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .folder import ImageFileDataset, is_image_file, load_image
from .memory import MemoryDataset

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _decode(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image '{name}' ({e}); replace or delete it") from None


def _stack(arrays: list[np.ndarray], where: str) -> torch.Tensor:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise UserError(f"images in '{where}' have different sizes ({', '.join(map(str, sorted(shapes)[:3]))}); "
                        "an in-memory dataset needs one size: extract the archive and use --dataset folder")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@functools.lru_cache(maxsize=2)
def _read_archive(path: str, mtime: float) -> dict[str, dict[str, list[np.ndarray]]]:
    """``{split: {class: [HxWx3 uint8 arrays]}}`` for members ``.../<split>/<class>/<image>``."""
    splits: dict[str, dict[str, list[np.ndarray]]] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile() or not is_image_file(member.name):
                    continue
                parts = PurePosixPath(member.name).parts
                if len(parts) < 3 or any(p.startswith(".") for p in parts):
                    continue
                split, cls = parts[-3], parts[-2]
                data = tar.extractfile(member).read()
                splits.setdefault(split, {}).setdefault(cls, []).append(_decode(data, f"{path}:{member.name}"))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"archive '{path}' cannot be read ({e}); check the file or extract it") from None
    return splits


def archive_dataset(archive: Path, split: str, transform: Callable | None = None, *,
                    fallbacks: tuple[str, ...] = ()) -> MemoryDataset:
    """The ``split`` (or the first present of ``fallbacks``) of an archive of class folders."""
    content = _read_archive(str(archive), archive.stat().st_mtime)
    chosen = next((s for s in (split, *fallbacks) if s in content), None)
    if chosen is None:
        found = ", ".join(sorted(content)) or "no <split>/<class>/<image> members"
        raise UserError(f"archive '{archive}' has no split '{split}' (found: {found}); set data.train_split / "
                        "data.val_split")
    classes = sorted(content[chosen])
    arrays, labels = [], []
    for label, name in enumerate(classes):
        arrays += content[chosen][name]
        labels += [label] * len(content[chosen][name])
    images = _stack(arrays, f"{archive}:{chosen}")
    return MemoryDataset(images, torch.tensor(labels), classes, transform=transform, source=f"{archive}:{chosen}")


def to_memory(files: ImageFileDataset) -> MemoryDataset | None:
    """Decode a file dataset whose images all share one size into memory (None otherwise)."""
    arrays = [np.asarray(load_image(path)) for path, _ in files.samples]
    if len({a.shape for a in arrays}) != 1:
        return None
    images = _stack(arrays, files.source)
    labels = torch.tensor([label for _, label in files.samples])
    return MemoryDataset(images, labels, files.classes, transform=files.transform, source=files.source)
