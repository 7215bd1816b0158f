"""Uploaded bytes -> the model's input, exactly as ``inception infer`` reads a file.

:class:`ImageDecoder` checks the image's size from its header (a decompression bomb is
refused before any pixel is decoded), then decodes with the same
:func:`~inception.data.folder.load_image` and preprocesses with the same
:func:`~inception.infer.preprocess_transform` of the model's metadata that ``infer`` uses,
so a file gives the same tensor through the server as through ``infer``.
"""

from __future__ import annotations

import io
import re
import time
import warnings

import numpy as np
from PIL import Image

from ..data.folder import ImageReadError, load_image
from ..infer import preprocess_transform
from .errors import ServeError

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485   # PIL's own warning threshold


def _reason(e: BaseException) -> str:
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e)).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


class ImageDecoder:
    """``decoder(data, name)`` -> ``(float32 CHW array, seconds)``; raises
    :class:`ServeError` (``empty_body``, ``not_an_image``, ``truncated_image``,
    ``decompression_bomb``) for bytes it cannot turn into a model input."""

    def __init__(self, metadata: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.transform = preprocess_transform(metadata)
        self.max_pixels = int(max_pixels)

    def __call__(self, data: bytes, name: str = "body") -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        if not data:
            raise ServeError("empty_body", f"'{name}' is empty; send the bytes of a JPEG, PNG, WebP, BMP, GIF or "
                                           "TIFF image")
        try:
            with warnings.catch_warnings():             # PIL's bomb warning: the limit is checked here
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:   # reads the header only
                    width, height = im.size
        except Image.DecompressionBombError as e:
            raise ServeError("decompression_bomb", f"'{name}' is refused: {_reason(e)}") from None
        except Exception as e:   # UnidentifiedImageError, a broken header, ...
            if "truncat" in str(e).lower():
                raise ServeError("truncated_image", f"'{name}' is cut short ({_reason(e)}); send the whole file") \
                    from None
            raise ServeError("not_an_image", f"'{name}' is not an image this server can read ({_reason(e)}); send "
                                             "a JPEG, PNG, WebP, BMP, GIF or TIFF file") from None
        if width * height > self.max_pixels:
            raise ServeError("decompression_bomb", f"'{name}' is {width}x{height} = {width * height:,} pixels, over "
                                                   f"the server's limit of {self.max_pixels:,}; send a smaller image")
        try:
            image = load_image(io.BytesIO(data), name=name)
        except ImageReadError as e:
            text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e).split("; replace or delete")[0])
            truncated = "truncat" in text.lower() or "broken data stream" in text
            raise ServeError("truncated_image" if truncated else "not_an_image",
                             text + ("; send the whole file" if truncated else "")) from None
        try:
            x = self.transform(image)
        except Exception as e:   # decodable, but the transform cannot handle it
            raise ServeError("not_an_image", f"cannot preprocess '{name}' ({_reason(e)})") from None
        return x.numpy(), time.perf_counter() - start
