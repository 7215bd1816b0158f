"""Inception v4 (Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning", 2016).

Layer names follow timm's ``inception_v4`` (itself Cadene's port of the TensorFlow
weights), so their state dicts load as they are.

``variant`` reproduces the vendor zoos' versions exactly, so their checkpoints
(``inception convert``) give the same outputs here (checked against the frameworks
themselves in ``make test-interop``):

* ``"timm"`` (default): timm / Cadene / the Ascend PyTorch port; BatchNorm eps 1e-3.
* ``"mindspore"``: MindSpore model zoo's ``inceptionv4`` has timm's layers with BatchNorm
  eps 1e-5; its head (BatchNorm1d -> dense -> BatchNorm1d -> log-softmax) is folded into
  ``last_linear`` when its checkpoint is converted (exact in eval mode).
* ``"paddleclas"``: PaddleClas's ``InceptionV4`` (BatchNorm eps 1e-5) orders each block's
  concatenation pool branch first, and factorises three 7x7 / 3x3 paths the other way
  round: 7x1 then 1x7 in the stem's Mixed4a, 1x7 first in InceptionB's double branch, 1x3
  then 3x1 in InceptionC's. The layer names stay ours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import INCEPTION_MEAN, INCEPTION_STD, BasicConv2d, DataConfig, InceptionBase, init_weights

VARIANTS = ("timm", "mindspore", "paddleclas")


def _kernels(pairs: list[tuple[int, int]], flip: bool) -> list[dict]:
    """Conv keyword arguments of a factorised path: ``(1, k)``/``(k, 1)`` kernels with
    their padding, each kernel transposed when ``flip``."""
    out = []
    for kh, kw in pairs:
        if flip:
            kh, kw = kw, kh
        out.append({"kernel_size": (kh, kw), "padding": (kh // 2, kw // 2)})
    return out


def _concat(parts: list[Tensor], pool_first: bool) -> Tensor:
    """Concatenate branch outputs given pool branch last; PaddleClas puts it first."""
    return torch.cat(parts[-1:] + parts[:-1] if pool_first else parts, 1)


def _avgpool_1x1(in_channels: int, out_channels: int) -> nn.Sequential:
    """Pool branch: 3x3 average pool (padding not counted) -> 1x1 conv."""
    return nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                         BasicConv2d(in_channels, out_channels, kernel_size=1))


class Mixed3a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = BasicConv2d(64, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.maxpool(x), self.conv(x)], 1)


class Mixed4a(nn.Module):
    def __init__(self, paddle: bool = False) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(160, 64, kernel_size=1),
                                     BasicConv2d(64, 96, kernel_size=3))
        k17, k71 = _kernels([(1, 7), (7, 1)], flip=paddle)
        self.branch1 = nn.Sequential(
            BasicConv2d(160, 64, kernel_size=1),
            BasicConv2d(64, 64, **k17),
            BasicConv2d(64, 64, **k71),
            BasicConv2d(64, 96, kernel_size=3),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class Mixed5a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = BasicConv2d(192, 192, kernel_size=3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.maxpool(x)], 1)


class InceptionA(nn.Module):
    def __init__(self, paddle: bool = False) -> None:
        super().__init__()
        self.pool_first = paddle
        self.branch0 = BasicConv2d(384, 96, kernel_size=1)
        self.branch1 = nn.Sequential(BasicConv2d(384, 64, kernel_size=1),
                                     BasicConv2d(64, 96, kernel_size=3, padding=1))
        self.branch2 = nn.Sequential(BasicConv2d(384, 64, kernel_size=1),
                                     BasicConv2d(64, 96, kernel_size=3, padding=1),
                                     BasicConv2d(96, 96, kernel_size=3, padding=1))
        self.branch3 = _avgpool_1x1(384, 96)

    def forward(self, x: Tensor) -> Tensor:
        return _concat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], self.pool_first)


class ReductionA(nn.Module):
    def __init__(self, paddle: bool = False) -> None:
        super().__init__()
        self.pool_first = paddle
        self.branch0 = BasicConv2d(384, 384, kernel_size=3, stride=2)
        self.branch1 = nn.Sequential(BasicConv2d(384, 192, kernel_size=1),
                                     BasicConv2d(192, 224, kernel_size=3, padding=1),
                                     BasicConv2d(224, 256, kernel_size=3, stride=2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return _concat([self.branch0(x), self.branch1(x), self.branch2(x)], self.pool_first)


class InceptionB(nn.Module):
    def __init__(self, paddle: bool = False) -> None:
        super().__init__()
        self.pool_first = paddle
        self.branch0 = BasicConv2d(1024, 384, kernel_size=1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1024, 192, kernel_size=1),
            BasicConv2d(192, 224, kernel_size=(1, 7), padding=(0, 3)),
            BasicConv2d(224, 256, kernel_size=(7, 1), padding=(3, 0)),
        )
        k = _kernels([(7, 1), (1, 7), (7, 1), (1, 7)], flip=paddle)
        self.branch2 = nn.Sequential(
            BasicConv2d(1024, 192, kernel_size=1),
            BasicConv2d(192, 192, **k[0]),
            BasicConv2d(192, 224, **k[1]),
            BasicConv2d(224, 224, **k[2]),
            BasicConv2d(224, 256, **k[3]),
        )
        self.branch3 = _avgpool_1x1(1024, 128)

    def forward(self, x: Tensor) -> Tensor:
        return _concat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], self.pool_first)


class ReductionB(nn.Module):
    def __init__(self, paddle: bool = False) -> None:
        super().__init__()
        self.pool_first = paddle
        self.branch0 = nn.Sequential(BasicConv2d(1024, 192, kernel_size=1),
                                     BasicConv2d(192, 192, kernel_size=3, stride=2))
        self.branch1 = nn.Sequential(
            BasicConv2d(1024, 256, kernel_size=1),
            BasicConv2d(256, 256, kernel_size=(1, 7), padding=(0, 3)),
            BasicConv2d(256, 320, kernel_size=(7, 1), padding=(3, 0)),
            BasicConv2d(320, 320, kernel_size=3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return _concat([self.branch0(x), self.branch1(x), self.branch2(x)], self.pool_first)


class InceptionC(nn.Module):
    def __init__(self, paddle: bool = False) -> None:
        super().__init__()
        self.pool_first = paddle
        self.branch0 = BasicConv2d(1536, 256, kernel_size=1)
        self.branch1_0 = BasicConv2d(1536, 384, kernel_size=1)
        self.branch1_1a = BasicConv2d(384, 256, kernel_size=(1, 3), padding=(0, 1))
        self.branch1_1b = BasicConv2d(384, 256, kernel_size=(3, 1), padding=(1, 0))
        self.branch2_0 = BasicConv2d(1536, 384, kernel_size=1)
        k31, k13 = _kernels([(3, 1), (1, 3)], flip=paddle)
        self.branch2_1 = BasicConv2d(384, 448, **k31)
        self.branch2_2 = BasicConv2d(448, 512, **k13)
        self.branch2_3a = BasicConv2d(512, 256, kernel_size=(1, 3), padding=(0, 1))
        self.branch2_3b = BasicConv2d(512, 256, kernel_size=(3, 1), padding=(1, 0))
        self.branch3 = _avgpool_1x1(1536, 256)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.branch1_0(x)
        x1 = torch.cat([self.branch1_1a(x1), self.branch1_1b(x1)], 1)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        x2 = torch.cat([self.branch2_3a(x2), self.branch2_3b(x2)], 1)
        return _concat([self.branch0(x), x1, x2, self.branch3(x)], self.pool_first)


class InceptionV4(InceptionBase):
    classifier_name = "last_linear"
    classifier_keys = ("last_linear.",)

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, in_chans: int = 3,
                 variant: str = "timm") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"inception_v4 variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        paddle = variant == "paddleclas"
        self.arch = "inception_v4"
        self.num_classes = num_classes
        self.num_features = 1536
        self.data_config = DataConfig(input_size=(in_chans, 299, 299), min_input_size=75,
                                      mean=INCEPTION_MEAN, std=INCEPTION_STD,
                                      interpolation="bicubic", crop_pct=0.875)
        self.features = nn.Sequential(
            BasicConv2d(in_chans, 32, kernel_size=3, stride=2),
            BasicConv2d(32, 32, kernel_size=3),
            BasicConv2d(32, 64, kernel_size=3, padding=1),
            Mixed3a(), Mixed4a(paddle), Mixed5a(),
            *[InceptionA(paddle) for _ in range(4)],
            ReductionA(paddle),
            *[InceptionB(paddle) for _ in range(7)],
            ReductionB(paddle),
            *[InceptionC(paddle) for _ in range(3)],
        )
        if variant != "timm":                       # the vendors keep BatchNorm's default eps
            for m in self.features.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eps = 1e-5
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(p=dropout)
        self.last_linear = self._make_classifier(num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)
