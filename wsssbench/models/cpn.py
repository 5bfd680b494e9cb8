"""CPN's network (Zhang et al., "Complementary Patch for WSSS", ICCV 2021) and its complementary patch pairs,
as ``Ferenas/CPN`` computes them (``network/resnet38_CPN.py``, ``network/da_atten.py``, ``tool/imutils.py``).

The network is SEAM's (:class:`~wsssbench.models.seam.SEAMClassifier`) with a second refinement beside the
PCM, the pixel-region correlation module (PRCM, Eqs. 11-12). Its refined CAM is ``PCM(Y) + PRCM(Y) * Y``,
``Y`` being the PCM's input (the detached, max-normalised CAMs with background ``1 - max``, non-maximal
foreground zeroed). The PRCM, as the code computes it:

- region representations ``Z = softmax_hw(Y) Fᵀ`` (da_atten.py ``SpatialGather_Module``: a softmax over the
  pixels of each class map, scale 1), ``F`` the PCM's 195-channel features;
- keys ``relu(f10(Z))``, laid out (B, 192, K+1, 1) and *reshaped* (not transposed) to (B, K+1, 192), as
  ``key = ...view(n, 21, -1)`` does (resnet38_CPN.py ``PRCM``);
- pixel embeddings ``relu(f9(F))`` with the PCM's own ``f9`` (shared, as in the code);
- ``P_R = key @ pixels / sqrt(K+1)`` and a softmax over the pixels of each class (``dim=-1``).

``cpn_pcm``/``cpn_prcm`` switch either module off (Table 2); with both off ``cams`` are the raw CAMs.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .seam import SEAMClassifier, captured, pcm_input


def region_keys(f10: nn.Module, norm: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(B, K+1, 192): ``relu(f10(Z))`` of the region representations Z = softmax_hw(norm) Fᵀ, reshaped as
    the code's ``view(n, 21, -1)`` of its (B, 192, 21, 1) layout (da_atten.py, resnet38_CPN.py PRCM)."""
    n, c1, h, w = f.shape
    k = norm.shape[1]
    probs = F.interpolate(norm, (h, w), mode="bilinear", align_corners=True).flatten(2).softmax(2)
    regions = (probs @ f.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(3)     # (B, C1, K+1, 1)
    return F.relu(f10(regions)).reshape(n, k, -1)


def prcm(f9: nn.Module, f10: nn.Module, norm: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """softmax(P_R) (B, K+1, h, w): each class's relation to the pixels, a softmax over the pixels (Eq. 11-12)."""
    n, _, h, w = f.shape
    key = region_keys(f10, norm, f)
    pixels = F.relu(f9(f)).flatten(2)
    relation = (key @ pixels) * key.shape[1] ** -0.5
    return relation.softmax(-1).view(n, -1, h, w)


class CPNClassifier(SEAMClassifier):
    """SEAM's classifier plus the PRCM's ``f10`` (``classifier_prcm``, Xavier-uniform gain 4, 10× lr).

    ``seam_outputs(x)`` is resnet38_CPN.py's ``forward``: ``(cam, refined)`` at the input size, ``refined``
    = PCM + PRCM·Y with the background as channel 0 (each term only when switched on).
    """

    def __init__(self, backbone, num_classes: int, dropout: float = 0.5, frozen: bool = False,
                 pcm: bool = True, prcm: bool = True):
        super().__init__(backbone, num_classes, dropout, frozen)
        self.use_pcm, self.use_prcm = pcm, prcm
        self.classifier_prcm = nn.Conv2d(192 + 3, 192, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier_prcm.weight, gain=4)

    @property
    def refines(self) -> bool:
        return self.use_pcm or self.use_prcm

    def seam_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = x.shape[-2:]
        up = dict(size=size, mode="bilinear", align_corners=True)
        with captured(self.taps) as low:
            cam = self.classifier(self.dropout(self.backbone(x)))
        if not self.refines:
            return F.interpolate(cam, **up), None
        low = [F.interpolate(F.relu(t), cam.shape[-2:], mode="bilinear", align_corners=True)
               if t.shape[-2:] != cam.shape[-2:] else F.relu(t) for t in low]
        norm = pcm_input(cam)
        f = self.classifier_pcm.features(x, *low)
        refined = 0
        if self.use_pcm:
            refined = refined + self.classifier_pcm(norm, f)
        if self.use_prcm:
            refined = refined + prcm(self.classifier_pcm.f9, self.classifier_prcm, norm, f) * norm
        return F.interpolate(cam, **up), F.interpolate(refined, **up)

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        cam, refined = self.seam_outputs(x)
        return cam if refined is None else refined[:, 1:]


# --- complementary patch pairs (tool/imutils.py hide_patch, hide_patch_ss) ------------------------------


def grid_pair(h: int, w: int, sizes: tuple[int, ...], hide: float) -> tuple[torch.Tensor, float]:
    """``hide_patch``: one S drawn from ``sizes`` (python ``random``), then per S×S patch, rows first, hidden
    when ``random.random() <= hide``. Returns the shown mask of I_h (1 shown, 0 hidden) and λ = the shown
    patches' share (Sec. 3.2: 1 − N_h/N)."""
    size = sizes[random.randint(0, len(sizes) - 1)]
    shown = torch.ones(h, w)
    hidden = total = 0
    for y in range(0, h, size):
        for x in range(0, w, size):
            total += 1
            if random.random() <= hide:
                shown[y:y + size, x:x + size] = 0
                hidden += 1
    return shown, 1 - hidden / total


def superpixel_pair(labels: np.ndarray, hide: float, sampling: str = "code") -> tuple[torch.Tensor, float]:
    """The shown mask of I_h for superpixel ``labels`` (H, W) and λ.

    ``code`` (``hide_patch_ss``): ⌊(M+1)·hide⌋ labels drawn *with replacement* from 0..M (M the largest
    label, ``np.random.randint``) are hidden, λ the shown *pixels'* share; ``paper`` (Sec. 3.2): each
    superpixel hidden with probability ``hide``, λ = 1 − N_h/N over the superpixels present.
    """
    if sampling == "code":
        top = int(labels.max()) + 1
        drawn = np.random.randint(0, top, int(np.floor(top * hide)))
        hidden = np.isin(labels, drawn)
        return torch.from_numpy(~hidden).float(), float(1 - hidden.mean())
    present = np.unique(labels)
    chosen = present[np.random.random(len(present)) < hide]
    return torch.from_numpy(~np.isin(labels, chosen)).float(), 1 - len(chosen) / len(present)


def slic_labels(image_chw: np.ndarray, segments: int, compactness: float) -> np.ndarray:
    """``slic(img.permute(1, 2, 0), compactness, n_segments, start_label=1)`` on the normalised image, as
    ``hide_patch_ss`` runs it (scikit-image converts the three channels to Lab first)."""
    from skimage.segmentation import slic
    return slic(np.ascontiguousarray(image_chw.transpose(1, 2, 0)), compactness=compactness,
                n_segments=segments, start_label=1)
