"""VGG-16 with a dilated conv5, torchvision layout (``features.N`` keys, so torchvision files load).

Blocks 1..5 = conv1_x+pool1 … conv5_x+pool5. Two conventions, chosen by the output stride:

- 8 — DeepLab-LargeFOV / SEC: pool4 and pool5 become 3×3 stride-1 max-pools (padding 1) and conv5_x
  are dilated by 2, so conv5 keeps pool3's resolution (DeepLab's ``train.prototxt``).
- 16 — CAM (Zhou et al.) / NL-CCAM / CI-CAM (``model/cub_vgg16.py``): pool5 removed, conv5 undilated
  (14×14 maps at 224²). CI-CAM's non-local blocks and LeakyReLU are its method, not this backbone.

The fully connected layers (DeepLab's fc6/fc7, ImageNet's classifier) are not part of the backbone.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..errors import UserError
from .backbones import BACKBONES, Backbone
from .weights import apply_pretrained

_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # torchvision IMAGENET1K_V1
_BLOCKS = ((0, 5), (5, 10), (10, 17), (17, 24), (24, 31))  # slices of torchvision's vgg16().features
_POOL4, _POOL5, _CONV5 = 23, 30, (24, 26, 28)


class VGG16Backbone(Backbone):
    stage_channels = (64, 128, 256, 512, 512)

    def __init__(self, output_stride: int = 8):
        super().__init__()
        if output_stride not in (8, 16):
            raise UserError(f"output_stride {output_stride} is not supported by vgg16; use 8 (DeepLab-LargeFOV) "
                            "or 16 (CAM / CI-CAM)")
        features = torchvision.models.vgg16(weights=None).features
        if output_stride == 8:
            features[_POOL4] = nn.MaxPool2d(3, stride=1, padding=1)
            features[_POOL5] = nn.MaxPool2d(3, stride=1, padding=1)
            for i in _CONV5:
                features[i].dilation, features[i].padding = (2, 2), (2, 2)
        else:
            features[_POOL5] = nn.Identity()
        self.features = features
        self.stage_strides = (2, 4, 8, min(16, output_stride), output_stride)

    @property
    def stages(self) -> list[nn.Module]:
        return [self.features[start:stop] for start, stop in _BLOCKS]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @staticmethod
    def adapt_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop torchvision's ImageNet classifier (``classifier.*``)."""
        return {k: v for k, v in state.items() if not k.startswith("classifier.")}


@BACKBONES.register("vgg16")
def vgg16(*, pretrained: str | None = None, output_stride: int = 16) -> VGG16Backbone:
    return apply_pretrained(VGG16Backbone(output_stride), "vgg16", pretrained, _URL)
