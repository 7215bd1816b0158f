"""Inception-ResNet-v2 (Szegedy et al., 2016).

Layer names follow timm's ``inception_resnet_v2`` so its state dicts load as they are.
Each residual block scales its branch sum before adding it back (0.17, 0.10, 0.20), as in
the paper, to keep training of the very deep stack stable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .card import ModelCard, WeightLayout
from .layers import (
    INCEPTION_MEAN,
    INCEPTION_STD,
    INIT_DESCRIPTION,
    BasicConv2d,
    DataConfig,
    InceptionBase,
    init_weights,
)

DATA = DataConfig(input_size=(3, 299, 299), min_input_size=75, mean=INCEPTION_MEAN, std=INCEPTION_STD,
                  interpolation="bicubic", crop_pct=0.8975)


class Mixed_5b(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(192, 96, kernel_size=1)
        self.branch1 = nn.Sequential(BasicConv2d(192, 48, kernel_size=1),
                                     BasicConv2d(48, 64, kernel_size=5, padding=2))
        self.branch2 = nn.Sequential(BasicConv2d(192, 64, kernel_size=1),
                                     BasicConv2d(64, 96, kernel_size=3, padding=1),
                                     BasicConv2d(96, 96, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                                     BasicConv2d(192, 64, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class _Residual(nn.Module):
    """out = act(x + scale * conv2d(cat(branches)))."""

    scale: float

    def _residual(self, x: Tensor, branches: list[Tensor]) -> Tensor:
        out = self.conv2d(torch.cat(branches, 1)) * self.scale + x
        return self.act(out)


class Block35(_Residual):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(320, 32, kernel_size=1)
        self.branch1 = nn.Sequential(BasicConv2d(320, 32, kernel_size=1),
                                     BasicConv2d(32, 32, kernel_size=3, padding=1))
        self.branch2 = nn.Sequential(BasicConv2d(320, 32, kernel_size=1),
                                     BasicConv2d(32, 48, kernel_size=3, padding=1),
                                     BasicConv2d(48, 64, kernel_size=3, padding=1))
        self.conv2d = nn.Conv2d(128, 320, kernel_size=1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self._residual(x, [self.branch0(x), self.branch1(x), self.branch2(x)])


class Mixed_6a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(320, 384, kernel_size=3, stride=2)
        self.branch1 = nn.Sequential(BasicConv2d(320, 256, kernel_size=1),
                                     BasicConv2d(256, 256, kernel_size=3, padding=1),
                                     BasicConv2d(256, 384, kernel_size=3, stride=2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Block17(_Residual):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(1088, 192, kernel_size=1)
        self.branch1 = nn.Sequential(BasicConv2d(1088, 128, kernel_size=1),
                                     BasicConv2d(128, 160, kernel_size=(1, 7), padding=(0, 3)),
                                     BasicConv2d(160, 192, kernel_size=(7, 1), padding=(3, 0)))
        self.conv2d = nn.Conv2d(384, 1088, kernel_size=1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self._residual(x, [self.branch0(x), self.branch1(x)])


class Mixed_7a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(1088, 256, kernel_size=1),
                                     BasicConv2d(256, 384, kernel_size=3, stride=2))
        self.branch1 = nn.Sequential(BasicConv2d(1088, 256, kernel_size=1),
                                     BasicConv2d(256, 288, kernel_size=3, stride=2))
        self.branch2 = nn.Sequential(BasicConv2d(1088, 256, kernel_size=1),
                                     BasicConv2d(256, 288, kernel_size=3, padding=1),
                                     BasicConv2d(288, 320, kernel_size=3, stride=2))
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Block8(_Residual):
    def __init__(self, scale: float = 1.0, no_relu: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(2080, 192, kernel_size=1)
        self.branch1 = nn.Sequential(BasicConv2d(2080, 192, kernel_size=1),
                                     BasicConv2d(192, 224, kernel_size=(1, 3), padding=(0, 1)),
                                     BasicConv2d(224, 256, kernel_size=(3, 1), padding=(1, 0)))
        self.conv2d = nn.Conv2d(448, 2080, kernel_size=1)
        self.act = nn.Identity() if no_relu else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self._residual(x, [self.branch0(x), self.branch1(x)])


class InceptionResNetV2(InceptionBase):
    classifier_name = "classif"
    classifier_keys = ("classif.",)

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, in_chans: int = 3) -> None:
        super().__init__()
        self.arch = "inception_resnet_v2"
        self.num_classes = num_classes
        self.num_features = 1536
        self._data_config = CARDS[0].data_config_for({"in_chans": in_chans})
        self.conv2d_1a = BasicConv2d(in_chans, 32, kernel_size=3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, kernel_size=3)
        self.conv2d_2b = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, kernel_size=1)
        self.conv2d_4a = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Mixed_5b()
        self.repeat = nn.Sequential(*[Block35(scale=0.17) for _ in range(10)])
        self.mixed_6a = Mixed_6a()
        self.repeat_1 = nn.Sequential(*[Block17(scale=0.10) for _ in range(20)])
        self.mixed_7a = Mixed_7a()
        self.repeat_2 = nn.Sequential(*[Block8(scale=0.20) for _ in range(9)])
        self.block8 = Block8(no_relu=True)
        self.conv2d_7b = BasicConv2d(2080, self.num_features, kernel_size=1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(p=dropout)
        self.classif = self._make_classifier(num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        x = self.maxpool_3a(x)
        x = self.maxpool_5a(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.repeat(self.mixed_5b(x))
        x = self.repeat_1(self.mixed_6a(x))
        x = self.repeat_2(self.mixed_7a(x))
        return self.conv2d_7b(self.block8(x))


CARDS = (
    ModelCard(
        name="inception_resnet_v2", builder=InceptionResNetV2, description="Inception-ResNet-v2",
        origin="Inception-ResNet-v2 as timm builds it (not in the vendor zoos); loads timm's weights",
        data_config=DATA, params=55_843_464, macs=13_155_794_016, num_features=1536,
        init=INIT_DESCRIPTION + "; timm's inception_resnet_v2 keeps PyTorch's default (Kaiming-uniform) "
                                "initialisation",
        # timm's names; Cadene's pretrainedmodels calls the classifier last_linear
        layouts=(WeightLayout("timm", "mixed_5b.branch0.conv.weight", aliases=(("last_linear.", "classif."),)),),
        peers={"timm": "inception_resnet_v2"},
    ),
)
