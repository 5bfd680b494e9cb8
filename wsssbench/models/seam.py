"""SEAM's classifier (Wang et al., "Self-supervised Equivariant Attention Mechanism", CVPR 2020):
a CAM head and the pixel correlation module (PCM), as ``YudeWang/SEAM`` ``network/resnet38_SEAM.py``.

``Net.forward`` there returns two maps at the input size: the raw CAMs of its ``fc8`` and their
PCM refinement. The PCM propagates the (detached, max-normalised, background-completed) CAMs with an
affinity computed from the image and two lower feature maps (projected, concatenated, projected again,
L2-normalised). ``infer_SEAM.py`` reads the PCM output, so :meth:`SEAMClassifier.cams` returns it.

Differences from the reference, each equivalent for what the losses and inference read:

- ``fc8`` has 21 outputs there, its channel 0 (background) read by nothing (every use overwrites it
  with ``1 - max`` of the foreground); the head here has the ``num_classes`` foreground outputs and
  :func:`with_background` builds that channel where SEAM does.
- the lower features are ResNet-38's ``conv4`` / ``conv5`` (the activated inputs of B5 and B6) there;
  other backbones give the outputs of their blocks 3 and 4 (ResNet-50: 512 and 1024 channels, SEAM's
  widths), resized to the CAM's size where their stride differs.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone
from .resnet38 import ResNet38

EPS = 1e-5   # resnet38_SEAM.py and visualization.max_norm: every normalisation's 1e-5


def freeze_as_seam(backbone: Backbone) -> None:
    """SEAM's and PSA's ``train()`` on ImageNet weights (resnet38d.py ``Net.train``, ``not_training``): every
    BatchNorm in eval mode without gradient, and the first two blocks (conv1a, B2) frozen."""
    for m in backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            m.requires_grad_(False)
    for block in backbone.stages[:2]:
        block.requires_grad_(False)


def with_background(fg: torch.Tensor) -> torch.Tensor:
    """(B, K+1, h, w): ``1 - max`` of the foreground maps as channel 0, then ``fg`` (SEAM's background:
    resnet38_SEAM.py ``cam_d_norm[:,0]``, train_SEAM.py ``cam1[:,0,:,:] = 1-torch.max(cam1[:,1:])``)."""
    return torch.cat([1 - fg.amax(1, keepdim=True), fg], 1)


def max_norm(p: torch.Tensor) -> torch.Tensor:
    """visualization.max_norm (4-D, torch): ``relu(p - min - e) / (max - min + e)`` per map, after a ReLU."""
    p = F.relu(p)
    hi = p.amax((2, 3), keepdim=True)
    lo = p.amin((2, 3), keepdim=True)
    return F.relu(p - lo - EPS) / (hi - lo + EPS)


def max_onehot(x: torch.Tensor) -> torch.Tensor:
    """train_SEAM.py max_onehot: foreground channels (1:) zeroed where not the pixel's foreground max."""
    fg = x[:, 1:]
    return torch.cat([x[:, :1], fg * (fg == fg.amax(1, keepdim=True))], 1)


def pcm_input(cam: torch.Tensor) -> torch.Tensor:
    """What the PCM propagates (resnet38_SEAM.py Net.forward, ``cam_d_norm``): the detached foreground
    CAMs, ``relu(c - 1e-5) / (max + 1e-5)``, background ``1 - max``, non-max foreground zeroed."""
    with torch.no_grad():
        c = F.relu(cam.detach())
        fg = F.relu(c - EPS) / (c.amax((2, 3), keepdim=True) + EPS)
        return max_onehot(with_background(fg))


def pcm_propagate(cam: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """resnet38_SEAM.py Net.PCM after ``f9``: ``cam`` (B, C, h, w) through the affinity of ``f`` (B, D, h, w).

    The affinity is ``relu(f̂ᵀ f̂)`` of the L2-normalised features, each column divided by its sum, so
    pixel j receives the affinity-weighted mean of the CAM over all pixels i.
    """
    n, _, h, w = f.shape
    cam = F.interpolate(cam, (h, w), mode="bilinear", align_corners=True).flatten(2)
    f = f.flatten(2)
    f = f / (torch.norm(f, dim=1, keepdim=True) + EPS)
    aff = F.relu(f.transpose(1, 2) @ f)
    aff = aff / (aff.sum(1, keepdim=True) + EPS)
    return (cam @ aff).view(n, -1, h, w)


class PCM(nn.Module):
    """The pixel correlation module with its projections (resnet38_SEAM.py ``f8_3``, ``f8_4``, ``f9``)."""

    def __init__(self, low_channels: tuple[int, int]):
        super().__init__()
        self.f8_3 = nn.Conv2d(low_channels[0], 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(low_channels[1], 128, 1, bias=False)
        self.f9 = nn.Conv2d(192 + 3, 192, 1, bias=False)
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def features(self, image: torch.Tensor, low3: torch.Tensor, low4: torch.Tensor) -> torch.Tensor:
        """``[image, relu(f8_3(conv4)), relu(f8_4(conv5))]`` at the features' size; the lower features
        are detached (no PCM gradient reaches the backbone), the image resized with align_corners."""
        size = low3.shape[-2:]
        x_s = F.interpolate(image, size, mode="bilinear", align_corners=True)
        return torch.cat([x_s, F.relu(self.f8_3(low3.detach())), F.relu(self.f8_4(low4.detach()))], 1)

    def forward(self, cam: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return pcm_propagate(cam, self.f9(f))


def feature_taps(backbone: Backbone) -> tuple[list[nn.Module], tuple[int, int]]:
    """The modules whose (ReLU-ed) outputs are the PCM's lower features, and their channels: ResNet-38's
    ``b5.bn_branch2a`` and ``b6.bn_branch2a`` (resnet38d.py ``conv4``, ``conv5``); else blocks 3 and 4."""
    if isinstance(backbone, ResNet38):
        return [backbone.b5.bn_branch2a, backbone.b6.bn_branch2a], (512, 1024)
    return backbone.stages[2:4], tuple(backbone.stage_channels[2:4])


@contextlib.contextmanager
def captured(modules: list[nn.Module]):
    """Collects each module's output of the next forward pass into the yielded list, in order."""
    out: list = [None] * len(modules)
    handles = [m.register_forward_hook(lambda _m, _i, y, k=k: out.__setitem__(k, y)) for k, m in enumerate(modules)]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


class SEAMClassifier(nn.Module):
    """Backbone → Dropout2d → 1×1 CAM head (``fc8``), and the PCM on its CAMs (resnet38_SEAM.py Net).

    ``seam_outputs(x)`` is SEAM's ``forward``: ``(cam, cam_rv)`` at the input size (align_corners
    upsampling), ``cam`` the ``num_classes`` foreground maps, ``cam_rv`` the PCM output with the
    background as channel 0. ``forward`` gives SEAM's logits (the mean of the upsampled CAMs,
    train_SEAM.py ``label1``) and ``cams`` the PCM's foreground maps (what infer_SEAM.py reads).
    ``frozen``: SEAM's ``train()`` (every BatchNorm in eval mode and frozen, blocks 1-2 frozen), for
    training from ImageNet weights. The new layers' names start with ``classifier`` (10× learning rate).
    """

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.5, frozen: bool = False):
        super().__init__()
        self.backbone, self.num_classes, self.frozen = backbone, num_classes, frozen
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        self.taps, channels = feature_taps(backbone)
        self.classifier_pcm = PCM(channels)

    def seam_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        with captured(self.taps) as low:
            cam = self.classifier(self.dropout(self.backbone(x)))
        low = [F.interpolate(F.relu(t), cam.shape[-2:], mode="bilinear", align_corners=True)
               if t.shape[-2:] != cam.shape[-2:] else F.relu(t) for t in low]
        cam_rv = self.classifier_pcm(pcm_input(cam), self.classifier_pcm.features(x, *low))
        up = dict(size=size, mode="bilinear", align_corners=True)
        return F.interpolate(cam, **up), F.interpolate(cam_rv, **up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seam_outputs(x)[0].mean((2, 3))

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        return self.seam_outputs(x)[1][:, 1:]

    def train(self, mode: bool = True) -> "SEAMClassifier":
        super().train(mode)
        if self.frozen:
            freeze_as_seam(self.backbone)
        return self
