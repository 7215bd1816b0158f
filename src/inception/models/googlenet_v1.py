"""GoogLeNet as PaddleClas builds it (``ppcls/arch/backbone/model_zoo/googlenet.py``): the
original Inception v1 without BatchNorm, the model of PaddleClas's GoogLeNet recipe.

What sets it apart from our BatchNorm ``googlenet``, reproduced exactly so a PaddleClas
``.pdparams`` gives the same outputs here (``inception convert``; checked against Paddle
itself in ``make test-interop``):

* convolutions have neither bias nor BatchNorm, and (PaddleClas's ``ConvLayer`` ignores its
  ``act`` argument) no activation of their own: the only ReLU of an Inception block comes
  after its concatenation; the stem's three convolutions have none;
* real 5x5 convolutions in the third branch; every stride-2 max pool is 3x3 without
  padding, rounding down (also the one before block 5, where torchvision has 2x2);
* two auxiliary heads, after inception4a and inception4d: 5x5/3 average pool, 1x1 conv to
  128 channels, fc to 1024, dropout 0.7, fc to the classes. The first head has a ReLU after
  its 1024-wide fc, the second has none (as in PaddleClas). They are returned beside the
  main logits in train mode, and trained with PaddleClas's weights (``model.aux_weight``
  0.3);
* dropout 0.4 before the classifier. PaddleClas's dropout scales at inference
  (``downscale_in_infer``) where PyTorch's scales in training; the converter folds the
  factor into the classifiers, so the outputs match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .card import ModelCard, Renames, VendorName, WeightLayout
from .googlenet import BLOCK_NAMES, GoogLeNet
from .layers import IMAGENET_MEAN, IMAGENET_STD, AuxOutputs, DataConfig, InceptionBase

DATA = DataConfig(input_size=(3, 224, 224), min_input_size=61, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  interpolation="bilinear", crop_pct=0.875)

#: How :func:`init_paddleclas` starts the weights (for ``inception models googlenet_v1``).
INIT = ("as PaddleClas: convolutions N(0, 2 / fan_in) (Paddle's default), linear layers uniform +-sqrt(3 / n) with "
        "PaddleClas's n (1024 for the classifiers, 2048 for the aux heads' first fc), zero biases")


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=False)


class InceptionV1(nn.Module):
    """1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1; concatenated, then ReLU."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int,
                 ch5x5red: int, ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = _conv(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(_conv(in_channels, ch3x3red, 1), _conv(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(_conv(in_channels, ch5x5red, 1), _conv(ch5x5red, ch5x5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv(in_channels, pool_proj, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1))


class InceptionAuxV1(nn.Module):
    """5x5/3 average pool -> 1x1 conv (128) -> fc 1024 [-> ReLU] -> dropout -> fc.

    At 224 pixels the pool gives 3x3; at other sizes the pooled map is brought to 3x3
    (adaptive average), so the heads work at any input size the trunk accepts."""

    def __init__(self, in_channels: int, num_classes: int, relu: bool, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = _conv(in_channels, 128, 1)
        self.fc1 = nn.Linear(128 * 3 * 3, 1024)
        self.relu = relu
        self.dropout = nn.Dropout(p=dropout)
        self.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, 5, stride=3)
        if tuple(x.shape[-2:]) != (3, 3):
            x = F.adaptive_avg_pool2d(x, 3)
        x = self.fc1(torch.flatten(self.conv(x), 1))
        if self.relu:
            x = F.relu(x)
        return self.fc2(self.dropout(x))


class GoogLeNetV1(InceptionBase):
    classifier_name = "fc"
    classifier_keys = ("fc.", "aux1.fc2.", "aux2.fc2.")
    aux_keys = ("aux1.", "aux2.")

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.4,
                 dropout_aux: float = 0.7, in_chans: int = 3) -> None:
        super().__init__()
        self.arch = "googlenet_v1"
        self.num_classes = num_classes
        self.num_features = 1024
        self.aux_logits = aux_logits
        self._data_config = CARDS[0].data_config_for({"in_chans": in_chans})
        self.conv1 = _conv(in_chans, 64, 7, stride=2)
        self.conv2 = _conv(64, 64, 1)
        self.conv3 = _conv(64, 192, 3)
        self.maxpool = nn.MaxPool2d(3, stride=2)          # used after the stem, 3b and 4e
        self.inception3a = InceptionV1(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = InceptionV1(256, 128, 128, 192, 32, 96, 64)
        self.inception4a = InceptionV1(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = InceptionV1(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = InceptionV1(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = InceptionV1(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = InceptionV1(528, 256, 160, 320, 32, 128, 128)
        self.inception5a = InceptionV1(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = InceptionV1(832, 384, 192, 384, 48, 128, 128)
        if aux_logits:
            self.aux1 = InceptionAuxV1(512, num_classes, relu=True, dropout=dropout_aux)
            self.aux2 = InceptionAuxV1(528, num_classes, relu=False, dropout=dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(p=dropout)
        self.fc = self._make_classifier(num_classes)
        init_paddleclas(self)

    # the same two heads ending in fc2 (1024 -> classes) as the BatchNorm GoogLeNet's
    _reset_aux_classifiers = GoogLeNet._reset_aux_classifiers

    def features_with_aux_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(features, inception4a output, inception4d output)``: the trunk and the two
        maps the auxiliary heads read."""
        x = self.maxpool(self.conv1(x))
        x = self.maxpool(self.conv3(self.conv2(x)))
        x = self.maxpool(self.inception3b(self.inception3a(x)))
        a = self.inception4a(x)
        d = self.inception4d(self.inception4c(self.inception4b(a)))
        x = self.maxpool(self.inception4e(d))
        return self.inception5b(self.inception5a(x)), a, d

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features_with_aux_inputs(x)[0]

    def forward(self, x: Tensor) -> Tensor | AuxOutputs:
        """Eval mode (or no aux heads): logits. Train mode with aux heads:
        ``AuxOutputs(logits, aux=(aux1, aux2))``."""
        self.check_input(x)
        x, a, d = self.features_with_aux_inputs(x)
        logits = self.forward_head(x)
        if self.training and self.aux_logits:
            return AuxOutputs(logits, (self.aux1(a), self.aux2(d)))
        return logits


def init_paddleclas(model: GoogLeNetV1) -> None:
    """PaddleClas's initialisation (see :data:`INIT`): without BatchNorm the scale of the
    first weights matters, so this model starts where PaddleClas's does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    fans = {"fc": 1024, "aux1.fc1": 2048, "aux1.fc2": 1024, "aux2.fc1": 2048, "aux2.fc2": 1024}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            bound = (3.0 / fans.get(name, m.in_features)) ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def _paddle_renames() -> Renames:
    """PaddleClas's GoogLeNet (``.pdparams``) -> ours."""
    m = Renames()
    for src, dst in (("_conv", "conv1"), ("_conv_1", "conv2"), ("_conv_2", "conv3")):
        m.param(f"{src}._conv.weight", f"{dst}.weight")
    branches = {"_conv1": "branch1", "_conv3r": "branch2.0", "_conv3": "branch2.1", "_conv5r": "branch3.0",
                "_conv5": "branch3.1", "_convprj": "branch4.1"}
    for b in BLOCK_NAMES:
        for src, dst in branches.items():
            m.param(f"_ince{b}.{src}._conv.weight", f"inception{b}.{dst}.weight")
    # Paddle's dropout scales by (1 - p) at inference: 0.4 before the classifier, 0.7 in the aux heads.
    m.paddle_linear("_fc_out", "fc", scale=0.6)
    for i in (1, 2):
        m.param(f"_conv_o{i}._conv.weight", f"aux{i}.conv.weight")
        m.paddle_linear(f"_fc_o{i}", f"aux{i}.fc1")
        m.paddle_linear(f"_out{i}", f"aux{i}.fc2", scale=0.3)
    return m


CARDS = (
    ModelCard(
        name="googlenet_v1", builder=GoogLeNetV1,
        description="GoogLeNet as PaddleClas builds it: Inception v1 without BatchNorm, 5x5 branches, two aux heads",
        origin="PaddleClas's GoogLeNet (no BatchNorm, two aux heads); loads its `.pdparams`",
        data_config=DATA, params=11_535_736, macs=1_431_556_352, num_features=1024, init=INIT,
        layouts=(WeightLayout("inception", "inception3a.branch1.weight"),     # ours (converted PaddleClas weights)
                 WeightLayout("paddle", "_ince3a._conv1._conv.weight", renames=_paddle_renames)),
        vendor_names=(VendorName("paddleclas", "GoogLeNet"),),
    ),
)
