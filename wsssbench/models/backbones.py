"""Backbones: the ``BACKBONES`` registry, the :class:`Backbone` interface and the ``small`` CPU backbone.

Every backbone is split into five blocks (ResNet's conv1..conv5_x naming: block 1 is the stem, blocks 2–5
the four stages), run in order. ``forward(x)`` returns the last block's feature map; ``forward_stages(x)``
returns all five, which is how CONTA's block-2–5 hook and IRN's multi-level edge branch tap them.
"""
from __future__ import annotations

import operator
from itertools import accumulate
from typing import Callable

import torch
from torch import nn

from ..errors import UserError
from ..registry import Registry
from .weights import apply_pretrained

#: name → constructor ``(*, pretrained, output_stride) -> Backbone``.
BACKBONES: Registry[Callable[..., "Backbone"]] = Registry("backbone")


class Backbone(nn.Module):
    """Five blocks applied in order; subclasses register their blocks under ``block_names``.

    Attributes: ``out_channels`` (channels of the last block), ``stage_channels`` and ``stage_strides``
    (per block, strides relative to the input), ``output_stride`` (= ``stage_strides[-1]``).
    """

    block_names: tuple[str, ...] = ()
    stage_channels: tuple[int, ...] = ()
    stage_strides: tuple[int, ...] = ()

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    @property
    def output_stride(self) -> int:
        return self.stage_strides[-1]

    @property
    def stages(self) -> list[nn.Module]:
        """The five blocks, in order (block 1 = stem … block 5)."""
        return [getattr(self, name) for name in self.block_names]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.stages:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.stages:
            x = block(x)
        return x


#: output strides :func:`dilation_plan` accepts.
_OUTPUT_STRIDES = (8, 16, 32)


def dilation_plan(natural_strides: tuple[int, ...], output_stride: int) -> list[tuple[int, int]]:
    """Per block ``(stride, dilation)``: once the running stride reaches ``output_stride``, later strides
    become 1 and their dilation grows by the stride instead (DeepLab's atrous trick, torchvision's
    ``replace_stride_with_dilation``).

    >>> dilation_plan((2, 2, 2, 2, 2), 8)
    [(2, 1), (2, 1), (2, 1), (1, 2), (1, 4)]
    """
    if output_stride not in _OUTPUT_STRIDES:
        raise UserError(f"output_stride {output_stride} is not supported by this backbone; use one of "
                        f"{', '.join(map(str, _OUTPUT_STRIDES))}")
    plan, stride, dilation = [], 1, 1
    for s in natural_strides:
        if stride * s > output_stride:
            dilation *= s
            plan.append((1, dilation))
        else:
            stride *= s
            plan.append((s, dilation))
    return plan


def plan_strides(plan: list[tuple[int, int]]) -> tuple[int, ...]:
    """Per block, the running stride relative to the input of a :func:`dilation_plan`.

    >>> plan_strides(dilation_plan((2, 2, 2, 2, 2), 8))
    (2, 4, 8, 8, 8)
    """
    return tuple(accumulate((s for s, _ in plan), operator.mul))


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallNet(Backbone):
    """A plain conv-BN-ReLU net for the CPU default: ~0.5 M parameters, 64–96 px inputs in milliseconds.

    Blocks: stem 3→24 (/2); 24→32 ×2 (/4); 32→64 ×2 (/8); 64→128 ×2 (/16); 128→192 (/32 natural).
    Its output stride is set by dilation like the ResNets'. Deterministic on CPU for a given
    ``torch.manual_seed`` (plain convolutions only).
    """

    block_names = ("block1", "block2", "block3", "block4", "block5")
    widths = (24, 32, 64, 128, 192)

    def __init__(self, output_stride: int = 16):
        super().__init__()
        plan = dilation_plan((2, 2, 2, 2, 2), output_stride)
        w = self.widths
        self.block1 = _conv_bn_relu(3, w[0], *plan[0])
        for i in range(1, 4):
            s, d = plan[i]
            setattr(self, f"block{i + 1}", nn.Sequential(
                _conv_bn_relu(w[i - 1], w[i], s, d), _conv_bn_relu(w[i], w[i], 1, d)))
        self.block5 = _conv_bn_relu(w[3], w[4], *plan[4])
        self.stage_channels = w
        self.stage_strides = plan_strides(plan)
        init_weights(self)


def init_weights(module: nn.Module) -> None:
    """He-normal convs (fan_out, as torchvision's ResNet), BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class FixedBatchNorm(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics, in training too; its affine
    parameters still train (IRN net/resnet50.py FixedBatchNorm). Same state-dict keys as BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                              training=False, eps=self.eps)


def fix_batchnorm(module: nn.Module) -> None:
    """Turn every ``nn.BatchNorm2d`` inside ``module`` into a :class:`FixedBatchNorm`, in place (same
    parameters and buffers)."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = FixedBatchNorm


@BACKBONES.register("small")
def small(*, pretrained: str | None = None, output_stride: int = 16) -> SmallNet:
    return apply_pretrained(SmallNet(output_stride), "small", pretrained)


def build_backbone(name: str, *, pretrained: str | None = None, output_stride: int = 16) -> Backbone:
    """Build a registered backbone. ``pretrained``: None (random init), ``"torchvision"`` (torchvision's
    local cache, never downloaded) or a path to a local weights file.

    >>> build_backbone("small").out_channels
    192
    """
    return BACKBONES.get(name)(pretrained=pretrained, output_stride=output_stride)
