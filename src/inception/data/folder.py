"""Datasets of image files: ImageNet-style class folders and PaddleClas-style list files.

Files are found and checked when the dataset is built; images are decoded per sample by
:func:`load_image`.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError

# What the project opens, everywhere (training, check-data, infer, serve): only these formats'
# decoders run, so an EPS, PDF or other file named like a photo never reaches Ghostscript or
# another plugin. PIL identifies a file by its bytes, not its name.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, GIF or TIFF"
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
LABEL_FILES = ("label_list.txt", "labels.txt")

# The largest image decoded (width x height): 25 MP, sized for classification (a 6000 x 4000
# photo is 24 MP; at 4 bytes a pixel its decode takes 100 MB). Checked from the header, before
# any pixel is decoded; PIL's own limit (89.5 MP warned, 179 MP refused) is far above it.
DEFAULT_MAX_PIXELS = 25_000_000

# Set once, at import, never per call: warnings.catch_warnings() is not thread-safe, and decoding
# runs in threads (the server's decode pool, the fast loader). The size limit above replaces
# PIL's bomb warning; the rest is per-file noise (palette transparency, EXIF, torchvision's
# decode deprecation and read-only buffers).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


class ImageReadError(UserError):
    """An image file that cannot be decoded.

    A DataLoader worker re-raises an exception as ``type(e)(text)``, where ``text`` wraps
    the message in the worker's traceback; this class keeps just the one-line message.
    """

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


class UnsupportedImageError(ImageReadError):
    """A file that is none of :data:`IMAGE_FORMATS` (an EPS, a PDF, random bytes)."""


class ImageTooLargeError(ImageReadError):
    """An image of more pixels than the limit (:data:`DEFAULT_MAX_PIXELS` unless told)."""


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def open_image(source, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``source`` with Pillow, only as one of :data:`IMAGE_FORMATS` (``formats=``), with the header's size
    checked against ``max_pixels`` (None: no limit of ours) before any pixel is decoded. Raises
    :class:`UnsupportedImageError`, :class:`ImageTooLargeError` or :class:`ImageReadError`
    naming the file (``name``, default ``source``). Use it in a ``with`` block."""
    name = name or source
    try:
        im = Image.open(source, formats=IMAGE_FORMATS)
    except Image.UnidentifiedImageError:
        raise UnsupportedImageError(f"cannot read image '{name}' (not a {FORMAT_NAMES} file); convert it to one of "
                                    "those, or delete it") from None
    except Image.DecompressionBombError as e:          # over 2x PIL's limit: refused before ours is asked
        raise ImageTooLargeError(f"cannot read image '{name}' ({_first_line(e)}); resize it") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"cannot read image '{name}' ({_first_line(e)}); replace or delete the file") from None
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        im.close()
        raise ImageTooLargeError(f"cannot read image '{name}' ({width}x{height} = {width * height:,} pixels, over the "
                                 f"limit of {max_pixels:,}); resize it")
    return im


def load_image(path, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int | None = None) -> Image.Image:
    """Decode ``path`` (a file path or a binary file object) into an RGB PIL image
    (grayscale, CMYK, RGBA and palette images are converted) under :func:`open_image`'s rules;
    an unreadable file is an :class:`ImageReadError` naming it (``name``, default ``path``).

    With ``min_side`` (for a caller that resizes the short side to it next), an RGB or
    grayscale JPEG whose short side is at least twice that decodes at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, PIL's ``draft``), the smallest that keeps the short side >=
    ``min_side``: a 24 MP photo for a 146-px resize costs 1/64 of the pixels' memory and
    decode time. The fast training pipeline decodes its eval crops the same way."""
    with open_image(path, name, max_pixels) as im:
        width, height = im.size
        if min_side and im.format == "JPEG" and im.mode in ("RGB", "L") and min(width, height) >= 2 * min_side:
            scale = min_side / min(width, height)
            im.draft(im.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        try:
            return to_rgb(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as e:
            raise ImageReadError(f"cannot read image '{name or path}' ({_first_line(e)}); replace or delete the "
                                 "file") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` decoded as RGB: palette images keep their transparency's colours, 16/32-bit
    grayscale keeps its top 8 bits (not clipped at 255), CMYK and the rest convert."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif im.mode.startswith("I"):
        im = _to_8bit(im)
    return im.convert("RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    """16- or 32-bit grayscale to 8 bits, rounded, in integers: one int32 array of the image
    (4 bytes a pixel), worked in place; no float64 copies. 16-bit images (or any with values
    above 255) scale 0..65535 to 0..255; 32-bit values outside 0..65535 saturate."""
    a = np.asarray(im)
    sixteen = im.mode.startswith("I;16") or (a.size and int(a.max()) > 255)
    a = a.astype(np.int32)                        # the one copy (PIL's buffer is read-only)
    np.clip(a, 0, 65535 if sixteen else 255, out=a)
    if sixteen:
        a *= 255                                  # at most 16,711,425: fits in int32
        a += 32767
        a //= 65535                               # round half up, as (a * 255 / 65535 + 0.5) floored
    return Image.fromarray(a.astype(np.uint8), mode="L")


class ImageFileDataset(Dataset):
    """``samples`` is a list of ``(path, label)``; ``loader(path)`` reads a sample
    (default :func:`load_image`, an RGB PIL image), then ``transform`` runs on it.

    ``normalize``, when set, is the ``(mean, std)`` that the batches still need: the fast
    pipeline's samples are uint8 and :class:`~inception.data.loader.FileLoader` normalizes
    whole batches on the device.
    """

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], *,
                 transform: Callable | None = None, source: str = "", loader: Callable = load_image,
                 normalize: tuple | None = None) -> None:
        self.samples = samples
        self.classes = list(classes)
        self.transform = transform
        self.source = source
        self.loader = loader
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = self.loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def relabel(self, mapping: list[int], classes: list[str]) -> None:
        """Label ``i`` becomes ``mapping[i]``, an index into the new ``classes``."""
        self.samples = [(path, mapping[label]) for path, label in self.samples]
        self.classes = list(classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source}: {len(self)} images, {len(self.classes)} classes)"


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def require_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        parent = path.parent
        found = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
        seen = f" (found: {', '.join(found[:10])})" if found else ""
        raise UserError(f"{what} '{path}' does not exist{seen}; {fix}")
    return path


def find_classes(split_dir: Path) -> list[str]:
    """Sorted names of the class sub-folders (hidden folders are ignored)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def folder_dataset(split_dir: Path, transform: Callable | None = None, **reading) -> ImageFileDataset:
    """``split_dir/<class>/**/<image>``: classes are the sorted folder names; ``reading``
    (``loader``, ``normalize``) goes to :class:`ImageFileDataset`."""
    classes = find_classes(split_dir)
    if not classes:
        raise UserError(f"'{split_dir}' has no class sub-folders; expected {split_dir}/<class>/<image>.jpg")
    samples = []
    for label, name in enumerate(classes):
        files = []
        for dirpath, dirnames, filenames in os.walk(split_dir / name, followlinks=True):
            dirnames.sort()
            files += [os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f)]
        if not files:
            raise UserError(f"class folder '{split_dir / name}' has no images "
                            f"({', '.join(IMG_EXTENSIONS)}); add images or remove the folder")
        samples += [(f, label) for f in files]
    return ImageFileDataset(samples, classes, transform=transform, source=str(split_dir), **reading)


def read_label_names(root: Path) -> list[str] | None:
    """Class names from ``root/label_list.txt`` or ``root/labels.txt`` (lines ``index name``
    or ``name``), or None when neither exists."""
    path = next((root / n for n in LABEL_FILES if (root / n).is_file()), None)
    if path is None:
        return None
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if head.isdigit() and rest.strip():
            index, name = int(head), rest.strip()
        else:
            index, name = len(names), line
        if index in names:
            raise UserError(f"'{path}' line {n}: label {index} is named twice; give each index one name")
        names[index] = name
    missing = sorted(set(range(len(names))) - set(names))
    if missing:
        raise UserError(f"'{path}' has no name for labels {missing[:10]}; name every index from 0")
    return [names[i] for i in range(len(names))]


def read_list(list_file: Path, root: Path) -> list[tuple[str, int]]:
    """``relative/path label`` lines (split on the last whitespace; blank lines ignored)."""
    if not list_file.is_file():
        raise UserError(f"list file '{list_file}' does not exist; create it (lines 'relative/path label') "
                        "or set data.train_list / data.val_list")
    samples = []
    for n, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise UserError(f"'{list_file}' line {n} is malformed: {line.strip()!r}; "
                            "expected 'relative/path label' with an integer label >= 0")
        samples.append((str(root / parts[0]), int(parts[1])))
    if not samples:
        raise UserError(f"list file '{list_file}' has no entries; add lines 'relative/path label'")
    first = samples[0][0]
    if not os.path.exists(first):
        raise UserError(f"'{first}' (line 1 of '{list_file}') does not exist; list paths are relative "
                        f"to data.data_dir ('{root}')")
    return samples


def list_dataset(list_file: Path, root: Path, transform: Callable | None = None, **reading) -> ImageFileDataset:
    """A PaddleClas list file; classes from a label names file in ``root`` or ``"0".."N-1"``."""
    samples = read_list(list_file, root)
    top = max(label for _, label in samples)
    classes = read_label_names(root)
    if classes is None:
        classes = [str(i) for i in range(top + 1)]
    elif top >= len(classes):
        raise UserError(f"'{list_file}' uses label {top} but the label names file in '{root}' names only "
                        f"{len(classes)} classes; add the missing names")
    return ImageFileDataset(samples, classes, transform=transform, source=str(list_file), **reading)
