"""DeepLab-v2 (Chen et al. 2017) as ``kazuto1011/deeplab-pytorch`` builds it (the code CONTA and C2AM ran).

ASPP = the sum of four 3×3 convs straight to class scores, dilations 6/12/18/24 (weights N(0, 0.01),
bias 0; ``libs/models/deeplabv2.py``). Multi-scale inputs (``libs/models/msc.py``): the network also
sees the image resized (bilinear) by 0.5 and 0.75; the fused output is the pixel-wise max of the three
score maps, each resized to the full-scale map. Training sums a cross-entropy per output (the three
scales and the max), labels resized to each (``main.py``); testing uses the max.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone

#: kazuto1011/deeplab-pytorch ``MSC(pyramids=[0.5, 0.75])`` on top of the full-scale input.
MSC_SCALES = (0.5, 0.75)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling, DeepLab-v2 style: parallel dilated 3×3 convs, summed."""

    def __init__(self, in_channels: int, num_classes: int, rates=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class DeepLabV2(nn.Module):
    """Backbone → ASPP, optionally with multi-scale inputs (``msc_scales=()`` turns MSC off).

    ``forward(x)`` gives the (fused) class scores at the backbone's output stride, in train and eval
    mode alike; ``outputs(x)`` gives every output the training loss sums.
    """

    def __init__(self, backbone: Backbone, num_classes: int, rates=(6, 12, 18, 24),
                 msc_scales: tuple[float, ...] = MSC_SCALES):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.aspp = ASPP(backbone.out_channels, num_classes, rates)
        self.msc_scales = tuple(msc_scales)

    def single_scale(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.backbone(x))

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[full scale, *each msc scale, max fusion]``, or ``[full scale]`` without MSC."""
        logits = self.single_scale(x)
        if not self.msc_scales:
            return [logits]
        # scale_factor, as msc.py: sides floor(s·p), sampled at steps of 1/p (321 → 160 at step 2, not 321/160)
        pyramid = [self.single_scale(F.interpolate(x, scale_factor=p, mode="bilinear", align_corners=False))
                   for p in self.msc_scales]
        resized = [F.interpolate(p, size=logits.shape[2:], mode="bilinear", align_corners=False) for p in pyramid]
        fused = torch.stack([logits, *resized]).amax(0)
        return [logits, *pyramid, fused]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)[-1]

    @staticmethod
    def loss(outputs: list[torch.Tensor], labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """Sum over outputs of the cross-entropy against ``labels`` (B, H, W) resized nearest to each."""
        total = 0.0
        for out in outputs:
            target = F.interpolate(labels[:, None].float(), size=out.shape[2:], mode="nearest-exact")
            total = total + F.cross_entropy(out.float(), target[:, 0].long(), ignore_index=ignore_index)
        return total
