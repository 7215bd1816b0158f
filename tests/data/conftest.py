"""Fixtures and small file writers for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inception.models.layers import DataConfig

# Identity normalization at 32x32 with no eval crop: decoded pixels can be compared exactly.
IDENTITY = DataConfig(input_size=(3, 32, 32), min_input_size=2, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                      interpolation="bilinear", crop_pct=1.0)


@pytest.fixture
def identity_dc() -> DataConfig:
    return IDENTITY


def to_uint8(x):
    """Invert the identity normalization: float [0, 1] -> uint8."""
    return (x * 255).round().clamp(0, 255).byte()


def write_image(path: Path, mode: str = "RGB", size=(20, 16), fmt: str | None = None, seed: int = 0) -> Path:
    """A small random image in ``mode`` (RGB, L, RGBA, P, CMYK)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        img.save(path, format=fmt, transparency=0)
        return path
    img = rgb.convert(mode)
    img.save(path, format=fmt)
    return path


@pytest.fixture
def folder(tmp_path):
    """A small folder dataset: train/{a,b} with 8 JPEGs each, val/{a,b} with 3 (40x30)."""
    for split, n in (("train", 8), ("val", 3)):
        for c, cls in enumerate("ab"):
            for i in range(n):
                write_image(tmp_path / split / cls / f"{i}.jpg", size=(40, 30), seed=100 * c + i)
    return tmp_path
