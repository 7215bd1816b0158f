"""Inception v3 (Szegedy et al., "Rethinking the Inception Architecture", 2015).

Layer names follow torchvision's ``inception_v3`` (and timm's, which uses the same), so
state dicts from either load as they are. ``aa_pool=True`` anti-aliases every stride-2
max pool (:class:`~.layers.BlurMaxPool2d`; no parameters, the same feature-map sizes).

The auxiliary head averages 5x5 windows of the 17x17 Mixed_6e map and ends in a 5x5
convolution, so it needs the full 299x299 input; the rest of the network runs from 75x75.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .card import ModelCard, WeightLayout
from .layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INIT_DESCRIPTION,
    AuxOutputs,
    BasicConv2d,
    DataConfig,
    InceptionBase,
    init_weights,
    max_pool,
)

DATA = DataConfig(input_size=(3, 299, 299), min_input_size=75, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  interpolation="bilinear", crop_pct=0.875)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a)."""

    def __init__(self, in_channels: int, aa_pool: bool = False) -> None:
        super().__init__()
        self.pool = max_pool(3, aa=aa_pool)
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.pool(x)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """Factorised 7x7 block at 17x17 (Mixed_6b..e)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, in_channels: int, aa_pool: bool = False) -> None:
        super().__init__()
        self.pool = max_pool(3, aa=aa_pool)
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))
        bp = self.pool(x)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """Expanded filter bank at 8x8 (Mixed_7b, Mixed_7c)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, bd, bp], 1)


class InceptionAux(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, kernel_size=5, stride=3)
        x = self.conv1(self.conv0(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class InceptionV3(InceptionBase):
    classifier_name = "fc"
    classifier_keys = ("fc.", "AuxLogits.fc.")
    aux_keys = ("AuxLogits.",)
    #: Smallest input for which the auxiliary head (train mode) can run.
    aux_min_input_size = 299

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.5,
                 in_chans: int = 3, aa_pool: bool = False) -> None:
        super().__init__()
        self.arch = "inception_v3"
        self.num_classes = num_classes
        self.num_features = 2048
        self.aux_logits = aux_logits
        self._data_config = CARDS[0].data_config_for({"in_chans": in_chans})
        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = max_pool(3, aa=aa_pool)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = max_pool(3, aa=aa_pool)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288, aa_pool)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768, aa_pool)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(p=dropout)
        self.fc = self._make_classifier(num_classes)
        init_weights(self)

    def _reset_aux_classifiers(self, num_classes: int) -> None:
        if self.AuxLogits is not None:
            device = self.AuxLogits.conv0.conv.weight.device
            self.AuxLogits.fc = (nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()).to(device)

    def _features(self, x: Tensor, with_aux: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.maxpool1(x)
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        aux = (self.AuxLogits(x),) if with_aux else ()
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return x, aux

    def forward_features(self, x: Tensor) -> Tensor:
        return self._features(x, with_aux=False)[0]

    def forward(self, x: Tensor) -> Tensor | AuxOutputs:
        """Eval mode (or no aux head): logits. Train mode with the aux head:
        ``AuxOutputs(logits, aux=(aux_logits,))``."""
        self.check_input(x)
        with_aux = self.training and self.aux_logits
        if with_aux and min(x.shape[-2:]) < self.aux_min_input_size:
            raise ValueError(
                f"inception_v3 with aux_logits=True needs {self.aux_min_input_size}x"
                f"{self.aux_min_input_size} input in train mode, got {x.shape[-2]}x{x.shape[-1]}; "
                "use the full size or aux_logits=False"
            )
        x, aux = self._features(x, with_aux)
        logits = self.forward_head(x)
        return AuxOutputs(logits, aux) if with_aux else logits


CARDS = (
    ModelCard(
        name="inception_v3", builder=InceptionV3, description="Inception v3",
        origin="Inception v3 as torchvision builds it; loads torchvision's and timm's weights",
        data_config=DATA, params=23_834_568, macs=5_713_216_096, num_features=2048,
        init=INIT_DESCRIPTION + "; torchvision's inception_v3 uses a truncated normal with std 0.1 (0.01 for the "
                                "aux head's 5x5 convolution, 0.001 for its classifier)",
        layouts=(WeightLayout("torchvision/timm", "Mixed_5b.branch1x1.conv.weight"),),   # the same names
        peers={"torchvision": "inception_v3", "timm": "inception_v3"},
    ),
)
