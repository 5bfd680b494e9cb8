"""IRN's inter-pixel relation net, class-boundary branch (Ahn, Cho & Kwak 2019; ``jiwoon-ahn/irn``).

The net predicts a boundary map B (stride 4) from multi-level backbone features; the affinity of two
pixels within radius r is ``1 − max B`` along the line between them (IRN Eq. 2, ``misc/indexing.py``:
``PathIndex`` and ``edge_to_affinity``). It is trained from confident CAM labels: pairs of equal labels
should have affinity 1, pairs of different labels 0, pairs touching an ignored pixel do not count.
The harness turns the affinities into the random walk's transition matrix.

IRN's displacement-field branch (instance masks) is not built: semantic pseudo-masks need only B.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone


@lru_cache(maxsize=None)
def search_paths(radius: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """For every search direction (half a disc of radius ``radius``, IRN's ``get_all_dir_paths``), the
    lattice points within distance 1 of the segment from (0, 0) to it, destination first.

    >>> paths = search_paths(2)
    >>> [p[0] for p in paths]
    [(0, 1), (1, -1), (1, 0), (1, 1)]
    >>> paths[0]
    ((0, 1), (0, 0))
    """
    dirs = [(0, x) for x in range(1, radius)]
    dirs += [(y, x) for y in range(1, radius) for x in range(-radius + 1, radius) if x * x + y * y < radius ** 2]
    paths = []
    for dy, dx in dirs:
        length_sq = dy * dy + dx * dx
        points = [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
                  if (dy * x - dx * y) ** 2 < length_sq]
        points.sort(key=lambda p: -abs(p[0]) - abs(p[1]))
        paths.append(tuple(points))
    return tuple(paths)


def _pad(x: torch.Tensor, radius: int, fill: float) -> torch.Tensor:
    """``x`` framed with ``fill``: ``radius`` columns left and right, ``radius`` rows below (the search
    directions never point up)."""
    return F.pad(x, (radius, radius, 0, radius), value=fill)


def _neighbours(padded: torch.Tensor, radius: int) -> Callable[[int, int], torch.Tensor]:
    """For ``padded = _pad(x, radius, fill)``: ``at(dy, dx)[..., y, x] == x[..., y + dy, x + dx]`` for
    ``0 <= dy < radius``, ``|dx| < radius``, ``fill`` outside the map; views of ``padded``."""
    h, w = padded.shape[-2] - radius, padded.shape[-1] - 2 * radius
    return lambda dy, dx: padded[..., dy:dy + h, radius + dx:radius + dx + w]


def edge_to_affinity(edge: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Affinities of every pixel with its neighbours in the search directions.

    ``edge``: (B, H, W) boundary probabilities in [0, 1]. Returns ``aff`` (B, D, H, W) with
    ``aff[b, d, y, x]`` = 1 − max of ``edge`` on the path from (y, x) to (y + dy_d, x + dx_d), and
    ``valid`` (D, H, W), False where the destination leaves the image (there ``aff`` is 0, as IRN's
    padding with boundary value 1 makes it).
    """
    h, w = edge.shape[-2:]
    paths = search_paths(radius)
    padded = _pad(edge, radius, 1.0)  # the map + IRN's boundary-1 frame
    pw = w + 2 * radius
    here = torch.arange(h, device=edge.device)[:, None] * pw + torch.arange(w, device=edge.device) + radius
    at = _neighbours(padded, radius)
    # Find each path's arg-max without autograd, then gather once: the gradient reaches only the
    # maximal pixel (as IRN's max-pool) and the backward pass is a single scatter.
    with torch.no_grad():
        argmax = []
        for path in paths:
            peak = at(*path[0]).clone()
            k_max = torch.zeros(peak.shape, dtype=torch.uint8, device=edge.device)  # paths are short
            for k, point in enumerate(path[1:], start=1):
                value = at(*point)
                k_max.masked_fill_(value > peak, k)
                torch.maximum(peak, value, out=peak)
            offsets = torch.tensor([dy * pw + dx for dy, dx in path], device=edge.device)
            argmax.append(here + offsets[k_max.long()])
        argmax = torch.stack(argmax, 1)  # (B, D, H, W) indices into the flattened padded map
    aff = 1 - padded.flatten(-2).gather(-1, argmax.flatten(1)).view(argmax.shape)
    valid = _neighbours(_pad(torch.ones(h, w, dtype=torch.bool, device=edge.device), radius, False), radius)
    return aff, torch.stack([valid(*path[0]) for path in paths])


def affinity_matrix(edge: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """The sparse (H·W, H·W) affinity matrix of one boundary map (H, W) for the random walk: symmetric,
    unit diagonal, non-zero only for pixel pairs closer than ``radius`` (IRN's ``propagate_to_edge``
    before ``to_transition_matrix``; its radius 5 at inference). Pixels are numbered row-major.
    """
    h, w = edge.shape
    aff, valid = edge_to_affinity(edge[None].float(), radius)
    paths = search_paths(radius)
    src = torch.arange(h * w, device=edge.device).view(h, w).expand(len(paths), h, w)
    step = torch.tensor([dy * w + dx for (dy, dx), *_ in paths], device=edge.device)
    dst = src + step[:, None, None]
    src, dst, val = src[valid], dst[valid], aff[0][valid]
    diag = torch.arange(h * w, device=edge.device)
    rows = torch.cat([src, dst, diag])
    cols = torch.cat([dst, src, diag])
    vals = torch.cat([val, val, torch.ones(h * w, device=edge.device)])
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (h * w, h * w),
                                   check_invariants=True).coalesce()


def pair_labels(labels: torch.Tensor, radius: int, ignore_index: int = 255):
    """IRN's ``GetAffinityLabelFromIndices``: for each pixel pair, masks (B, D, H, W) of background
    pairs with equal labels, foreground pairs with equal labels, and pairs with different labels;
    pairs touching ``ignore_index`` or leaving the image are in none."""
    src = labels.long()
    at = _neighbours(_pad(src, radius, ignore_index), radius)
    dst = torch.stack([at(*path[0]) for path in search_paths(radius)], 1)
    src = src[:, None]
    valid = (src != ignore_index) & (dst != ignore_index)
    equal = valid & (src == dst)
    return equal & (src == 0), equal & (src != 0), valid & (src != dst)


def irn_sources(h: int, w: int, radius: int, device=None) -> torch.Tensor:
    """(H, W) mask of the pixels IRN's ``PathIndex`` (misc/indexing.py ``get_path_indices``) takes as pair
    sources: rows ``< H − (radius − 1)``, columns in ``[radius − 1, W − (radius − 1))`` — those whose every
    destination lies in the map. IRN's loss counts only their pairs (``rw_pairs=irn``); the toolkit's default
    counts every pair inside the image (about 25% more at radius 10 on a 128² map)."""
    floor = radius - 1
    rows = torch.arange(h, device=device) < h - floor
    cols = (torch.arange(w, device=device) >= floor) & (torch.arange(w, device=device) < w - floor)
    return rows[:, None] & cols


PAIRS = ("toolkit", "irn")


class AffinityNet(nn.Module):
    """Boundary branch of IRN on any :class:`Backbone`.

    Each tapped block (those at stride ≥ 4: IRN's five ResNet-50 stages) → 1×1 conv to 32 channels →
    GroupNorm(4) → bilinear resize to the stride-4 grid → ReLU; the concatenation → 1×1 conv → boundary
    logits (``net/resnet50_irn.py``). ``freeze_backbone`` (IRN: True, an ImageNet backbone kept fixed)
    detaches the features and keeps the backbone in eval mode; pass False to train it too (a randomly
    initialised backbone has nothing worth freezing).
    """

    def __init__(self, backbone: Backbone, *, freeze_backbone: bool = True, width: int = 32):
        super().__init__()
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        self.taps = [i for i, s in enumerate(backbone.stage_strides) if s >= 4]
        self.stride = backbone.stage_strides[self.taps[0]]
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(backbone.stage_channels[i], width, 1, bias=False), nn.GroupNorm(4, width))
            for i in self.taps)
        self.fuse = nn.Conv2d(width * len(self.taps), 1, 1, bias=True)
        if freeze_backbone:
            backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "AffinityNet":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary logits (B, 1, h, w) at ``self.stride``."""
        feats = self.backbone.forward_stages(x)
        size = feats[self.taps[0]].shape[2:]
        maps = []
        for i, branch in zip(self.taps, self.branches):
            f = feats[i].detach() if self.freeze_backbone else feats[i]
            maps.append(F.relu(F.interpolate(branch(f), size=size, mode="bilinear", align_corners=False)))
        return self.fuse(torch.cat(maps, 1))

    def edge(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary probabilities (B, h, w)."""
        return torch.sigmoid(self(x))[:, 0]

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, radius: int = 10, ignore_index: int = 255,
             pairs: str = "toolkit") -> torch.Tensor:
        """IRN's affinity loss (``step/train_irn.py``): −log a on equal-label pairs (background and
        foreground pairs averaged separately, then halved each), −log(1 − a) on different-label pairs,
        the two halves averaged. ``labels`` (B, H, W): 0 background, c > 0 a confident class,
        ``ignore_index`` unsure; resized (nearest; at stride 4 IRN's ``pil_rescale(label, 0.25, 0)``) to
        the boundary map. IRN trains with radius 10. ``pairs="irn"``: only :func:`irn_sources`' pairs.
        """
        labels = F.interpolate(labels[:, None].float(), size=logits.shape[2:], mode="nearest-exact")[:, 0]
        aff, _ = edge_to_affinity(torch.sigmoid(logits.float())[:, 0], radius)
        bg_pos, fg_pos, neg = pair_labels(labels, radius, ignore_index)
        if pairs == "irn":
            keep = irn_sources(*labels.shape[1:], radius, labels.device)
            bg_pos, fg_pos, neg = bg_pos & keep, fg_pos & keep, neg & keep
        pos_loss = -torch.log(aff + 1e-5)
        neg_loss = -torch.log(1 + 1e-5 - aff)

        def masked_mean(loss, mask):
            return (loss * mask).sum() / (mask.sum() + 1e-5)

        pos = masked_mean(pos_loss, bg_pos) / 2 + masked_mean(pos_loss, fg_pos) / 2
        return (pos + masked_mean(neg_loss, neg)) / 2
