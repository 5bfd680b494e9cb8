"""ResNet-50/101 from torchvision, output stride 32/16/8 by dilation.

Blocks: 1 = conv1+bn1+relu+maxpool (/4), 2..5 = layer1..layer4 (/4, /8, /16, /32 undilated).
Output stride 16 dilates layer4 (dilation 2), 8 dilates layer3 and layer4 (2 and 4), as torchvision's
``replace_stride_with_dilation`` (the first block of a dilated layer keeps the previous dilation in
its 3×3 conv). Conventions of the references, for comparison:

- IRN / CONTA / C2AM (``net/resnet50.py``, strides (2, 2, 2, 1)): output stride 16 with layer4 at
  stride 1 but *not* dilated. ``resnet50_irn`` is exactly that; ``resnet50`` at 16 dilates layer4
  (DeepLab's convention). Both take the same ImageNet weights.
- DeepLab-v2 (kazuto1011/deeplab-pytorch): Caffe ResNet-101 (stride in the first 1×1 conv, ceil-mode
  max-pool), output stride 8 with layer3/layer4 dilations 2/4; here torchvision's ResNet-101 at 8.

State-dict keys are torchvision's (``conv1.weight``, ``layer1.0.conv1.weight`` …) minus ``fc.*``, so
torchvision's checkpoint files load as they are.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..errors import UserError
from .backbones import BACKBONES, Backbone
from .weights import apply_pretrained

_DILATE = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
#: torchvision's IMAGENET1K_V1 files (the original ImageNet weights the papers started from).
_URLS = {
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}


class ResNetBackbone(Backbone):
    block_names = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, depth: int, output_stride: int = 16):
        super().__init__()
        if output_stride not in _DILATE:
            raise UserError(f"output_stride {output_stride} is not supported by resnet{depth}; use 8, 16 or 32")
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None,
                                                            replace_stride_with_dilation=_DILATE[output_stride])
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        self.stage_channels = (64, 256, 512, 1024, 2048)
        self.stage_strides = (4, 4, 8, min(16, output_stride), output_stride)

    @property
    def stem(self) -> nn.Sequential:
        return nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)

    @staticmethod
    def adapt_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop torchvision's ImageNet classifier (``fc.*``)."""
        return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _resnet(depth: int, pretrained: str | None, output_stride: int) -> ResNetBackbone:
    name = f"resnet{depth}"
    return apply_pretrained(ResNetBackbone(depth, output_stride), name, pretrained, _URLS[name])


@BACKBONES.register("resnet50")
def resnet50(*, pretrained: str | None = None, output_stride: int = 16) -> ResNetBackbone:
    return _resnet(50, pretrained, output_stride)


@BACKBONES.register("resnet50_irn")
def resnet50_irn(*, pretrained: str | None = None, output_stride: int = 16) -> ResNetBackbone:
    """IRN's ResNet-50: layer4 at stride 1 without dilation (output stride 16 only)."""
    if output_stride != 16:
        raise UserError(f"output_stride {output_stride} is not supported by resnet50_irn (IRN's backbone has 16); "
                        "use resnet50 for 8 or 32")
    net = _resnet(50, None, 16)
    for block in net.layer4:
        block.conv2.dilation, block.conv2.padding = (1, 1), (1, 1)
    return apply_pretrained(net, "resnet50", pretrained, _URLS["resnet50"])


@BACKBONES.register("resnet101")
def resnet101(*, pretrained: str | None = None, output_stride: int = 16) -> ResNetBackbone:
    return _resnet(101, pretrained, output_stride)
