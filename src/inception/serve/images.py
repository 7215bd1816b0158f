"""Uploaded bytes -> the model's input, exactly as ``inception infer`` reads a file.

:class:`ImageDecoder` checks the image's size from its header (a decompression bomb is
refused before any pixel is decoded), then decodes with the same
:func:`~inception.data.folder.load_image` (a large JPEG at 1/2, 1/4 or 1/8 scale, never below
the short side the transform resizes to) and preprocesses with the same
:func:`~inception.infer.preprocess_transform` of the model's metadata that ``infer`` uses,
so a file gives the same tensor through the server as through ``infer``.
"""

from __future__ import annotations

import io
import re
import time

import numpy as np

from ..data.folder import (
    DEFAULT_MAX_PIXELS,
    FORMAT_NAMES,
    ImageReadError,
    ImageTooLargeError,
    UnsupportedImageError,
    load_image,
)
from ..infer import decode_side, preprocess_transform
from .errors import ServeError


def _detail(e: ImageReadError) -> str:
    """The reason inside ``cannot read image 'NAME' (REASON); FIX``."""
    text = str(e)
    return text.split(" (", 1)[-1].rsplit(");", 1)[0] if "cannot read image" in text else text


def _reason(e: BaseException | str) -> str:
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e)).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


class ImageDecoder:
    """``decoder(data, name)`` -> ``(float32 CHW array, seconds)``; raises
    :class:`ServeError` (``empty_body``, ``unsupported_image_format``, ``not_an_image``,
    ``truncated_image``, ``decompression_bomb``) for bytes it cannot turn into a model input.
    Only :data:`~inception.data.folder.IMAGE_FORMATS` are opened, and an image over
    ``max_pixels`` is refused from its header, before any pixel is decoded."""

    def __init__(self, metadata: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.transform = preprocess_transform(metadata)
        self.min_side = decode_side(metadata)     # large JPEGs decode at reduced size, as in infer
        self.max_pixels = int(max_pixels)

    def __call__(self, data: bytes, name: str = "body") -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        if not data:
            raise ServeError("empty_body", f"'{name}' is empty; send the bytes of a JPEG, PNG, WebP, BMP, GIF or "
                                           "TIFF image")
        try:
            image = load_image(io.BytesIO(data), name=name, max_pixels=self.max_pixels, min_side=self.min_side)
        except UnsupportedImageError:
            raise ServeError("unsupported_image_format", f"'{name}' is not a {FORMAT_NAMES} image; send one of "
                                                         "those") from None
        except ImageTooLargeError as e:
            raise ServeError("decompression_bomb", f"'{name}' is refused: {_reason(_detail(e))}; send a smaller "
                                                   "image") from None
        except ImageReadError as e:
            text = _detail(e)
            truncated = "truncat" in text.lower() or "broken data stream" in text
            raise ServeError("truncated_image" if truncated else "not_an_image",
                             f"'{name}' cannot be decoded ({text})" + ("; send the whole file" if truncated else
                                                                       "; send a valid image")) from None
        try:
            x = self.transform(image)
        except Exception as e:   # decodable, but the transform cannot handle it
            raise ServeError("not_an_image", f"cannot preprocess '{name}' ({_reason(e)})") from None
        return x.numpy(), time.perf_counter() - start
