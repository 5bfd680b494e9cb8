"""The wide ResNet-38 of Wu, Shen & van den Hengel ("Wider or Deeper", model A), the backbone of
AffinityNet (PSA), SEAM, CONTA+SEAM and CPN. Structure checked against SEAM's ``network/resnet38d.py``.

Pre-activation residual units (BN → ReLU → conv; the projection shortcut also reads the activated
input). Blocks (Wu et al.'s B1..B7), widths and output strides at output stride 8:

======  ===========================================  =======  ========
block   units                                        out      stride
======  ===========================================  =======  ========
B1      conv 3×3, 64                                 64       1
B2      3 × basic (3×3 128, 3×3 128)                 128      2
B3      3 × basic (3×3 256, 3×3 256)                 256      4
B4      6 × basic (3×3 512, 3×3 512)                 512      8
B5      3 × basic (3×3 512, 3×3 1024), dilation 2    1024     8
B6      bottleneck 1×1 512, 3×3 1024, 1×1 2048, d 4  2048     8
B7      bottleneck 1×1 1024, 3×3 2048, 1×1 4096, d 4 4096     8
======  ===========================================  =======  ========

followed by BN + ReLU (inside B7 here). The first 3×3 conv of B5 is undilated, as in the reference
(a dilated block's first conv keeps the previous dilation). B6/B7 carry Dropout2d 0.3/0.5 before their
3×3 and last 1×1 convs. 105.1 M parameters (the ImageNet classifier excluded).
Output stride 8 is the references' setting; 16 and 32 restore B5's / B6's natural strides.

Module names follow the converted MXNet checkpoint the references load
(``conv1a``, ``b2``, ``b2_1`` …, ``bn_branch2a``, ``conv_branch2a`` …, ``bn7``), so SEAM's / PSA's
``resnet38d`` ImageNet file (``ilsvrc-cls_rna-a1_cls1000_ep-0001.pth``) loads with ``load_weights``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, Backbone, dilation_plan, init_weights, plan_strides
from .weights import apply_pretrained


class BasicUnit(nn.Module):
    """Pre-activation unit of two 3×3 convs, ``cin → mid → cout``."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None):
        super().__init__()
        d0 = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, mid, 3, stride, padding=d0, dilation=d0, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid)
        self.conv_branch2b1 = nn.Conv2d(mid, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv_branch1 = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                             if cin != cout or stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn_branch2a(x))
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(a)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(a))))
        return shortcut + y


class BottleneckUnit(nn.Module):
    """Pre-activation bottleneck ``cin → cout/4 (1×1) → cout/2 (3×3) → cout (1×1)``, projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn_branch2a(x))
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(a)))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return self.conv_branch1(a) + y


class _Head(nn.Module):
    """B7 and the final BN + ReLU, as one block."""

    def __init__(self, b7: nn.Module, bn7: nn.Module):
        super().__init__()
        self.parts = (b7, bn7)  # a tuple: owned by ResNet38, not registered twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7, bn7 = self.parts
        return F.relu(bn7(b7(x)))


class ResNet38(Backbone):
    """Seven blocks B1..B7 (not five: ``forward_stages`` returns seven maps)."""

    stage_channels = (64, 128, 256, 512, 1024, 2048, 4096)
    #: units per basic block B2..B5
    units = {"b2": 3, "b3": 3, "b4": 6, "b5": 3}

    def __init__(self, output_stride: int = 8):
        super().__init__()
        plan = dilation_plan((1, 2, 2, 2, 2, 2, 1), output_stride)
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        widths = {"b2": (64, 128, 128), "b3": (128, 256, 256), "b4": (256, 512, 512), "b5": (512, 512, 1024)}
        for i, (name, (cin, mid, cout)) in enumerate(widths.items(), start=1):
            (stride, dilation), prev_dilation = plan[i], plan[i - 1][1]
            for u in range(self.units[name]):
                unit = (BasicUnit(cin, mid, cout, stride, dilation, first_dilation=prev_dilation) if u == 0
                        else BasicUnit(cout, mid, cout, dilation=dilation))
                setattr(self, name if u == 0 else f"{name}_{u}", unit)
        self.b6 = BottleneckUnit(1024, 2048, *plan[5], dropout=0.3)
        self.b7 = BottleneckUnit(2048, 4096, *plan[6], dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)
        self.stage_strides = plan_strides(plan)
        init_weights(self)

    @property
    def stages(self) -> list[nn.Module]:
        groups = [self.conv1a]
        for name, n in self.units.items():
            groups.append(nn.Sequential(*(getattr(self, name if u == 0 else f"{name}_{u}") for u in range(n))))
        return groups + [self.b6, _Head(self.b7, self.bn7)]


@BACKBONES.register("resnet38")
def resnet38(*, pretrained: str | None = None, output_stride: int = 16) -> ResNet38:
    """ResNet-38; the references run it at ``output_stride=8`` (pass it: the registry default is 16)."""
    return apply_pretrained(ResNet38(output_stride), "resnet38", pretrained)
