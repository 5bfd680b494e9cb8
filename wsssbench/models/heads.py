"""Classification head with class activation maps (Zhou et al. 2016; IRN's ``resnet50_cam.Net``)."""
from __future__ import annotations

import torch
from torch import nn

from .backbones import Backbone


class CAMClassifier(nn.Module):
    """Backbone → 1×1 conv class scores (no bias) → global average pooling = logits.

    With no bias the pooling and the 1×1 conv commute, so ``logits == cams(x).mean((2, 3))``: the CAMs are
    exactly the maps the logits average. ``num_classes`` counts foreground classes only (20 for VOC, as
    IRN's classifier); the CAM stage applies ReLU and normalisation to ``cams``.
    """

    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)  # IRN: default init

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: ``(B, K)`` logits and ``(B, K, h, w)`` raw CAMs at the backbone's output stride."""
        cams = self.cams(x)
        return cams.mean((2, 3)), cams

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cams(x).mean((2, 3))

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class activation maps ``(B, K, h, w)`` (before ReLU / normalisation)."""
        return self.classifier(self.backbone(x))
