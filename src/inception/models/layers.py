"""Building blocks shared by every model, and the common model interface."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def pad_same(x: Tensor, kernel_size: tuple[int, int], stride: tuple[int, int], value: float = 0.0) -> Tensor:
    """TensorFlow's (and MindSpore's) ``same`` padding: the output has ``ceil(size / stride)``
    pixels, and when the total padding is odd the extra pixel goes to the bottom/right
    (asymmetric at stride 2, unlike PyTorch's symmetric ``padding=``)."""
    pads = []
    for size, k, s in zip(x.shape[-2:], kernel_size, stride):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow-style ``same`` padding computed from the input size
    (timm's ``Conv2dSame``); its parameters are those of a plain ``nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(pad_same(x, self.kernel_size, self.stride))


class MaxPool2dSame(nn.MaxPool2d):
    """``nn.MaxPool2d`` with TensorFlow-style ``same`` padding (padded pixels never win)."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__(kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size, self.stride
        return F.max_pool2d(pad_same(x, (k, k), (s, s), value=float("-inf")), k, s)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3 unless told) -> ReLU.

    The attribute names ``conv`` and ``bn`` match torchvision's ``BasicConv2d`` and timm's
    ``ConvNormAct``, so their state dicts load without renaming. ``same=True`` pads as
    TensorFlow/MindSpore's ``same`` does (:class:`Conv2dSame`).
    """

    def __init__(self, in_channels: int, out_channels: int, *, same: bool = False, eps: float = 0.001,
                 **conv_kwargs) -> None:
        super().__init__()
        conv = Conv2dSame if same else nn.Conv2d
        self.conv = conv(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class BlurMaxPool2d(nn.Module):
    """Anti-aliased max pooling (Zhang 2019, "Making convolutional networks shift-invariant
    again"; timm's BlurPool): a dense max (stride 1), then a fixed [1, 2, 1] x [1, 2, 1] / 16
    binomial blur applied with stride 2. No parameters (the filter is a non-persistent
    buffer), so state dicts are those of the plain model, and the output has exactly the
    size of ``nn.MaxPool2d(kernel_size, 2, padding, ceil_mode=ceil_mode)``'s. The blur pads
    by replicating the edge (timm reflects; replicate also works on 1-pixel maps)."""

    def __init__(self, kernel_size: int, padding: int = 0, ceil_mode: bool = False) -> None:
        super().__init__()
        self.ceil_pad = 1 if ceil_mode else 0          # -inf on the right/bottom: floor mode then equals ceil mode
        self.max = nn.MaxPool2d(kernel_size, stride=1, padding=padding)
        taps = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (taps[:, None] * taps[None, :] / 16.0)[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.ceil_pad:
            x = F.pad(x, (0, self.ceil_pad, 0, self.ceil_pad), value=float("-inf"))
        x = F.pad(self.max(x), (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.filt.to(x.dtype).expand(x.shape[1], 1, 3, 3), stride=2, groups=x.shape[1])


def max_pool(kernel_size: int, *, ceil_mode: bool = False, aa: bool = False) -> nn.Module:
    """A stride-2 max pool, anti-aliased (:class:`BlurMaxPool2d`) with ``aa``."""
    if aa:
        return BlurMaxPool2d(kernel_size, ceil_mode=ceil_mode)
    return nn.MaxPool2d(kernel_size, stride=2, ceil_mode=ceil_mode)


class AuxOutputs(NamedTuple):
    """What a model with auxiliary heads returns in train mode.

    ``logits`` are the main classifier's; ``aux`` holds the auxiliary classifiers' logits
    ordered from the shallowest head to the deepest (GoogLeNet: after inception4a, then
    after inception4d; Inception v3: the single head after Mixed_6e). In eval mode, or
    with ``aux_logits=False``, models return the main logits tensor only.
    """

    logits: Tensor
    aux: tuple[Tensor, ...]


class InceptionBase(nn.Module):
    """The interface every model in the zoo implements.

    Subclasses build ``self.global_pool``, ``self.head_drop`` and the classifier named by
    ``classifier_name``, set ``num_features``, ``num_classes`` and ``_data_config`` (from their
    model card, :meth:`~.card.ModelCard.data_config_for`), and implement ``forward_features``.
    """

    classifier_name: str = "fc"
    #: Prefixes of every parameter whose shape depends on ``num_classes``.
    classifier_keys: tuple[str, ...] = ("fc",)
    #: Prefixes of auxiliary heads, which a weights file may or may not carry.
    aux_keys: tuple[str, ...] = ()

    num_classes: int
    num_features: int
    _data_config: DataConfig
    arch: str = ""

    @property
    def data_config(self) -> DataConfig:
        """The preprocessing of this architecture as built: its card's for its options, read
        only. What a checkpoint or weights file says (its mean/std) is the run's own data
        config (``LoadResult.data_config``, the checkpoint's ``data_config``), never set here."""
        return self._data_config

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(
                f"{self.arch or type(self).__name__} expects a 4-D batch (N, C, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2], x.shape[-1]
        m = self.data_config.min_input_size
        if h < m or w < m:
            raise ValueError(
                f"{self.arch or type(self).__name__} needs an input of at least {m}x{m}, "
                f"got {h}x{w}; resize the images (e.g. --image-size {m}) or pick another model"
            )

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        fc = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(fc.weight, std=0.01)
        nn.init.zeros_(fc.bias)
        return fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (and auxiliary classifiers) for ``num_classes`` classes.

        ``num_classes=0`` removes it: ``forward`` then returns pooled features.
        """
        device = next(self.parameters()).device
        self.num_classes = num_classes
        setattr(self, self.classifier_name, self._make_classifier(num_classes).to(device))
        self._reset_aux_classifiers(num_classes)

    def _reset_aux_classifiers(self, num_classes: int) -> None:
        """Models with auxiliary heads override this."""

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        x = torch.flatten(x, 1)
        x = self.head_drop(x)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


# What init_weights does, for `inception models NAME` (keep the two in step).
INIT_DESCRIPTION = ("He-normal convolutions (fan_out, ReLU gain), linear layers N(0, 0.01) with zero bias, "
                    "BatchNorm weight 1 and bias 0")


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions, small-normal linear layers, unit BatchNorm: a sound start
    for training from scratch (torchvision's truncated normal with std 0.01 trains slowly
    without its pretrained weights)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
