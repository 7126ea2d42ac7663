#!/usr/bin/env python3
"""PyTorch twins of the Zoo module's networks for the benchmark (written for this project after
the structure of the official ACON code, GitHub nmaac/acon): ShuffleNetV2 with ReLU / Swish /
ACON-C / Meta-ACON-C, TFNet with ACON-FReLU, ResNet with basic blocks or bottlenecks (stride on
the first 1x1). Every convolution has a bias; below 112 pixels the stem has stride 1 and no
max-pool (ResNet's conv1 is 3x3/1/1). State_dict names are the official ones.

    build("shufflenetv2-0.5x-meta", (3, 32, 32), classes=10) -> nn.Module
"""
from collections import OrderedDict

import torch
from torch import nn

from train_step import AconC, MetaAconC


def slot(act, c, r):
    return {"relu": lambda: nn.ReLU(), "swish": lambda: nn.SiLU(), "aconc": lambda: AconC(c),
            "meta": lambda: MetaAconC(c, r)}[act]()


class ShuffleUnit(nn.Module):
    def __init__(self, inp, oup, mid, stride, act, r):
        super().__init__()
        self.stride = stride
        out = oup - inp
        self.branch_main = nn.Sequential(
            nn.Conv2d(inp, mid, 1), nn.BatchNorm2d(mid), slot(act, mid, r),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, out, 1), nn.BatchNorm2d(out), slot(act, out, r))
        if stride == 2:
            self.branch_proj = nn.Sequential(
                nn.Conv2d(inp, inp, 3, 2, 1, groups=inp), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, inp, 1), nn.BatchNorm2d(inp), slot(act, inp, r))

    def forward(self, x):
        if self.stride == 2:
            return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)
        return torch.cat((x[:, 0::2], self.branch_main(x[:, 1::2])), 1)


def shufflenetv2(size, act, shape, classes):
    widths = {"0.5": [24, 48, 96, 192, 1024], "1.0": [24, 116, 232, 464, 1024],
              "1.5": [24, 176, 352, 704, 1024], "2.0": [24, 244, 488, 976, 2048]}[size]
    r = 8 if size == "0.5" else 16
    small = min(shape[1:]) < 112
    c = widths[0]
    layers = [("first_conv", nn.Sequential(nn.Conv2d(shape[0], c, 3, 1 if small else 2, 1), nn.BatchNorm2d(c),
                                           slot(act, c, r)))]
    if not small:
        layers.append(("maxpool", nn.MaxPool2d(3, 2, 1)))
    units = []
    for stage, repeats in enumerate([4, 8, 4]):
        out = widths[stage + 1]
        for i in range(repeats):
            units.append(ShuffleUnit(c, out, out // 2, 2, act, r) if i == 0 else ShuffleUnit(c // 2, out, out // 2, 1, act, r))
            c = out
    layers += [("features", nn.Sequential(*units)),
               ("conv_last", nn.Sequential(nn.Conv2d(c, widths[4], 1), nn.BatchNorm2d(widths[4]), slot(act, widths[4], r))),
               ("globalpool", nn.AdaptiveAvgPool2d(1))]
    if size == "2.0":
        layers.append(("dropout", nn.Dropout(0.2)))
    layers += [("flatten", nn.Flatten()), ("classifier", nn.Sequential(nn.Linear(widths[4], classes)))]
    return nn.Sequential(OrderedDict(layers))


class AconFReLU(nn.Module):
    def __init__(self, c, stride=1):
        super().__init__()
        self.stride = stride
        self.conv_frelu = nn.Conv2d(c, c, 3, stride, 1, groups=c)
        self.bn1 = nn.BatchNorm2d(c)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        a = self.maxpool(x) if self.stride == 2 else x
        b = self.bn1(self.conv_frelu(x))
        return self.bn2((a - b) * torch.sigmoid(a - b) + b)


class TFBlock(nn.Module):
    def __init__(self, inp, stride):
        super().__init__()
        self.stride = stride
        self.branch_main = nn.Sequential(nn.Conv2d(inp, inp, 1), nn.BatchNorm2d(inp), AconFReLU(inp),
                                         nn.Conv2d(inp, inp, 1), nn.BatchNorm2d(inp))
        self.acon = AconFReLU(inp * stride, stride)

    def forward(self, x):
        y = self.branch_main(x)
        return self.acon(x + y if self.stride == 1 else torch.cat((x, y), 1))


def tfnet(size, shape, classes):
    s = float(size)
    c = int(16 * s)
    small = min(shape[1:]) < 112
    first = nn.Sequential(nn.Conv2d(shape[0], c, 3, 1 if small else 2, 1), nn.BatchNorm2d(c), nn.ReLU())
    blocks = []
    for repeats in [2, 3, 8, 3]:
        for i in range(repeats):
            blocks.append(TFBlock(c, 2 if i == 0 else 1))
            c = c * 2 if i == 0 else c
    layers = [("first_conv", first), ("features", nn.Sequential(*blocks)),
              ("conv_last", nn.Sequential(nn.Conv2d(c, 1024, 1), nn.BatchNorm2d(1024), AconFReLU(1024))),
              ("globalpool", nn.AdaptiveAvgPool2d(1))]
    if s > 0.5:
        layers.append(("dropout", nn.Dropout(0.2)))
    layers += [("flatten", nn.Flatten()), ("classifier", nn.Sequential(nn.Linear(1024, classes)))]
    return nn.Sequential(OrderedDict(layers))


def downsample(inp, out, stride):
    return nn.Sequential(nn.Conv2d(inp, out, 1, stride), nn.BatchNorm2d(out))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inp, planes, stride, act):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inp, planes, 3, stride, 1), nn.BatchNorm2d(planes)
        self.acon1 = slot(act, planes, 16)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1), nn.BatchNorm2d(planes)
        self.acon2 = slot(act, planes, 16)
        self.downsample = downsample(inp, planes, stride) if stride != 1 or inp != planes else None

    def forward(self, x):
        y = self.bn2(self.conv2(self.acon1(self.bn1(self.conv1(x)))))
        return self.acon2(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp, planes, stride, act):
        super().__init__()
        out = planes * 4
        self.conv1, self.bn1 = nn.Conv2d(inp, planes, 1, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1), nn.BatchNorm2d(planes)
        self.acon = slot(act, planes, 16)
        self.conv3, self.bn3 = nn.Conv2d(planes, out, 1), nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = downsample(inp, out, stride) if stride != 1 or inp != out else None

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(self.acon(self.bn2(self.conv2(y)))))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


def resnet(depth, act, shape, classes):
    blocks, block = {18: ([2, 2, 2, 2], BasicBlock), 34: ([3, 4, 6, 3], BasicBlock), 50: ([3, 4, 6, 3], Bottleneck),
                     101: ([3, 4, 23, 3], Bottleneck), 152: ([3, 8, 36, 3], Bottleneck)}[depth]
    small = min(shape[1:]) < 112
    layers = [("conv1", nn.Conv2d(shape[0], 64, 3, 1, 1) if small else nn.Conv2d(shape[0], 64, 7, 2, 3)),
              ("bn1", nn.BatchNorm2d(64)), ("relu", nn.ReLU())]
    if not small:
        layers.append(("maxpool", nn.MaxPool2d(3, 2, 1)))
    inp = 64
    for k, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks)):
        stage = []
        for i in range(n):
            stage.append(block(inp, planes, 2 if i == 0 and k > 0 else 1, act))
            inp = planes * block.expansion
        layers.append((f"layer{k + 1}", nn.Sequential(*stage)))
    layers += [("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(inp, classes))]
    return nn.Sequential(OrderedDict(layers))


def build(name, shape, classes):
    parts = name.split("-")
    if parts[0] == "shufflenetv2":
        return shufflenetv2(parts[1][:-1], parts[2], shape, classes)
    if parts[0] == "tfnet":
        return tfnet(parts[1], shape, classes)
    return resnet(int(parts[0][len("resnet"):]), parts[1], shape, classes)
