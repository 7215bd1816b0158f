"""Pre-resized dataset caches: ``inception prepare SRC DST`` writes them, training reads them.

An epoch over full-size photographs spends most of its time decoding pixels the model never
sees. :func:`prepare` writes a copy of a dataset whose images are at most ``max_size`` on
their shorter side, as JPEG, once; every later epoch decodes less. Two layouts:

* ``folder``: ``DST/<split>/<class>/<name>.jpg`` plus PaddleClas list files
  (``DST/<split>_list.txt``, ``DST/label_list.txt``), so any tool can read it too.
* ``shards``: ``DST/<split>-00000.bin`` ... (the JPEG files back to back, ``shard_mb`` each)
  and ``DST/<split>-index.npz`` (shard, offset, length, label and name of every image): a
  few large files instead of a million small ones, for slow or network disks.

``DST/inception-cache.json`` (written last, atomically: a cache without it is incomplete)
records the class list, the splits and how the cache was made. Training with
``--data-dir DST`` (dataset ``folder`` or ``list``) finds it and reads the cache with the
same class order as the source, so labels and checkpoints are interchangeable.

JPEGs that are already small enough are copied byte for byte (no re-encoding loss); others
are decoded (at reduced size where libjpeg can), converted to RGB like every image here,
resized with antialiasing and encoded at ``quality``. Unreadable files are skipped and
listed in ``DST/skipped.txt``.

A source is a folder dataset (``SRC/<split>/<class>/*``), a list dataset (``SRC/<split>_list.txt``)
or a ``.tar`` / ``.tar.gz`` archive of class folders (``[top/]<split>/<class>/*``, read as a
stream, never unpacked).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import UserError
from ..utils import atomic_write_text
from .archive import member_parts, read_member
from .decode import EncodedDataset
from .folder import (
    ImageFileDataset,
    ImageReadError,
    find_classes,
    folder_dataset,
    open_image,
    read_label_names,
    read_list,
    to_rgb,
)

log = logging.getLogger("inception")

MANIFEST = "inception-cache.json"
LAYOUTS = ("folder", "shards")


def is_cache(root: Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        assert manifest.get("format") == "inception-cache" and manifest["layout"] in LAYOUTS
        return manifest
    except (OSError, ValueError, KeyError, AssertionError):
        raise UserError(f"'{path}' is not a valid cache manifest; run `inception prepare` again") from None


# --------------------------------------------------------------------------------------
# Reading

class ShardDataset(EncodedDataset):
    """Images stored back to back in shard files; ``samples`` are ``(name, label)``."""

    def __init__(self, root: Path, split: str, classes: list[str], *, transform=None, **reading) -> None:
        index_path = root / f"{split}-index.npz"
        try:
            with np.load(index_path) as z:
                self.shard, self.offset = z["shard"], z["offset"]
                self.length, labels, names = z["length"], z["label"], z["name"]
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"cannot read the cache index '{index_path}' ({e}); "
                            "run `inception prepare` again") from None
        super().__init__([(str(n), int(y)) for n, y in zip(names, labels)], classes, transform=transform,
                         source=str(index_path), **reading)
        self.root, self.split = root, split
        self._fds: dict[int, int] = {}
        self._pid = None

    def encoded(self, index: int) -> bytearray:
        if self._pid != os.getpid():        # a new DataLoader worker: its own file handles
            self._fds, self._pid = {}, os.getpid()
        shard = int(self.shard[index])
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.root / f"{self.split}-{shard:05d}.bin", os.O_RDONLY)
        return bytearray(os.pread(fd, int(self.length[index]), int(self.offset[index])))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": {}, "_pid": None}


def cache_dataset(root: Path, split: str, transform=None, **reading) -> ImageFileDataset:
    """One split of a cache written by :func:`prepare`, labelled by the source's classes;
    ``reading`` (``loader``, ``normalize``) goes to the dataset."""
    manifest = read_manifest(root)
    if split not in manifest["splits"]:
        raise UserError(f"the cache '{root}' has no split '{split}' (it has: {', '.join(manifest['splits'])}); "
                        "set data.train_split / data.val_split")
    classes = manifest["classes"]
    if manifest["layout"] == "shards":
        return ShardDataset(root, split, classes, transform=transform, **reading)
    samples = read_list(root / f"{split}_list.txt", root)
    return ImageFileDataset(samples, classes, transform=transform, source=str(root / split), **reading)


# --------------------------------------------------------------------------------------
# Writing

def _source_items(src: Path) -> tuple[list[str], dict[str, int], Iterator]:
    """``(classes, {split: count}, items)`` where items yield ``(split, label, name, bytes or path)``."""
    if src.is_file() and src.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
        return _archive_items(src)
    if not src.is_dir():
        raise UserError(f"'{src}' does not exist; give a dataset folder, a list dataset or a .tar.gz of class folders")
    lists = sorted(src.glob("*_list.txt"))
    if lists:
        splits = {p.name[: -len("_list.txt")]: read_list(p, src) for p in lists}
        top = max(y for samples in splits.values() for _, y in samples)
        classes = read_label_names(src) or [str(i) for i in range(top + 1)]
        items = ((s, y, os.path.relpath(p, src), p) for s, samples in splits.items() for p, y in samples)
        return classes, {s: len(v) for s, v in splits.items()}, items
    split_dirs = [d for d in sorted(src.iterdir()) if d.is_dir() and not d.name.startswith(".")
                  and any(c.is_dir() for c in d.iterdir())]
    if not split_dirs:
        raise UserError(f"'{src}' has no split folders (<split>/<class>/<image>) and no *_list.txt files")
    train = next((d for d in split_dirs if d.name == "train"), None)
    classes = find_classes(train) if train else sorted({c for d in split_dirs for c in find_classes(d)})
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for d in split_dirs:
        ds = folder_dataset(d)
        splits[d.name] = [(p, index[ds.classes[y]]) for p, y in ds.samples if ds.classes[y] in index]
    items = ((s, y, os.path.relpath(p, src / s), p) for s, samples in splits.items() for p, y in samples)
    return classes, {s: len(v) for s, v in splits.items()}, items


def _archive_items(src: Path):
    """Members ``[top/]<split>/<class>/<file>`` of a tar archive (:func:`member_parts`), read
    in one pass (a first pass lists the names: cheap next to decoding)."""
    try:
        with tarfile.open(src, "r:*") as tar:
            parsed = [p for p in (member_parts(m.name) for m in tar if m.isfile()) if p]
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"cannot read the archive '{src}' ({e})") from None
    if not parsed:
        raise UserError(f"'{src}' holds no images under <split>/<class>/")
    split_names = sorted({s for s, _, _ in parsed})
    train_classes = sorted({c for s, c, _ in parsed if s == "train"})
    classes = train_classes or sorted({c for _, c, _ in parsed})
    index = {c: i for i, c in enumerate(classes)}
    counts = {s: sum(1 for x in parsed if x[0] == s and x[1] in index) for s in split_names}

    def items():
        with tarfile.open(src, "r:*") as tar:
            for member in tar:
                p = member_parts(member.name) if member.isfile() else None
                if p is None or p[1] not in index:
                    continue
                yield p[0], index[p[1]], f"{p[1]}/{p[2]}", read_member(tar, member, src)
    return classes, counts, items()


def resize_encoded(data: bytes, name: str, max_size: int, quality: int) -> bytes:
    """``data`` as a JPEG whose shorter side is at most ``max_size``; a JPEG already that
    small is returned unchanged."""
    try:
        with open_image(io.BytesIO(data), name) as im:
            w, h = im.size
            if im.format == "JPEG" and im.mode in ("RGB", "L") and min(w, h) <= max_size:
                return data
            scale = min(1.0, max_size / min(w, h))
            target = (max(1, round(w * scale)), max(1, round(h * scale)))
            if im.format == "JPEG" and scale < 0.5:
                im.draft("RGB", target)        # DCT scaling, never below the target
            rgb = to_rgb(im)
            if rgb.size != target:
                rgb = rgb.resize(target, Image.BICUBIC, reducing_gap=3.0)
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=quality)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image '{name}' ({e})") from None


def _convert(job: tuple) -> tuple:
    split, label, name, source, max_size, quality = job
    try:
        data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        return split, label, name, resize_encoded(data, name, max_size, quality), None
    except (ImageReadError, OSError) as e:
        return split, label, name, None, str(e)


def _safe_dir(name: str, i: int) -> str:
    bad = not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name
    return f"class_{i:05d}" if bad else name


def prepare(src: str | Path, dst: str | Path, *, max_size: int = 256, layout: str = "folder", quality: int = 90,
            workers: int | None = None, shard_mb: int = 256, progress: bool | None = None) -> dict:
    """Write a pre-resized copy of the dataset ``src`` to ``dst`` (see the module's doc);
    return a summary: images per split, skipped files, bytes and seconds."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if layout not in LAYOUTS:
        raise UserError(f"--format '{layout}' is not valid; choose folder or shards")
    if max_size < 8 or not 1 <= quality <= 100 or shard_mb < 1:
        raise UserError("--max-size must be >= 8, --quality 1..100, --shard-mb >= 1")
    if dst.exists() and any(dst.iterdir()) and not is_cache(dst):
        raise UserError(f"'{dst}' exists and is not an inception cache; choose an empty or new folder")
    if dst.resolve() == src.resolve():
        raise UserError("the cache cannot overwrite its source; choose another destination")
    classes, counts, items = _source_items(src)
    try:
        if is_cache(dst):            # an earlier cache there is replaced, not mixed with the new one
            shutil.rmtree(dst)
        dst.mkdir(parents=True, exist_ok=True)
        (dst / MANIFEST).unlink(missing_ok=True)      # incomplete until the end
    except OSError as e:
        raise UserError(f"cannot write to '{dst}' ({e.strerror}); choose another destination") from None
    dirs = [_safe_dir(c, i) for i, c in enumerate(classes)]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    total = sum(counts.values())
    start = time.perf_counter()
    written: dict[str, list] = {s: [] for s in counts}
    shard_state: dict[str, list] = {}       # split -> [shard number, file, offset]
    skipped: list[tuple[str, str]] = []
    seen: dict[str, set] = {}
    nbytes = 0
    jobs = ((s, y, n, p, max_size, quality) for s, y, n, p in items)
    bar = tqdm(total=total, unit="img", desc="prepare", disable=progress is False, dynamic_ncols=True)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for split, label, name, data, error in _imap(pool, jobs):
            bar.update(1)
            if error is not None:
                skipped.append((f"{split}/{name}", error))
                log.warning("skipped %s", error)
                continue
            nbytes += len(data)
            if layout == "folder":
                rel = _unique(seen.setdefault(split, set()), f"{split}/{dirs[label]}/{Path(name).stem}.jpg")
                path = dst / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                written[split].append((rel, label))
            else:
                state = shard_state.get(split)
                if state is None or state[2] + len(data) > shard_mb * 2**20 and state[2] > 0:
                    if state is not None:
                        state[1].close()
                    number = 0 if state is None else state[0] + 1
                    state = shard_state[split] = [number, open(dst / f"{split}-{number:05d}.bin", "wb"), 0]
                state[1].write(data)
                written[split].append((name, label, state[0], state[2], len(data)))
                state[2] += len(data)
    except OSError as e:
        raise UserError(f"cannot write the cache in '{dst}' ({e.strerror or e}); free space or choose another "
                        "destination") from None
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)
        for state in shard_state.values():
            state[1].close()
    _finish(dst, layout, classes, dirs, written, skipped)
    seconds = time.perf_counter() - start
    summary = {"source": str(src), "destination": str(dst), "layout": layout, "max_size": max_size,
               "quality": quality, "classes": len(classes), "splits": {s: len(v) for s, v in written.items()},
               "skipped": len(skipped), "bytes": nbytes, "seconds": seconds,
               "img_per_s": sum(len(v) for v in written.values()) / max(seconds, 1e-9)}
    manifest = {"format": "inception-cache", "version": 1, **summary, "classes": classes,
                "splits": {s: {"images": len(v)} for s, v in written.items()},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(dst / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return summary


def _imap(pool, jobs: Iterator, chunk: int = 1024) -> Iterator:
    """``pool.map`` over ``jobs`` a chunk at a time (never all the source's bytes in memory)."""
    if pool is None:
        yield from map(_convert, jobs)
        return
    while True:
        batch = list(itertools.islice(jobs, chunk))
        if not batch:
            return
        yield from pool.map(_convert, batch, chunksize=16)


def _unique(seen: set, rel: str) -> str:
    """``rel``, or ``rel`` with a number when two sources map to one name (a.png, a.jpg)."""
    out, n = rel, 1
    while out in seen:
        out = rel[:-4] + f"-{n}.jpg"
        n += 1
    seen.add(out)
    return out


def _finish(dst: Path, layout: str, classes: list[str], dirs: list[str], written: dict, skipped: list) -> None:
    atomic_write_text(dst / "label_list.txt", "".join(f"{i} {c}\n" for i, c in enumerate(classes)))
    for split, rows in written.items():
        if layout == "folder":
            atomic_write_text(dst / f"{split}_list.txt", "".join(f"{rel} {y}\n" for rel, y in rows))
        else:
            arr = np.array([r[2:] for r in rows], dtype=np.int64).reshape(-1, 3)
            tmp = dst / f".{split}-index.tmp.npz"
            np.savez(tmp, shard=arr[:, 0].astype(np.int32), offset=arr[:, 1], length=arr[:, 2].astype(np.int32),
                     label=np.array([r[1] for r in rows], dtype=np.int32), name=np.array([r[0] for r in rows]))
            os.replace(tmp, dst / f"{split}-index.npz")
    if skipped:
        atomic_write_text(dst / "skipped.txt", "".join(f"{name}\t{why}\n" for name, why in skipped))
