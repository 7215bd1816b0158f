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

from .card import ModelCard, Renames, VendorName, WeightLayout
from .layers import (
    INCEPTION_MEAN,
    INCEPTION_STD,
    INIT_DESCRIPTION,
    BasicConv2d,
    DataConfig,
    InceptionBase,
    init_weights,
)

VARIANTS = ("timm", "mindspore", "paddleclas")
DATA = DataConfig(input_size=(3, 299, 299), min_input_size=75, mean=INCEPTION_MEAN, std=INCEPTION_STD,
                  interpolation="bicubic", crop_pct=0.875)


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
        self._data_config = CARDS[0].data_config_for({"in_chans": in_chans})
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


def _mindspore_renames() -> Renames:
    """MindSpore's ``features`` holds Stem, 4 A, RedA, 7 B, RedB, 3 C; ours holds the stem's
    six parts first, so block i of theirs (i >= 1) is block i + 5 of ours."""
    m = Renames()

    def cba(src: str, dst: str) -> None:            # their Conv2d wraps nn.Conv2dBnAct (conv, batchnorm)
        m.ms_convbn(f"{src}.conv", dst, conv="conv", bn="batchnorm")

    s = "features.0"
    cba(f"{s}.conv2d_1a_3x3", "features.0")
    cba(f"{s}.conv2d_2a_3x3", "features.1")
    cba(f"{s}.conv2d_2b_3x3", "features.2")
    cba(f"{s}.mixed_3a_branch_1", "features.3.conv")
    for i in range(2):
        cba(f"{s}.mixed_4a_branch_0.{i}", f"features.4.branch0.{i}")
    for i in range(4):
        cba(f"{s}.mixed_4a_branch_1.{i}", f"features.4.branch1.{i}")
    cba(f"{s}.mixed_5a_branch_0", "features.5.conv")
    for j in range(1, 17):
        src, dst = f"features.{j}", f"features.{j + 5}"
        if j <= 4 or 6 <= j <= 12:                   # InceptionA / InceptionB
            n1, n2 = (2, 3) if j <= 4 else (3, 5)
            cba(f"{src}.branch_0", f"{dst}.branch0")
            for i in range(n1):
                cba(f"{src}.branch_1.{i}", f"{dst}.branch1.{i}")
            for i in range(n2):
                cba(f"{src}.branch_2.{i}", f"{dst}.branch2.{i}")
            cba(f"{src}.branch_3.1", f"{dst}.branch3.1")
        elif j == 5:                                 # ReductionA
            cba(f"{src}.branch_0", f"{dst}.branch0")
            for i in range(3):
                cba(f"{src}.branch_1.{i}", f"{dst}.branch1.{i}")
        elif j == 13:                                # ReductionB
            for i in range(2):
                cba(f"{src}.branch_0.{i}", f"{dst}.branch0.{i}")
            for i in range(4):
                cba(f"{src}.branch_1.{i}", f"{dst}.branch1.{i}")
        else:                                        # InceptionC
            for a, b in (("branch_0", "branch0"), ("branch_1", "branch1_0"), ("branch_1_1", "branch1_1a"),
                         ("branch_1_2", "branch1_1b"), ("branch_2.0", "branch2_0"), ("branch_2.1", "branch2_1"),
                         ("branch_2.2", "branch2_2"), ("branch_2_1", "branch2_3a"), ("branch_2_2", "branch2_3b"),
                         ("branch_3.1", "branch3.1")):
                cba(f"{src}.{a}", f"{dst}.{b}")
    # The head (bn0 -> dense -> batchnorm) is folded by _fold_mindspore_head.
    for name in ("bn0.gamma", "bn0.beta", "bn0.moving_mean", "bn0.moving_variance", "softmax.dense.weight",
                 "softmax.dense.bias", "softmax.batchnorm.gamma", "softmax.batchnorm.beta",
                 "softmax.batchnorm.moving_mean", "softmax.batchnorm.moving_variance"):
        m.param(name, "head:" + name)
    return m


def _fold_mindspore_head(head: dict[str, Tensor]) -> dict[str, Tensor]:
    """``BatchNorm1d(eps 1e-3) -> Linear -> BatchNorm1d(eps 1e-5)`` as one Linear (eval mode)."""
    g = {k.split("head:")[-1]: v.double() for k, v in head.items()}
    s0 = g["bn0.gamma"] / torch.sqrt(g["bn0.moving_variance"] + 1e-3)
    t0 = g["bn0.beta"] - g["bn0.moving_mean"] * s0
    w, b = g["softmax.dense.weight"], g["softmax.dense.bias"]
    s1 = g["softmax.batchnorm.gamma"] / torch.sqrt(g["softmax.batchnorm.moving_variance"] + 1e-5)
    weight = s1[:, None] * w * s0[None, :]
    bias = s1 * (w @ t0 + b - g["softmax.batchnorm.moving_mean"]) + g["softmax.batchnorm.beta"]
    return {"last_linear.weight": weight.float(), "last_linear.bias": bias.float()}


def _paddle_renames() -> Renames:
    m = Renames()
    stem = {"_conv_1": "features.0", "_conv_2": "features.1", "_conv_3": "features.2", "_conv2": "features.3.conv",
            "_conv1_1": "features.4.branch0.0", "_conv1_2": "features.4.branch0.1",
            "_conv2_1": "features.4.branch1.0", "_conv2_2": "features.4.branch1.1",
            "_conv2_3": "features.4.branch1.2", "_conv2_4": "features.4.branch1.3", "_conv3": "features.5.conv"}
    for src, dst in stem.items():
        m.paddle_convbn(f"_inception_stem.{src}", dst)
    blocks = {
        "A": {"_conv1": "branch3.1", "_conv2": "branch0", "_conv3_1": "branch1.0", "_conv3_2": "branch1.1",
              "_conv4_1": "branch2.0", "_conv4_2": "branch2.1", "_conv4_3": "branch2.2"},
        "B": {"_conv1": "branch3.1", "_conv2": "branch0", "_conv3_1": "branch1.0", "_conv3_2": "branch1.1",
              "_conv3_3": "branch1.2", **{f"_conv4_{i + 1}": f"branch2.{i}" for i in range(5)}},
        "C": {"_conv1": "branch3.1", "_conv2": "branch0", "_conv3_0": "branch1_0", "_conv3_1": "branch1_1a",
              "_conv3_2": "branch1_1b", "_conv4_0": "branch2_0", "_conv4_00": "branch2_1", "_conv4_000": "branch2_2",
              "_conv4_1": "branch2_3a", "_conv4_2": "branch2_3b"},
    }
    for kind, first, count in (("A", 6, 4), ("B", 11, 7), ("C", 19, 3)):
        for i in range(count):
            for src, dst in blocks[kind].items():
                m.paddle_convbn(f"_inception{kind}_{i + 1}.{src}", f"features.{first + i}.{dst}")
    for src, dst in {"_conv2": "branch0", "_conv3_1": "branch1.0", "_conv3_2": "branch1.1",
                     "_conv3_3": "branch1.2"}.items():
        m.paddle_convbn(f"_reductionA.{src}", f"features.10.{dst}")
    for src, dst in {"_conv2_1": "branch0.0", "_conv2_2": "branch0.1", "_conv3_1": "branch1.0",
                     "_conv3_2": "branch1.1", "_conv3_3": "branch1.2", "_conv3_4": "branch1.3"}.items():
        m.paddle_convbn(f"_reductionB.{src}", f"features.18.{dst}")
    m.paddle_linear("out", "last_linear", scale=0.8)          # Paddle's dropout 0.2, scaled at inference
    return m


CARDS = (
    ModelCard(
        name="inception_v4", builder=InceptionV4, description="Inception v4",
        origin="Inception v4 of MindSpore, the Ascend PyTorch port and PaddleClas; loads theirs and timm's",
        data_config=DATA, params=42_679_816, macs=12_253_974_624, num_features=1536,
        init=INIT_DESCRIPTION + "; timm's inception_v4 keeps PyTorch's default (Kaiming-uniform) initialisation",
        layouts=(WeightLayout("timm", "features.3.conv.conv.weight"),        # Cadene's names, which timm kept
                 WeightLayout("mindspore", "features.0.conv2d_1a_3x3.conv.conv.weight",
                              options={"variant": "mindspore"}, renames=_mindspore_renames, fold=_fold_mindspore_head),
                 WeightLayout("paddle", "_inception_stem._conv_1._conv.weight", options={"variant": "paddleclas"},
                              renames=_paddle_renames)),
        vendor_names=(VendorName("mindspore", "inceptionv4", {"variant": "mindspore"}),
                      VendorName("paddleclas", "InceptionV4", {"variant": "paddleclas"})),
        peers={"timm": "inception_v4"},
    ),
)
