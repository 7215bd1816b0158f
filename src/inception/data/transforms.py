"""Train and eval transform presets (torchvision.transforms.v2).

Each preset takes a PIL image or a uint8 CxHxW tensor and returns a float32 CxHxW tensor
normalized with ``mean``/``std``. Geometry and colour ops run on uint8 (cheaper); the
conversion to float comes last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

from ..errors import UserError

PRESETS = ("imagenet", "cifar", "none")
POLICIES = ("none", "randaugment", "trivialaugment", "autoaugment")


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


def augment_policy(name: str, *, magnitude: int = 9, ops: int = 2) -> v2.Transform | None:
    """The per-sample policy ``data.auto_augment`` names, for uint8 images (None for ``none``):
    RandAugment(``ops``, ``magnitude``), TrivialAugmentWide, AutoAugment (ImageNet policy).
    Their geometric ops interpolate bilinearly (tensor images allow only that or nearest)."""
    bilinear = InterpolationMode.BILINEAR
    if name == "none":
        return None
    if name == "randaugment":
        return v2.RandAugment(num_ops=ops, magnitude=magnitude, interpolation=bilinear)
    if name == "trivialaugment":
        return v2.TrivialAugmentWide(interpolation=bilinear)
    if name == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=bilinear)
    raise UserError(f"unknown data.auto_augment '{name}'; choose one of: {', '.join(POLICIES)}")


def train_transform(*, preset: str, size: int, mean: Sequence[float], std: Sequence[float],
                    interpolation: str = "bilinear", hflip: bool = True, color_jitter: float = 0.0,
                    crop_scale: Sequence[float] = (0.08, 1.0), crop_padding: int = 4,
                    policy: v2.Transform | None = None) -> v2.Compose:
    """Training augmentation.

    - ``imagenet``: RandomResizedCrop(size, scale=crop_scale), flip, jitter.
    - ``cifar``: resize the short side to ``size`` (a no-op for images already that size),
      RandomCrop(size, padding=crop_padding), flip, jitter.
    - ``none``: resize the short side to ``size`` and center-crop a square (no flip or jitter).

    A ``policy`` (:func:`augment_policy`) runs after the crop and flip, on the uint8 image.
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
    if preset != "none" and hflip:
        ops.append(v2.RandomHorizontalFlip())
    if policy is not None:
        ops.append(policy)
    if preset != "none" and color_jitter > 0:
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


class SizedTransform:
    """Progressive resizing for per-sample transforms: ``make(size=s)`` (a train transform or
    decoder at size ``s``) built once per size, applied at the selected ``size``.
    :class:`~inception.data.sampling.SeededSamples` selects the size each sample's key
    carries (the epoch's size), so DataLoader workers need no rebuild when it changes."""

    def __init__(self, make: Callable, size: int) -> None:
        self.make, self.size = make, size
        self._made: dict[int, Callable] = {}

    def __call__(self, image):
        transform = self._made.get(self.size)
        if transform is None:
            transform = self._made[self.size] = self.make(size=self.size)
        return transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.make(size=self.size)!r})"
