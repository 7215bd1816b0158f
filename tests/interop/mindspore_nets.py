"""MindSpore model zoo's GoogLeNet and InceptionV4, defined in MindSpore itself.

The zoo (mindspore-ai/models: ``research/cv/googlenet/src/googlenet.py`` and
``official/cv/Inception/inceptionv4/src/inceptionv4.py``) is not a package, so the two
networks are written out here from their published architecture: the same layers, hyper-
parameters (padding modes, BatchNorm eps, pools) and attribute names, so that the checkpoint
MindSpore writes for them has the zoo's parameter names. InceptionV4 builds its layers from
MindSpore's own ``nn.Conv2dBnAct`` / ``nn.DenseBnAct``, as the zoo does.

Imported by test_parity.py only after MindSpore is found.
"""

from __future__ import annotations

import mindspore.nn as nn
import mindspore.ops as ops

# ---------------------------------------------------------------------------------------------
# GoogLeNet (research/cv/googlenet): conv -> BatchNorm(eps 1e-3) -> ReLU, "same" padding throughout


class Conv2dBlock(nn.Cell):
    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, pad_mode="same", has_bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Cell):
    def __init__(self, cin: int, n1: int, n3r: int, n3: int, n5r: int, n5: int, proj: int) -> None:
        super().__init__()
        self.b1 = Conv2dBlock(cin, n1)
        self.b2 = nn.SequentialCell([Conv2dBlock(cin, n3r), Conv2dBlock(n3r, n3, 3)])
        self.b3 = nn.SequentialCell([Conv2dBlock(cin, n5r), Conv2dBlock(n5r, n5, 3)])   # 3x3 in the "5x5" branch
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=1, pad_mode="same")
        self.b4 = Conv2dBlock(cin, proj)
        self.concat = ops.Concat(axis=1)

    def construct(self, x):
        return self.concat((self.b1(x), self.b2(x), self.b3(x), self.b4(self.maxpool(x))))


class GoogleNet(nn.Cell):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBlock(3, 64, 7, stride=2)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        self.conv2 = Conv2dBlock(64, 64)
        self.conv3 = Conv2dBlock(64, 192, 3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        self.block3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.block3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        self.block4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.block4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.block4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.block4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.block4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(kernel_size=2, stride=2, pad_mode="same")
        self.block5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.block5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.dropout = nn.Dropout(p=0.2)            # defined but never applied, as in the zoo
        self.mean = ops.ReduceMean(keep_dims=True)
        self.flatten = nn.Flatten()
        self.classifier = nn.Dense(1024, num_classes)

    def construct(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.block3b(self.block3a(x)))
        x = self.block4d(self.block4c(self.block4b(self.block4a(x))))
        x = self.maxpool4(self.block4e(x))
        x = self.block5b(self.block5a(x))
        return self.classifier(self.flatten(self.mean(x, (2, 3))))


# ---------------------------------------------------------------------------------------------
# InceptionV4 (official/cv/Inception/inceptionv4): every conv is nn.Conv2dBnAct (BatchNorm eps
# 1e-5, ReLU) wrapped in a cell whose attribute is ``conv``; "valid" padding unless told


class Conv2d(nn.Cell):
    def __init__(self, cin: int, cout: int, kernel_size, stride: int = 1, pad_mode: str = "valid",
                 padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2dBnAct(cin, cout, kernel_size, stride=stride, pad_mode=pad_mode, padding=padding,
                                   has_bias=False, has_bn=True, activation="relu")

    def construct(self, x):
        return self.conv(x)


def _same(cin: int, cout: int, kernel_size) -> Conv2d:
    return Conv2d(cin, cout, kernel_size, pad_mode="same")


def _pad1(cin: int, cout: int) -> Conv2d:
    return Conv2d(cin, cout, 3, pad_mode="pad", padding=1)


class Avgpool(nn.Cell):
    def __init__(self, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.avg_pool = nn.AvgPool2d(kernel_size=kernel_size, stride=stride, pad_mode="same")

    def construct(self, x):
        return self.avg_pool(x)


class Stem(nn.Cell):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv2d_1a_3x3 = Conv2d(cin, 32, 3, stride=2)
        self.conv2d_2a_3x3 = Conv2d(32, 32, 3)
        self.conv2d_2b_3x3 = _pad1(32, 64)
        self.mixed_3a_branch_0 = nn.MaxPool2d(3, stride=2)
        self.mixed_3a_branch_1 = Conv2d(64, 96, 3, stride=2)
        self.mixed_4a_branch_0 = nn.SequentialCell([Conv2d(160, 64, 1), Conv2d(64, 96, 3)])
        self.mixed_4a_branch_1 = nn.SequentialCell([Conv2d(160, 64, 1), _same(64, 64, (1, 7)),
                                                    _same(64, 64, (7, 1)), Conv2d(64, 96, 3)])
        self.mixed_5a_branch_0 = Conv2d(192, 192, 3, stride=2)
        self.mixed_5a_branch_1 = nn.MaxPool2d(3, stride=2)
        self.concat = ops.Concat(1)

    def construct(self, x):
        x = self.conv2d_2b_3x3(self.conv2d_2a_3x3(self.conv2d_1a_3x3(x)))
        x = self.concat((self.mixed_3a_branch_0(x), self.mixed_3a_branch_1(x)))
        x = self.concat((self.mixed_4a_branch_0(x), self.mixed_4a_branch_1(x)))
        return self.concat((self.mixed_5a_branch_0(x), self.mixed_5a_branch_1(x)))


class InceptionA(nn.Cell):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch_0 = Conv2d(cin, 96, 1)
        self.branch_1 = nn.SequentialCell([Conv2d(cin, 64, 1), _pad1(64, 96)])
        self.branch_2 = nn.SequentialCell([Conv2d(cin, 64, 1), _pad1(64, 96), _pad1(96, 96)])
        self.branch_3 = nn.SequentialCell([Avgpool(3), Conv2d(384, 96, 1)])
        self.concat = ops.Concat(1)

    def construct(self, x):
        return self.concat((self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)))


class InceptionB(nn.Cell):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch_0 = Conv2d(cin, 384, 1)
        self.branch_1 = nn.SequentialCell([Conv2d(cin, 192, 1), _same(192, 224, (1, 7)), _same(224, 256, (7, 1))])
        self.branch_2 = nn.SequentialCell([Conv2d(cin, 192, 1), _same(192, 192, (7, 1)), _same(192, 224, (1, 7)),
                                           _same(224, 224, (7, 1)), _same(224, 256, (1, 7))])
        self.branch_3 = nn.SequentialCell([Avgpool(3), Conv2d(cin, 128, 1)])
        self.concat = ops.Concat(1)

    def construct(self, x):
        return self.concat((self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)))


class ReductionA(nn.Cell):
    def __init__(self, cin: int, k: int, l: int, m: int, n: int) -> None:  # noqa: E741 - the zoo's names
        super().__init__()
        self.branch_0 = Conv2d(cin, n, 3, stride=2)
        self.branch_1 = nn.SequentialCell([Conv2d(cin, k, 1), _pad1(k, l), Conv2d(l, m, 3, stride=2)])
        self.branch_2 = nn.MaxPool2d(3, stride=2)
        self.concat = ops.Concat(1)

    def construct(self, x):
        return self.concat((self.branch_0(x), self.branch_1(x), self.branch_2(x)))


class ReductionB(nn.Cell):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch_0 = nn.SequentialCell([Conv2d(cin, 192, 1), Conv2d(192, 192, 3, stride=2)])
        self.branch_1 = nn.SequentialCell([Conv2d(cin, 256, 1), _same(256, 256, (1, 7)), _same(256, 320, (7, 1)),
                                           Conv2d(320, 320, 3, stride=2)])
        self.branch_2 = nn.MaxPool2d(3, stride=2)
        self.concat = ops.Concat(1)

    def construct(self, x):
        return self.concat((self.branch_0(x), self.branch_1(x), self.branch_2(x)))


class InceptionC(nn.Cell):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch_0 = Conv2d(cin, 256, 1)
        self.branch_1 = Conv2d(cin, 384, 1)
        self.branch_1_1 = _same(384, 256, (1, 3))
        self.branch_1_2 = _same(384, 256, (3, 1))
        self.branch_2 = nn.SequentialCell([Conv2d(cin, 384, 1), _same(384, 448, (3, 1)), _same(448, 512, (1, 3))])
        self.branch_2_1 = _same(512, 256, (1, 3))
        self.branch_2_2 = _same(512, 256, (3, 1))
        self.branch_3 = nn.SequentialCell([Avgpool(3), Conv2d(cin, 256, 1)])
        self.concat = ops.Concat(1)

    def construct(self, x):
        x1 = self.branch_1(x)
        x2 = self.branch_2(x)
        return self.concat((self.branch_0(x), self.concat((self.branch_1_1(x1), self.branch_1_2(x1))),
                            self.concat((self.branch_2_1(x2), self.branch_2_2(x2))), self.branch_3(x)))


class Inceptionv4(nn.Cell):
    def __init__(self, in_channels: int = 3, classes: int = 1000) -> None:
        super().__init__()
        blocks = [Stem(in_channels)] + [InceptionA(384) for _ in range(4)] + [ReductionA(384, 192, 224, 256, 384)]
        blocks += [InceptionB(1024) for _ in range(7)] + [ReductionB(1024)] + [InceptionC(1536) for _ in range(3)]
        self.features = nn.SequentialCell(blocks)
        self.avgpool = ops.ReduceMean(keep_dims=False)
        self.softmax = nn.DenseBnAct(1536, classes, has_bias=True, has_bn=True, activation="logsoftmax")
        self.dropout = nn.Dropout(p=0.8)
        self.bn0 = nn.BatchNorm1d(1536, eps=0.001, momentum=0.1)

    def construct(self, x):
        x = self.avgpool(self.features(x), (2, 3))
        return self.softmax(self.dropout(self.bn0(x)))
