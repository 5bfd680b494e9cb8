"""PSA's AffinityNet (Ahn & Kwak, "Learning Pixel-level Semantic Affinity", CVPR 2018; ``jiwoon-ahn/psa``),
as SEAM's random-walk step runs it (``YudeWang/SEAM`` ``network/resnet38_aff.py``, ``train_aff.py``,
``infer_aff.py``, ``tool/imutils.py``, ``tool/pyutils.py``; the same files as PSA's but for the radius rule
below).

The net maps an image to a feature map at stride 8; the affinity of two pixels is
``exp(-mean_c |f_i - f_j|)`` for the pixel pairs of :func:`pair_indices`. It is trained from labels made
by two dense CRFs of the CAMs (:func:`affinity_labels`) and its affinities become the random walk's
transition matrix (:func:`affinity_matrix`, walked by ``wsssbench.stages.expand``).

Also here: PSA's optimiser parameter groups (:func:`psa_param_groups`, ``get_parameter_groups``), which
SEAM's classifier trains with too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .affinity import search_paths
from .backbones import Backbone
from .seam import captured, feature_taps, freeze_as_seam

EPS = 1e-5   # train_aff.py: log(aff + 1e-5), counts + 1e-5


def effective_radius(radius: int, h: int, w: int) -> int:
    """SEAM resnet38_aff.py ``forward``: a map smaller than ``2·radius + 1`` uses ``(min side − 1) // 2``."""
    side = min(h, w)
    return (side - 1) // 2 if side < 2 * radius + 1 else radius


def pair_indices(radius: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pyutils.get_indices_of_pairs: ``src`` (P,) the pixels (row-major) of the map less its last
    ``radius − 1`` rows and first/last ``radius − 1`` columns; ``dst`` (D, P) each one's neighbour in each
    of the D search directions (half a disc, IRN/PSA order). Every unordered pair appears once."""
    r = radius - 1
    idx = torch.arange(h * w).view(h, w)
    src = idx[:h - r, r:w - r].reshape(-1)
    dst = torch.stack([idx[dy:dy + h - r, r + dx:r + dx + w - 2 * r].reshape(-1)
                       for (dy, dx), *_ in search_paths(radius)])
    return src, dst


def affinity_labels(label: torch.Tensor, radius: int, ignore: int = 255):
    """imutils.ExtractAffinityLabelInRadius on (B, h, w) class maps: float masks (B, D, P) of background
    pairs of equal labels, foreground pairs of equal labels and pairs of different labels, pairs touching
    ``ignore`` left out (the pairs of :func:`pair_indices`)."""
    b, h, w = label.shape
    src, dst = pair_indices(radius, h, w)
    flat = label.reshape(b, -1).long()
    a, c = flat[:, src][:, None], flat[:, dst.view(-1)].view(b, *dst.shape)
    valid = (a != ignore) & (c != ignore)
    equal = a == c
    return (equal & (a == 0)).float(), (equal & (a != 0) & valid).float(), (~equal & valid).float()


def affinity_loss(aff: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """train_aff.py: −log a over background and foreground pairs, −log(1 − a) over negative pairs, each the
    sum over its pairs divided by their count (+1e-5), weighted 1/4, 1/4, 1/2."""
    bg_loss = (-bg * torch.log(aff + EPS)).sum() / (bg.sum() + EPS)
    fg_loss = (-fg * torch.log(aff + EPS)).sum() / (fg.sum() + EPS)
    neg_loss = (-neg * torch.log(1 + EPS - aff)).sum() / (neg.sum() + EPS)
    return bg_loss / 4 + fg_loss / 4 + neg_loss / 2


def affinity_matrix(aff: torch.Tensor, radius: int, h: int, w: int) -> torch.Tensor:
    """infer_aff.py ``forward(img, to_dense=True)`` kept sparse: the (h·w, h·w) matrix with ``aff`` (D, P)
    at both (src, dst) and (dst, src) and 1 on the diagonal, every other entry 0."""
    src, dst = pair_indices(radius, h, w)
    src = src.to(aff.device).expand_as(dst).reshape(-1)
    dst = dst.to(aff.device).reshape(-1)
    diag = torch.arange(h * w, device=aff.device)
    rows, cols = torch.cat([src, diag, dst]), torch.cat([dst, diag, src])
    vals = torch.cat([aff.reshape(-1), torch.ones(h * w, dtype=aff.dtype, device=aff.device), aff.reshape(-1)])
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (h * w, h * w), check_invariants=True).coalesce()


class PSAAffinityNet(nn.Module):
    """resnet38_aff.py ``Net``: three backbone maps (ResNet-38: ``conv4``, ``conv5``, ``conv6``; others: blocks
    3, 4 and the output) → 1×1 convs to 64, 128, 256 (ELU) → concatenated → 1×1 448 → 448 (ELU).

    ``frozen``: SEAM/PSA's ``train()`` (BatchNorm in eval mode and frozen, the first two blocks frozen), for
    an ImageNet backbone. The new layers are named ``f8_3``, ``f8_4``, ``f8_5``, ``f9`` (10× lr).
    """

    def __init__(self, backbone: Backbone, radius: int = 5, frozen: bool = False):
        super().__init__()
        self.backbone, self.radius, self.frozen = backbone, radius, frozen
        self.taps, (c3, c4) = feature_taps(backbone)
        self.f8_3 = nn.Conv2d(c3, 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(c4, 128, 1, bias=False)
        self.f8_5 = nn.Conv2d(backbone.out_channels, 256, 1, bias=False)
        self.f9 = nn.Conv2d(448, 448, 1, bias=False)
        for conv in (self.f8_3, self.f8_4, self.f8_5):
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 448, h, w) map whose L1 distances make the affinities."""
        with captured(self.taps) as low:
            top = self.backbone(x)
        low = [F.relu(t) if t.shape[-2:] == top.shape[-2:] else
               F.interpolate(F.relu(t), top.shape[-2:], mode="bilinear", align_corners=False) for t in low]
        f = torch.cat([F.elu(self.f8_3(low[0])), F.elu(self.f8_4(low[1])), F.elu(self.f8_5(top))], 1)
        return F.elu(self.f9(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Affinities (B, D, P) of the pairs of :func:`pair_indices` at the radius :meth:`radius_for` gives."""
        f = self.features(x)
        h, w = f.shape[-2:]
        src, dst = pair_indices(self.radius_for(h, w), h, w)
        f = f.flatten(2)
        ff = f[:, :, src.to(f.device)][:, :, None]
        ft = f[:, :, dst.view(-1).to(f.device)].view(f.shape[0], f.shape[1], *dst.shape)
        return torch.exp(-(ft - ff).abs().mean(1))

    def radius_for(self, h: int, w: int) -> int:
        return effective_radius(self.radius, h, w)

    def train(self, mode: bool = True) -> "PSAAffinityNet":
        super().train(mode)
        if self.frozen:
            freeze_as_seam(self.backbone)
        return self


def psa_param_groups(model: nn.Module, lr: float, weight_decay: float, new: tuple[str, ...]) -> list[dict]:
    """``get_parameter_groups`` (resnet38_aff.py, resnet38_SEAM.py) with train_aff.py / train_SEAM.py's
    settings: the weights of every Conv2d / GroupNorm at ``lr`` with ``weight_decay``, their biases at 2·lr
    without; the modules whose names start with one of ``new`` at 10·lr and 20·lr. BatchNorm parameters
    are in no group (never updated); a trainable parameter of any other module is a UserError."""
    from ..errors import UserError
    groups: list[list] = [[], [], [], []]
    placed: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            placed.update(id(p) for p in m.parameters(recurse=False))
        if not isinstance(m, (nn.Conv2d, nn.GroupNorm)):
            continue
        fresh = 2 if name.startswith(new) else 0
        for p, k in ((m.weight, fresh), (m.bias, fresh + 1)):
            if p is not None and p.requires_grad:
                groups[k].append(p)
            if p is not None:
                placed.add(id(p))
    left = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in placed]
    if left:
        raise UserError(f"cls_optimizer=psa: parameters outside Conv2d/GroupNorm/BatchNorm layers ({left[0]}, …) "
                        "would never train; use cls_optimizer=sgd for this model")
    mult, decay = (1, 2, 10, 20), (weight_decay, 0.0, weight_decay, 0.0)
    return [{"params": g, "lr": m * lr, "weight_decay": d, "base_lr": m * lr} for g, m, d in zip(groups, mult, decay)]


def psa_optimizer(model: nn.Module, lr: float, weight_decay: float, new: tuple[str, ...]) -> torch.optim.SGD:
    """tool/torchutils.py PolyOptimizer: ``SGD(params, lr, weight_decay)`` puts the weight decay in SGD's
    momentum slot (momentum = ``weight_decay``; each group keeps its own weight decay); the caller's poly
    schedule (power 0.9) scales each group's ``base_lr``."""
    return torch.optim.SGD(psa_param_groups(model, lr, weight_decay, new), lr, weight_decay)
