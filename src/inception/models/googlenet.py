"""GoogLeNet (Inception v1) with BatchNorm after every convolution.

Layer names follow torchvision's ``googlenet`` so its state dicts load as they are.
As in torchvision and MindSpore, the "5x5" branch of each Inception block uses a 3x3
convolution (a known deviation from the paper, kept for weight compatibility).

``stem="cifar"`` replaces the 224-pixel stem (7x7/2 conv, two 3x3/2 max-pools) with
3x3 stride-1 convolutions and no early downsampling, for 32x32 inputs: the inception
stages then run at 32, 16 and 8 pixels.

``aa_pool=True`` anti-aliases every stride-2 max pool (:class:`~.layers.BlurMaxPool2d`:
dense max, then a binomial blur with stride 2); it adds no parameters, so weights load
either way, and the feature maps keep their sizes.

``maxpool4=False`` drops the stride-2 max pool before block 5, so blocks 5a and 5b run at
twice the resolution (4x their MACs: about +23% for the whole network): at 128 px the last
feature map is 8x8 instead of 4x4, at 224 px 14x14 instead of 7x7. Like ``aa_pool`` it has no
parameters, so weights load either way.

``variant="mindspore"`` is MindSpore model zoo's GoogLeNet (``research/cv/googlenet``): the
same layers and names up to the checkpoint's renaming (conv-BN(eps 1e-3)-ReLU, 3x3 in the
"5x5" branch, a 2x2 max pool before block 5, no auxiliary heads), but the 7x7/2 stem conv
and every stride-2 max pool pad as TensorFlow's ``same`` does (``pad_mode="same"``: the
odd pixel of padding goes to the bottom/right), so a MindSpore checkpoint gives the same
outputs here (``inception convert``; checked against MindSpore itself in ``make test-interop``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .card import ModelCard, Renames, VendorName, WeightLayout
from .layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INIT_DESCRIPTION,
    AuxOutputs,
    BasicConv2d,
    DataConfig,
    InceptionBase,
    MaxPool2dSame,
    init_weights,
    max_pool,
)

VARIANTS = ("torchvision", "mindspore")
#: The preprocessing of the 224-pixel stem, and of the 32x32 CIFAR stem.
DATA = DataConfig(input_size=(3, 224, 224), min_input_size=15, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  interpolation="bilinear", crop_pct=0.875)
DATA_CIFAR = DataConfig(input_size=(3, 32, 32), min_input_size=2, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        interpolation="bilinear", crop_pct=1.0)


class Inception(nn.Module):
    """Four parallel branches: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 (the paper's 5x5); pool -> 1x1."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int,
                 ch5x5red: int, ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool -> 1x1 conv (128) -> fc 1024 -> dropout -> fc."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))
        x = torch.flatten(self.conv(x), 1)
        x = self.dropout(F.relu(self.fc1(x), inplace=True))
        return self.fc2(x)


class GoogLeNet(InceptionBase):
    classifier_name = "fc"
    classifier_keys = ("fc.", "aux1.fc2.", "aux2.fc2.")
    aux_keys = ("aux1.", "aux2.")

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, stem: str = "imagenet",
                 dropout: float = 0.2, dropout_aux: float = 0.7, in_chans: int = 3, aa_pool: bool = False,
                 variant: str = "torchvision", maxpool4: bool = True) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"googlenet stem must be 'imagenet' or 'cifar', got {stem!r}")
        if variant not in VARIANTS:
            raise ValueError(f"googlenet variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        same = variant == "mindspore"
        if same and (stem != "imagenet" or aa_pool):
            raise ValueError("googlenet variant 'mindspore' has the 224-pixel stem and plain max pools: "
                             "drop stem='cifar' / aa_pool")
        self.variant = variant

        def pool(kernel_size: int) -> nn.Module:
            return MaxPool2dSame(kernel_size, 2) if same else max_pool(kernel_size, ceil_mode=True, aa=aa_pool)

        self.arch = "googlenet"
        self.num_classes = num_classes
        self.num_features = 1024
        self.aux_logits = aux_logits
        self.stem = stem
        if stem == "imagenet":
            self.conv1 = (BasicConv2d(in_chans, 64, kernel_size=7, stride=2, same=True) if same
                          else BasicConv2d(in_chans, 64, kernel_size=7, stride=2, padding=3))
            self.maxpool1 = pool(3)
            self.conv2 = BasicConv2d(64, 64, kernel_size=1)
            self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
            self.maxpool2 = pool(3)
        else:
            self.conv1 = BasicConv2d(in_chans, 64, kernel_size=3, stride=1, padding=1)
            self.maxpool1 = nn.Identity()
            self.conv2 = BasicConv2d(64, 64, kernel_size=1)
            self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
            self.maxpool2 = nn.Identity()
        self._data_config = CARDS[0].data_config_for({"stem": stem, "in_chans": in_chans})

        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = pool(3)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = pool(2) if maxpool4 else nn.Identity()
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)

        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout=dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout=dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None

        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(p=dropout)
        self.fc = self._make_classifier(num_classes)
        init_weights(self)

    def _reset_aux_classifiers(self, num_classes: int) -> None:
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                device = aux.fc1.weight.device
                aux.fc2 = (nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()).to(device)

    def _features(self, x: Tensor, with_aux: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return x, ((aux1, aux2) if with_aux else ())

    def forward_features(self, x: Tensor) -> Tensor:
        return self._features(x, with_aux=False)[0]

    def forward(self, x: Tensor) -> Tensor | AuxOutputs:
        """Eval mode (or no aux heads): logits. Train mode with aux heads:
        ``AuxOutputs(logits, aux=(aux1, aux2))``, aux1 being the shallower head."""
        self.check_input(x)
        with_aux = self.training and self.aux_logits
        x, aux = self._features(x, with_aux)
        logits = self.forward_head(x)
        return AuxOutputs(logits, aux) if with_aux else logits


BLOCK_NAMES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


def _mindspore_renames() -> Renames:
    """MindSpore model zoo's GoogLeNet (``research/cv/googlenet``) -> ours."""
    m = Renames()
    for name in ("conv1", "conv2", "conv3"):
        m.ms_convbn(name, name)
    for b in BLOCK_NAMES:
        src, dst = f"block{b}", f"inception{b}"
        m.ms_convbn(f"{src}.b1", f"{dst}.branch1")
        for i in (0, 1):
            m.ms_convbn(f"{src}.b2.{i}", f"{dst}.branch2.{i}")
            m.ms_convbn(f"{src}.b3.{i}", f"{dst}.branch3.{i}")
        m.ms_convbn(f"{src}.b4", f"{dst}.branch4.1")
    m.param("classifier.weight", "fc.weight")
    m.param("classifier.bias", "fc.bias")
    return m


_INIT = (INIT_DESCRIPTION + "; torchvision's googlenet draws convolutions and linear layers from a truncated "
         "normal with std 0.01 (cut at +-2, in effect a plain normal), which trains slowly from scratch")

CARDS = (
    ModelCard(
        name="googlenet", builder=GoogLeNet, description="GoogLeNet / Inception v1 with BatchNorm (224 stem)",
        origin="GoogLeNet of MindSpore and the Ascend PyTorch port; loads torchvision's and MindSpore's weights",
        data_config=DATA, params=6_624_904, macs=1_498_376_192, num_features=1024, init=_INIT,
        layouts=(WeightLayout("torchvision", "inception3a.branch1.conv.weight"),
                 WeightLayout("mindspore", "block3a.b1.conv.weight", options={"variant": "mindspore"},
                              renames=_mindspore_renames)),
        vendor_names=(VendorName("mindspore", "googlenet", {"variant": "mindspore"}),),
        peers={"torchvision": "googlenet"}, data_config_options={"stem": {"cifar": DATA_CIFAR}},
    ),
    ModelCard(
        name="googlenet_cifar", builder=GoogLeNet, description="GoogLeNet with the 32x32 CIFAR stem",
        origin="the same GoogLeNet with a 32x32 stem, for CIFAR-10 (our recipes)",
        data_config=DATA_CIFAR, params=6_617_224, macs=1_452_056_576, num_features=1024, init=_INIT,
        defaults={"stem": "cifar"}, data_config_options={"stem": {"imagenet": DATA}},
    ),
)
