"""A CIFAR-style ResNet (He et al. 2016, section 4.2): a 3x3 stem, three stages of basic
blocks with batch normalisation, global average pooling and a linear head.

Shortcuts are the paper's option A (parameter-free): the identity, or where a stage halves
the resolution and doubles the channels, the input subsampled with stride 2 and zero-padded
with the new channels. Batch-norm running statistics are ordinary ``nn.BatchNorm2d`` buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Shortcut(nn.Module):
    """Option A: ``x`` subsampled by ``stride`` and zero-padded to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


class BasicBlock(nn.Module):
    """relu(shortcut(x) + bn(conv(relu(bn(conv(x)))))), both convolutions 3x3."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = Shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Maps images ``(batch, channels, height, width)`` to logits ``(batch, outputs)``.

    ``blocks`` basic blocks per stage (depth 6·blocks + 2), stage widths ``width``,
    2·``width``, 4·``width``. Convolutions start from Kaiming-normal weights (fan out),
    batch-norm scales from 1 and shifts from 0.
    """

    def __init__(self, in_channels: int, outputs: int, blocks: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        layers: list[nn.Module] = []
        channels = width
        for stage in range(3):
            out_channels = width * 2**stage
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(channels, outputs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.head(h.mean(dim=(2, 3)))
