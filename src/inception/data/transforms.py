"""Train and eval transform presets (torchvision.transforms.v2).

Each preset takes a PIL image or a uint8 CxHxW tensor and returns a float32 CxHxW tensor
normalized with ``mean``/``std``. Geometry and colour ops run on uint8 (cheaper); the
conversion to float comes last.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

from ..errors import UserError

PRESETS = ("imagenet", "cifar", "none")


def interpolation_mode(name: str) -> InterpolationMode:
    """``'bilinear'`` -> ``InterpolationMode.BILINEAR`` (names as in a model's data_config)."""
    try:
        return InterpolationMode(name)
    except ValueError:
        valid = ", ".join(m.value for m in InterpolationMode)
        raise UserError(f"unknown interpolation '{name}'; choose one of: {valid}") from None


def _finish(mean: Sequence[float], std: Sequence[float]) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std)),
            v2.ToPureTensor()]


def train_transform(*, preset: str, size: int, mean: Sequence[float], std: Sequence[float],
                    interpolation: str = "bilinear", hflip: bool = True, color_jitter: float = 0.0,
                    crop_scale: Sequence[float] = (0.08, 1.0), crop_padding: int = 4) -> v2.Compose:
    """Training augmentation.

    - ``imagenet``: RandomResizedCrop(size, scale=crop_scale), flip, jitter.
    - ``cifar``: resize the short side to ``size`` (a no-op for images already that size),
      RandomCrop(size, padding=crop_padding), flip, jitter.
    - ``none``: resize the short side to ``size`` and center-crop a square (no flip or jitter).
    """
    interp = interpolation_mode(interpolation)
    ops: list = [v2.ToImage()]
    if preset == "imagenet":
        ops.append(v2.RandomResizedCrop(size, scale=tuple(crop_scale), interpolation=interp, antialias=True))
    elif preset == "cifar":
        ops += [v2.Resize(size, interpolation=interp, antialias=True), v2.RandomCrop(size, padding=crop_padding)]
    elif preset == "none":
        ops += [v2.Resize(size, interpolation=interp, antialias=True), v2.CenterCrop(size)]
    else:
        raise UserError(f"unknown augmentation preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    if preset != "none":
        if hflip:
            ops.append(v2.RandomHorizontalFlip())
        if color_jitter > 0:
            ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose(ops + _finish(mean, std))


def eval_transform(*, size: int, mean: Sequence[float], std: Sequence[float],
                   interpolation: str = "bilinear", crop_pct: float = 0.875) -> v2.Compose:
    """Resize the short side to ``int(size / crop_pct)``, then CenterCrop(size).

    With ``crop_pct=1.0`` and square images this is a plain resize (a no-op for 32x32
    CIFAR images at size 32).
    """
    interp = interpolation_mode(interpolation)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(int(size / crop_pct), interpolation=interp, antialias=True),
        v2.CenterCrop(size),
        *_finish(mean, std),
    ])
