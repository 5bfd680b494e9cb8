"""SEC's segmentation network: DeepLab-LargeFOV on VGG-16 (kolesman/SEC ``training/train.prototxt``).

VGG-16 conv1–conv5 at output stride 8 (:class:`wsssbench.models.vgg.VGG16Backbone`), with the Caffe
prototxt's pools: pool1–3 are 3×3 stride-2 max-pools with padding 1 (Caffe rounds up: 321 → 161 → 81 → 41),
pool4/pool5 3×3 stride 1, then ``pool5a`` (3×3 average, stride 1, padding counted as Caffe does);
fc6 = 3×3 convolution of 1024 channels dilated 12, fc7 = 1×1 of 1024, each ReLU + dropout 0.5
(Caffe's element-wise ``Dropout``; the halbielee/SEC_pytorch port uses ``Dropout2d``); fc8 = 1×1 to the
classes, N(0, 0.01) weights and zero bias (``fc8-SEC`` weight/bias fillers). Any other backbone gets
the same head on its stride-8 features (the CPU default).
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import Backbone
from .vgg import VGG16Backbone

_POOLS_1_3 = (4, 9, 16)   # torchvision vgg16().features indices of pool1..pool3


class SECNet(nn.Module):
    """Backbone → pool5a → fc6 → fc7 → fc8 (class scores at stride 8).

    ``outputs(x)`` is ``[scores]`` (what :func:`methods.sec.sec_step` reads); ``forward(x)`` the scores.
    """

    def __init__(self, backbone: Backbone, num_classes: int, channels: int = 1024, dilation: int = 12,
                 dropout: float = 0.5):
        super().__init__()
        if isinstance(backbone, VGG16Backbone):
            for i in _POOLS_1_3:      # train.prototxt pool1..pool3: kernel 3, stride 2, pad 1 (Caffe ceil)
                backbone.features[i] = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.backbone = backbone
        self.num_classes = num_classes
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1)        # count_include_pad, as Caffe's AVE
        self.fc6 = nn.Conv2d(backbone.out_channels, channels, 3, padding=dilation, dilation=dilation)
        self.fc7 = nn.Conv2d(channels, channels, 1)
        self.drop6, self.drop7 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.fc8 = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool5a(self.backbone(x))
        x = self.drop6(torch.relu(self.fc6(x)))
        x = self.drop7(torch.relu(self.fc7(x)))
        return self.fc8(x)

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self(x)]
