"""Datasets read from a ``.tar`` / ``.tar.gz`` archive of class folders
(``[top/]<split>/<class>/<image>``, e.g. ``cifar10-jpg.tar.gz``: ``train/<class>/*.jpg``,
``test/<class>/*.jpg``), without unpacking it; and extracted CIFAR-style class folders held in
memory.

:func:`read_archive` reads an archive's images once, still encoded, into one buffer. Then:

* :func:`archive_dataset` (CIFAR-sized images, ``data.dataset: cifar10``/``cifar100``) decodes
  every image of a split once into one uint8 ``N x 3 x H x W`` tensor (a
  :class:`~inception.data.memory.MemoryDataset`), which the trainer can hold on the GPU and
  augment there in batches. All images must share one size (CIFAR's 32x32).
* :class:`ArchiveDataset` (``data.dataset: folder``) keeps a split's images encoded and
  decodes each one per sample, as a folder of files is read (the fast decoder or PIL);
  DataLoader workers share the buffer (fork: no copy).
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..errors import UserError
from .decode import EncodedDataset
from .folder import ImageFileDataset, is_image_file, load_image
from .memory import MemoryDataset

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def member_parts(name: str) -> tuple[str, str, str] | None:
    """``(split, class, file)`` of an image member ``[top/]<split>/<class>/<file>``; None for
    other members (not an image, too shallow, hidden)."""
    parts = PurePosixPath(name).parts
    if len(parts) < 3 or not is_image_file(name) or any(p.startswith(".") for p in parts):
        return None
    return parts[-3], parts[-2], parts[-1]


# A tar member larger than this is no image to train on (a 25 MP 16-bit RGB TIFF is 150 MB): it is
# refused before it is read, so a tar bomb (a small .tar.gz whose members inflate to GBs) cannot
# exhaust memory.
MAX_MEMBER_BYTES = 256 << 20


def max_archive_bytes() -> int:
    """What :func:`read_archive` may hold in memory: half of this machine's memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):    # not POSIX: 8 GiB
        return 8 << 30


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, archive, held: int = 0,
                limit: int | None = None) -> bytes:
    """The bytes of ``member``, refused (one-line :class:`UserError` naming the archive and the
    member) when it is larger than :data:`MAX_MEMBER_BYTES` or would take what is ``held``
    already past ``limit``."""
    if member.size > MAX_MEMBER_BYTES:
        raise UserError(f"archive '{archive}': member '{member.name}' is {member.size:,} bytes, more than the "
                        f"{MAX_MEMBER_BYTES >> 20} MiB an image may take (a damaged archive or a tar bomb); remove "
                        "it from the archive")
    if limit is not None and held + member.size > limit:
        raise UserError(f"archive '{archive}' holds more than {limit:,} bytes of images (at member "
                        f"'{member.name}'), more than half this machine's memory; extract it and train from the "
                        "folder (data.data_dir: the extracted folder)")
    f = tar.extractfile(member)
    if f is None:
        raise UserError(f"archive '{archive}': member '{member.name}' cannot be read; check the archive")
    return f.read(member.size)


class Member(NamedTuple):
    """An image of an archive: its member name, class folder, and where its bytes lie in the buffer."""

    name: str
    cls: str
    offset: int
    length: int


class ArchiveContent(NamedTuple):
    """Every image of an archive, encoded: ``data`` holds them back to back (uint8), ``splits``
    maps ``split -> class -> [Member]`` (archive order within a class)."""

    path: str
    data: np.ndarray
    splits: dict[str, dict[str, list[Member]]]

    def member_bytes(self, m: Member) -> bytearray:
        """A member's bytes (a writable copy: the decoders share it without another)."""
        return bytearray(self.data[m.offset:m.offset + m.length])

    def split(self, split: str, fallbacks: tuple[str, ...] = ()) -> tuple[str, dict[str, list[Member]]]:
        """``(name, class -> members)`` of ``split`` or the first present of ``fallbacks``."""
        chosen = next((s for s in (split, *fallbacks) if s in self.splits), None)
        if chosen is None:
            found = ", ".join(sorted(self.splits)) or "no <split>/<class>/<image> members"
            raise UserError(f"archive '{self.path}' has no split '{split}' (found: {found}); set data.train_split / "
                            "data.val_split")
        return chosen, self.splits[chosen]


def read_archive(archive: Path) -> ArchiveContent:
    """The images of ``archive``, encoded, read once per process (the train and val splits
    share one read); an unreadable archive is a UserError."""
    return _read_archive(str(archive), Path(archive).stat().st_mtime)


@functools.lru_cache(maxsize=2)
def _read_archive(path: str, mtime: float) -> ArchiveContent:
    data = bytearray()
    splits: dict[str, dict[str, list[Member]]] = {}
    limit = max_archive_bytes()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = member_parts(member.name) if member.isfile() else None
                if parts is None:
                    continue
                raw = read_member(tar, member, path, len(data), limit)
                splits.setdefault(parts[0], {}).setdefault(parts[1], []).append(
                    Member(member.name, parts[1], len(data), len(raw)))
                data += raw
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"archive '{path}' cannot be read ({e}); check the file or extract it") from None
    return ArchiveContent(path, np.frombuffer(data, dtype=np.uint8), splits)


def _decode(data: bytes, name: str) -> np.ndarray:
    """Under :func:`~inception.data.folder.load_image`'s rules (formats, size limit)."""
    return np.asarray(load_image(io.BytesIO(data), name=name))


def _stack(arrays: list[np.ndarray], where: str) -> torch.Tensor:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise UserError(f"images in '{where}' have different sizes ({', '.join(map(str, sorted(shapes)[:3]))}); "
                        "an in-memory dataset needs one size: extract the archive and use --dataset folder")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def archive_dataset(archive: Path, split: str, transform: Callable | None = None, *,
                    fallbacks: tuple[str, ...] = ()) -> MemoryDataset:
    """The ``split`` (or the first present of ``fallbacks``) of an archive of class folders,
    decoded into memory."""
    content = read_archive(archive)
    chosen, by_class = content.split(split, fallbacks)
    classes = sorted(by_class)
    arrays, labels = [], []
    for label, name in enumerate(classes):
        arrays += [_decode(content.member_bytes(m), f"{archive}:{m.name}") for m in by_class[name]]
        labels += [label] * len(by_class[name])
    images = _stack(arrays, f"{archive}:{chosen}")
    return MemoryDataset(images, torch.tensor(labels), classes, transform=transform, source=f"{archive}:{chosen}")


class ArchiveDataset(EncodedDataset):
    """One split of an archive of class folders (classes: the sorted folder names), its images
    kept encoded in memory and decoded per sample; ``samples`` are ``(member name, label)``.
    ``reading`` (``loader``, ``normalize``) goes to :class:`~inception.data.folder.ImageFileDataset`."""

    def __init__(self, archive: Path, split: str, transform: Callable | None = None, **reading) -> None:
        content = read_archive(archive)
        _, by_class = content.split(split)
        classes = sorted(by_class)
        members = [m for name in classes for m in by_class[name]]
        labels = [label for label, name in enumerate(classes) for _ in by_class[name]]
        super().__init__([(m.name, y) for m, y in zip(members, labels)], classes, transform=transform,
                         source=f"{archive}:{split}", **reading)
        self.where, self._data = str(archive), content.data
        self._offset = np.array([m.offset for m in members], dtype=np.int64)
        self._length = np.array([m.length for m in members], dtype=np.int64)

    def encoded(self, index: int) -> bytearray:
        start = int(self._offset[index])
        return bytearray(self._data[start:start + int(self._length[index])])


def archive_classes(archive: Path, split: str) -> list[str] | None:
    """The sorted class folders of an archive's ``split``, None when it has no such split."""
    splits = read_archive(archive).splits
    return sorted(splits[split]) if split in splits else None


def to_memory(files: ImageFileDataset) -> MemoryDataset | None:
    """Decode a file dataset whose images all share one size into memory (None otherwise)."""
    arrays = [np.asarray(load_image(path)) for path, _ in files.samples]
    if len({a.shape for a in arrays}) != 1:
        return None
    images = _stack(arrays, files.source)
    labels = torch.tensor([label for _, label in files.samples])
    return MemoryDataset(images, labels, files.classes, transform=files.transform, source=files.source)
