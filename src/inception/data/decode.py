"""The fast input pipeline: decode, crop and resize an image file in one step, uint8 out.

The plain pipeline (``ImageFolder`` + PIL + ``transforms``) decodes the whole JPEG,
crops, resizes, converts to float and normalizes in every DataLoader worker, then sends
float32 batches (4 bytes per value) from the workers to the training process. Here each
sample is one fused step, and the float work moves to the device:

1. The file's header is read first (size, format, mode; PIL's decompression-bomb check).
2. The crop is drawn from that size alone: :class:`RandomResizedCropDecode` draws it
   exactly as torchvision's ``RandomResizedCrop`` does (the same function, the same torch
   RNG calls, so with the same seed it picks the same box, and its scale and aspect-ratio
   distributions are torchvision's), :class:`CenterCropDecode` maps the eval preset's
   "resize the short side, center-crop" onto a box of the original image.
3. The decode is cut to what the box needs: when the box is at least twice the output
   size, libjpeg decodes at 1/2, 1/4 or 1/8 scale (DCT scaling, PIL's ``draft``); other
   JPEGs go through libjpeg-turbo via ``torchvision.io.decode_jpeg``; PNG, BMP, WebP,
   16-bit, palette and other files go through PIL with the conversions of
   :func:`~inception.data.folder.load_image`.
4. Only the box is resized (antialiased, the model's interpolation) by torch's uint8
   kernels, then flipped.

A sample is a ``3 x size x size`` uint8 tensor. :class:`~inception.data.loader.DeviceBatches`
moves whole batches to the device and converts and normalizes them there in one pass.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from .folder import (
    DEFAULT_MAX_PIXELS,
    ImageFileDataset,
    ImageReadError,
    ImageTooLargeError,
    load_image,
    open_image,
    to_rgb,
)
from .transforms import interpolation_mode

__all__ = ["EncodedImage", "EncodedDataset", "read_encoded", "decode_pil", "RandomResizedCropDecode",
           "CenterCropDecode", "decode_box"]

#: Errors that mean "this file is not a usable image".
DECODE_ERRORS = (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError)


class EncodedImage(NamedTuple):
    """An image file's bytes and a name for messages (its path)."""

    data: bytes | bytearray
    name: str


def read_encoded(path: str | Path) -> EncodedImage:
    """The bytes of ``path`` (no decoding: that happens in :class:`RandomResizedCropDecode`
    or :class:`CenterCropDecode`)."""
    try:
        with open(path, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)     # writable: torch.frombuffer shares it, no copy
            f.readinto(data)
            return EncodedImage(data, str(path))
    except OSError as e:
        raise ImageReadError(f"cannot read image '{path}' ({e.strerror or e}); replace or delete the file") from None


def decode_pil(image: EncodedImage) -> Image.Image:
    """An :class:`EncodedImage` as an RGB PIL image (the torchvision pipeline's input)."""
    return load_image(io.BytesIO(image.data), name=image.name)


class EncodedDataset(ImageFileDataset):
    """Image files held as bytes (the shards of a cache, the members of an archive):
    ``samples`` are ``(name, label)`` and :meth:`encoded` gives sample ``index``'s bytes.

    The fast pipeline's decoder (``loader`` is :func:`read_encoded`) takes the
    :class:`EncodedImage` itself; with the default loader (the torchvision pipeline) PIL
    decodes it first. Messages name an image ``<where>:<name>`` (``where``: ``source``).
    """

    where: str = ""

    def encoded(self, index: int) -> bytearray:
        raise NotImplementedError

    def __getitem__(self, index: int):
        name, label = self.samples[index]
        encoded = EncodedImage(self.encoded(index), f"{self.where or self.source}:{name}")
        image = decode_pil(encoded) if self.loader is load_image else encoded
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _fail(name: str, e: Exception) -> ImageReadError:
    reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return ImageReadError(f"cannot read image '{name}' ({reason}); replace or delete the file")


class Deferred(NamedTuple):
    """A JPEG whose decode, crop, resize and flip are left to the device (``data.gpu_decode``):
    its bytes (a 1-D uint8 tensor), the box in its pixels, the output size, the interpolation
    and the flip drawn for it."""

    data: Tensor
    box: tuple
    size: int
    interpolation: str
    flip: bool
    name: str


def decode_box(image: EncodedImage, box_fn, size: int, interpolation: str = "bilinear",
               defer: bool = False) -> tuple[Tensor | Deferred, tuple]:
    """Decode the part of ``image`` that ``box_fn(width, height) -> (top, left, h, w)`` (in
    the original image's pixels) selects, resized to ``size x size``.

    Returns ``(3 x size x size uint8 tensor, box)``; an unusable file is an
    :class:`~inception.data.folder.ImageReadError` naming it. With ``defer``, a baseline or
    progressive RGB / grayscale JPEG is not decoded here: a :class:`Deferred` record comes
    back instead, for :class:`DeferredBatch` to decode on the device.
    """
    header = _jpeg_frame(image.data)
    if header is not None:           # the common case, without PIL: a JPEG decoded at full size
        width, height, components = header
        _bomb_check(width, height, image.name)
        top, left, h, w = box_fn(width, height)
        if defer and components in (1, 3):
            data = torch.frombuffer(image.data, dtype=torch.uint8)
            return Deferred(data, (top, left, h, w), size, interpolation, False, image.name), (top, left, h, w)
        if min(w, h) < 2 * size:
            try:
                pixels = decode_jpeg(torch.frombuffer(image.data, dtype=torch.uint8), mode=ImageReadMode.RGB)
            except RuntimeError as e:
                raise _fail(image.name, e) from None
            return _resize_box(pixels, (top, left, h, w), size, interpolation), (top, left, h, w)
    try:
        with open_image(io.BytesIO(image.data), image.name) as im:
            width, height = im.size
            top, left, h, w = box_fn(width, height) if header is None else (top, left, h, w)
            reduce, scaled = min(w, h) / size, None
            if im.format == "JPEG" and reduce >= 2 and im.mode in ("RGB", "L"):
                # DCT scaling: libjpeg decodes at the largest 1/2, 1/4, 1/8 scale that keeps the box >= size.
                im.draft("RGB", (math.ceil(width * size / w), math.ceil(height * size / h)))
                sx, sy = im.size[0] / width, im.size[1] / height
                pixels = _pil_tensor(to_rgb(im))
                scaled = (top * sy, left * sx, h * sy, w * sx)
            elif im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK"):
                pixels = decode_jpeg(torch.frombuffer(image.data, dtype=torch.uint8), mode=ImageReadMode.RGB)
            else:
                pixels = _pil_tensor(to_rgb(im))
    except DECODE_ERRORS as e:
        raise _fail(image.name, e) from None
    box = (top, left, h, w)
    return _resize_box(pixels, scaled or box, size, interpolation), box


def _crop(pixels: Tensor, box: tuple) -> Tensor:
    """The ``(top, left, h, w)`` box of ``C x H x W`` pixels as a view, rounded to whole
    pixels (it is fractional when it was scaled) and kept inside the image."""
    top, left, h, w = box
    H, W = pixels.shape[-2:]
    t, l_ = min(max(int(round(top)), 0), H - 1), min(max(int(round(left)), 0), W - 1)
    b, r = min(max(int(round(top + h)), t + 1), H), min(max(int(round(left + w)), l_ + 1), W)
    return pixels[:, t:b, l_:r]


def _resize_box(pixels: Tensor, box: tuple, size: int, interpolation: str) -> Tensor:
    """The box of ``pixels`` resized to ``size``."""
    crop = _crop(pixels, box)
    if interpolation in _UINT8_MODES:     # torch's uint8 antialiased kernels, directly (no float round trip)
        return F.interpolate(crop[None], size=(size, size), mode=interpolation, antialias=True,
                             align_corners=False)[0]
    return TF.resize(crop, [size, size], interpolation=interpolation_mode(interpolation), antialias=True)


_UINT8_MODES = ("bilinear", "bicubic")


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}     # start-of-frame markers (not DHT, JPG, DAC)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header, or None when ``data`` is not a JPEG
    this parser understands (PIL then reads it). Much cheaper than opening it with PIL."""
    frame = _jpeg_frame(data)
    return None if frame is None else frame[:2]


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """``(width, height, colour components)`` from a JPEG's frame header (components: 1 gray,
    3 YCbCr/RGB, 4 CMYK/YCCK), or None."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    try:
        while i + 4 <= n:
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:              # fill byte
                i += 1
                continue
            if marker in _SOF:
                height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
                return (width, height, data[i + 9]) if width and height else None
            if 0xD0 <= marker <= 0xD9 or marker == 0x01:    # no length
                i += 2
                continue
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    except IndexError:
        return None
    return None


def _bomb_check(width: int, height: int, name: str) -> None:
    """:func:`~inception.data.folder.open_image`'s size limit, for JPEGs read without PIL."""
    if width * height > DEFAULT_MAX_PIXELS:
        raise ImageTooLargeError(f"cannot read image '{name}' ({width}x{height} = {width * height:,} pixels, over "
                                 f"the limit of {DEFAULT_MAX_PIXELS:,}); resize it")


def _pil_tensor(im: Image.Image) -> Tensor:
    """An RGB PIL image as a ``3 x H x W`` uint8 tensor (an HWC array underneath, no copy)."""
    return torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)


def rrc_params(width: int, height: int, scale: Sequence[float],
               log_ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """``torchvision.transforms.RandomResizedCrop.get_params``, step for step, with the same
    torch RNG calls (so the same box for the same RNG state: a test checks it), minus its
    per-call tensor set-up. ``log_ratio`` is ``torch.log(torch.tensor(ratio)).tolist()``."""
    area = height * width
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    # Fallback: a center crop at the nearest allowed aspect ratio.
    in_ratio = float(width) / float(height)
    ratio = (math.exp(log_ratio[0]), math.exp(log_ratio[1]))
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomResizedCropDecode:
    """``RandomResizedCrop(size, scale, ratio)`` + ``RandomHorizontalFlip()`` fused with the
    decode: an :class:`EncodedImage` in, a ``3 x size x size`` uint8 tensor out.

    The box comes from :func:`rrc_params` (``RandomResizedCrop.get_params``' draws) and the flip
    from ``torch.rand(1) < 0.5``, in that order, as torchvision's preset draws them, so a
    seeded sample crops and flips as the torchvision pipeline would.
    """

    def __init__(self, size: int, *, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bilinear", hflip: bool = True,
                 defer: bool = False) -> None:
        self.size, self.scale, self.ratio, self.defer = size, tuple(scale), tuple(ratio), defer
        self.interpolation, self.hflip = interpolation, hflip
        self._log_ratio = tuple(torch.log(torch.tensor(self.ratio)).tolist())   # as torchvision computes it
        interpolation_mode(interpolation)    # a bad name fails here, not in a worker
        self.last_box: tuple | None = None

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(top, left, h, w)``, drawn from the torch RNG as torchvision draws it (:func:`rrc_params`)."""
        return rrc_params(width, height, self.scale, self._log_ratio)

    def __call__(self, image: EncodedImage) -> Tensor | Deferred:
        out, self.last_box = decode_box(image, self.box, self.size, self.interpolation, self.defer)
        if self.hflip and torch.rand(1).item() < 0.5:
            out = out._replace(flip=True) if isinstance(out, Deferred) else out.flip(-1)
        return out

    def __repr__(self) -> str:
        ratio = tuple(round(r, 4) for r in self.ratio)
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={ratio}, "
                f"interpolation={self.interpolation}, hflip={self.hflip})")


class CenterCropDecode:
    """The eval preset fused with the decode: resize the short side to ``resize_size``
    (default ``int(size / crop_pct)``), center-crop ``size``; mapped onto a box of the
    original image, so only that box is resized."""

    def __init__(self, size: int, *, crop_pct: float = 0.875, resize_size: int | None = None,
                 interpolation: str = "bilinear", defer: bool = False) -> None:
        self.size, self.interpolation, self.defer = size, interpolation, defer
        self.resize_size = resize_size or int(size / crop_pct)
        interpolation_mode(interpolation)

    def box(self, width: int, height: int) -> tuple[float, float, float, float]:
        # torchvision's Resize(int) then CenterCrop: the resized size, then the crop offsets in it.
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.resize_size * long / short)
        rw, rh = (self.resize_size, new_long) if width <= height else (new_long, self.resize_size)
        top, left = int(round((rh - self.size) / 2.0)), int(round((rw - self.size) / 2.0))
        sy, sx = height / rh, width / rw
        return top * sy, left * sx, self.size * sy, self.size * sx

    def __call__(self, image: EncodedImage) -> Tensor | Deferred:
        return decode_box(image, self.box, self.size, self.interpolation, self.defer)[0]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, resize_size={self.resize_size}, "
                f"interpolation={self.interpolation})")


# --------------------------------------------------------------------------------------
# Decoding on the device (data.gpu_decode)

class DeferredBatch:
    """A batch whose images are :class:`Deferred` JPEGs or ready ``3 x size x size`` uint8
    tensors (files the device does not decode: PNG, CMYK...). :meth:`decode` makes the
    uint8 batch on the device: one batched ``torchvision.io.decode_jpeg`` call (nvJPEG on
    CUDA), then per image the crop (a view), an antialiased resize and the flip there."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple:
        first = self.items[0]
        size = first.size if isinstance(first, Deferred) else first.shape[-1]
        return (len(self.items), 3, size, size)

    def decode(self, device: torch.device) -> tuple[Tensor, list[tuple[int, str, str]]]:
        """``(uint8 N' x 3 x size x size on device, [(index, name, message)] of the images
        that could not be decoded)``: N' = N minus those."""
        device = torch.device(device)
        deferred = [i for i, item in enumerate(self.items) if isinstance(item, Deferred)]
        decoded: dict[int, Tensor | str] = {}
        if deferred:
            datas = [self.items[i].data for i in deferred]
            try:
                pixels = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
                decoded.update(zip(deferred, pixels))
            except RuntimeError:           # one bad file fails the batch: one at a time, then on the CPU
                for i, data in zip(deferred, datas):
                    decoded[i] = _decode_one(data, device, self.items[i].name)
        out, failed = [], []
        for i, item in enumerate(self.items):
            if not isinstance(item, Deferred):
                out.append(item.to(device, non_blocking=True))
                continue
            pixels = decoded[i]
            if isinstance(pixels, str):
                failed.append((i, item.name, pixels))
                continue
            image = _resize_on_device(pixels, item.box, item.size, item.interpolation)
            # torchvision decodes on CUDA only: elsewhere (an NPU) the pixels came back on the CPU
            out.append((image.flip(-1) if item.flip else image).to(device, non_blocking=True))
        if not out:
            return torch.empty(0, *self.shape[1:], dtype=torch.uint8, device=device), failed
        return torch.stack(out), failed


def _decode_one(data: Tensor, device: torch.device, name: str) -> Tensor | str:
    for where in ([device, torch.device("cpu")] if device.type != "cpu" else [device]):
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=where).to(device)
        except RuntimeError as e:
            error = e
    return str(_fail(name, error))


def _resize_on_device(pixels: Tensor, box: tuple, size: int, interpolation: str) -> Tensor:
    """:func:`_resize_box` where uint8 antialiased kernels may be missing (CUDA): in float,
    rounded back to uint8."""
    if pixels.device.type == "cpu":
        return _resize_box(pixels, box, size, interpolation)
    crop = _crop(pixels, box)[None].float()
    mode = interpolation if interpolation in _UINT8_MODES else "bilinear"
    out = F.interpolate(crop, size=(size, size), mode=mode, antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255)[0].to(torch.uint8)


def collate_images(items: list) -> tuple:
    """``default_collate`` for ``(image, label)`` samples, except that a batch with any
    :class:`Deferred` image becomes a :class:`DeferredBatch`."""
    if any(isinstance(image, Deferred) for image, _ in items):
        return DeferredBatch([image for image, _ in items]), torch.tensor([label for _, label in items])
    return default_collate(items)
