"""NL-CCAM's non-local CAM network (Yang et al., WACV 2020) and CI-CAM's causal context pool (Shao et al.,
ACM MM 2021), after Yangseung/NL-CCAM ``model_cub.py`` and shaofeifei11/CI-CAM ``model/cub_vgg16.py``.

* :class:`NonLocalBlock`: ``model_cub.py`` ``Self_Attn`` (embedded-Gaussian self-attention, a 1×1 mix
  conv and a BatchNorm initialised at zero, residual), so every block is the identity at initialisation.
* :class:`NonLocalCAM`: a backbone with a non-local block after blocks 2–5 (``model_cub.py``: after
  pool2, pool3, pool4 and conv5_3, i.e. before every VGG bottleneck but the first, and before the GAP),
  then GAP + one fully connected layer; the CAMs are ``W · X`` without the bias (``returnCAM_``).
* :class:`CICAMClassifier`: two weight-shared CAM branches on ``X`` and ``X^e = X + X ⊙ Conv1×1(Q_π)``
  and the context pool ``Q`` (CI-CAM Eqs. 7–8), a buffer saved with the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone

#: the blocks (1-based) followed by a non-local block (model_cub.py: after blocks 2, 3, 4 and 5)
NONLOCAL_AFTER = (2, 3, 4, 5)


class NonLocalBlock(nn.Module):
    """``model_cub.py`` ``Self_Attn``: ``x + BN(mix(V · softmax(Qᵀ K)ᵀ))`` with BN weight and bias 0."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 8)                       # Self_Attn: in_dim // 8
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.mix = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)                      # Self_Attn: constant_(bn.weight, 0.0)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)        # (B, hw, c/8): proj_query
        k = self.key(x).flatten(2)                          # (B, c/8, hw): proj_key
        attention = torch.softmax(q @ k, dim=-1)            # (B, hw, hw): softmax(energy)
        v = self.value(x).flatten(2)                        # (B, C, hw): proj_value
        out = (v @ attention.transpose(1, 2)).view(b, c, h, w)
        return self.bn(self.mix(out)) + x


class NonLocalCAM(nn.Module):
    """Backbone with non-local blocks → GAP → FC (``model_cub.py`` ``CNN``); CAMs ``W · X`` (``returnCAM_``)."""

    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.nonlocal_blocks = nn.ModuleDict(
            {str(i): NonLocalBlock(backbone.stage_channels[i - 1]) for i in NONLOCAL_AFTER})
        self.classifier = nn.Linear(backbone.out_channels, num_classes)   # model_cub.py: Linear(512, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``X``: the backbone's blocks, each of blocks 2–5 followed by its non-local block."""
        for i, block in enumerate(self.backbone.stages, start=1):
            x = block(x)
            if str(i) in self.nonlocal_blocks:
                x = self.nonlocal_blocks[str(i)](x)
        return x

    def head(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, cams)``: FC of the GAP (with bias) and ``M_i = Σ_k W_ik X_k`` (CI-CAM Eq. 1)."""
        cams = torch.einsum("kc,bchw->bkhw", self.classifier.weight, feats)
        return cams.mean((2, 3)) + self.classifier.bias, cams

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_cams(x)[0]

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_cams(x)[1]


def plain_bn(t: torch.Tensor) -> torch.Tensor:
    """CI-CAM's ``mask_bn`` on an ``(n, h, w)`` pool in training mode: each class plane minus its mean over
    h×w, over sqrt(biased variance + 1e-5); its affine weight 1 and bias 0 are never optimised
    (``train2.py`` leaves ``mask_bn`` out of Adam's groups)."""
    return F.batch_norm(t[None], None, None, training=True, eps=1e-5)[0]


def _fit(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(n, h, w)`` maps resized bilinearly to ``size`` when they differ (inputs of another size)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0]


class CICAMClassifier(NonLocalCAM):
    """NL-CCAM's network with CI-CAM's causal context pool ``Q`` (Eqs. 7–8) and a second, weight-shared
    CAM branch on the enhanced features. ``forward`` gives ``S^e`` and ``cams`` ``M^e`` (CI-CAM's final
    prediction; ``test2.py`` boxes ``compute_rois_down``)."""

    def __init__(self, backbone: Backbone, num_classes: int, pool_size: tuple[int, int], update_rate: float,
                 context_pool: bool = True):
        super().__init__(backbone, num_classes)
        self.update_rate = update_rate                                    # λ of Eq. 7
        self.use_pool = context_pool                    # False: train2.py --attention 0 (X^e = X, Q never updated)
        self.register_buffer("context_pool", torch.zeros(num_classes, *pool_size))   # Q: cub_vgg16.py self.mask
        self.context_attention = nn.Conv2d(num_classes, backbone.out_channels, 1)    # cub_vgg16.py mask2attention

    def enhance(self, feats: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """Eq. 8 ``X^e = X + X ⊙ Conv1×1(Q_π)``: image b's input to the conv holds ``Q_{π_b}`` in channel
        ``π_b`` and zeros elsewhere (cub_vgg16.py ``forward``, ``context_list``)."""
        pool = _fit(self.context_pool, feats.shape[-2:])
        context = torch.zeros(len(feats), *pool.shape, dtype=feats.dtype, device=feats.device)
        context[torch.arange(len(feats)), top] = pool[top]
        return feats + feats * self.context_attention(context)

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(S, M, S^e, M^e)``: the CAM branch on X and the weight-shared one on X^e (π = argmax S)."""
        feats = self.features(x)
        logits, cams = self.head(feats)
        if not self.use_pool:
            return logits, cams, logits, cams
        logits_e, cams_e = self.head(self.enhance(feats, logits.argmax(1)))
        return logits, cams, logits_e, cams_e

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, logits_e, cams_e = self.branches(x)
        return logits_e, cams_e

    @torch.no_grad()
    def update_pool(self, cams: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Eq. 7 ``Q ← BN(Q + λ·BN(M_π))``. As ``utils.py`` ``old_create_attention`` builds ``M_π``: each
        image whose top class π is one of its labels adds its map ``M_π`` to plane π (summed over the
        batch; other images add nothing); then ``update_mask`` applies the BN to every plane. Without the
        pool (``--attention 0``) nothing changes."""
        if not self.use_pool:
            return
        top = logits.argmax(1)
        right = labels[torch.arange(len(top)), top] > 0
        fresh = torch.zeros_like(self.context_pool)
        fresh.index_add_(0, top[right], _fit(cams[right, top[right]], fresh.shape[-2:]))
        self.context_pool.copy_(plain_bn(self.context_pool + self.update_rate * plain_bn(fresh)))


def combination_weights(num_classes: int, positive: int) -> torch.Tensor:
    """NL-CCAM's quadratic γ (IoU_check_cub_5.py ``returnCAM_``, ``function='quadratic'``): the first
    ``positive`` ranks get ``linspace(1, 0, positive)²``, the rest ``−linspace(0, −1, n − positive)²``
    (the code's ``thr = 100`` of 200 classes: the top half positive, the bottom half negative)."""
    high = torch.linspace(1, 0, positive, dtype=torch.float64) ** 2
    low = -torch.linspace(0, -1, num_classes - positive, dtype=torch.float64) ** 2
    return torch.cat([high, low])


def combinational_map(cams: torch.Tensor, scores: torch.Tensor, positive: int) -> torch.Tensor:
    """CI-CAM Eq. 3 / NL-CCAM ``returnCAM_``: ``H = Σ_k γ(k) M_{t_k}`` over the ``(n, h, w)`` class maps
    ranked by descending score (``logit.sort(1, True)``), minus its minimum (``cam - np.min(cam)``)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    gamma = combination_weights(len(scores), positive).to(cams.device)
    combined = torch.einsum("k,khw->hw", gamma, cams[order].double())
    return combined - combined.min()


# ------------------------------------------------------------------------------------------ training
class EpochScheduledAdam(torch.optim.Adam):
    """Adam on the reference codes' per-epoch schedule (NL-CCAM ``Metric.py`` / CI-CAM ``utils.py``
    ``poly_lr_scheduler``, called once per epoch): in epoch e of E each group runs at
    ``base_lr · (1 − e/E)^0.9 · decay_rate^⌊e / decay_epoch⌋``.

    The harness sets every group's lr to its per-step poly ``base_lr · (1 − it/total)^0.9`` before each
    step; that value gives the progress ``it/total`` and so the epoch, and :meth:`step` replaces it. So
    the schedule needs no change to the harness, only ``epochs`` (the model's ``epoch_schedule``)."""

    def __init__(self, groups: list[dict], *, epochs: int, decay_epoch: int = 0, decay_rate: float = 1.0,
                 betas: tuple[float, float] = (0.9, 0.999)):
        super().__init__(groups, betas=betas)                       # torch defaults: β (0.9, 0.999), eps 1e-8
        self.epochs, self.decay_epoch, self.decay_rate = epochs, decay_epoch, decay_rate

    def epoch_lr(self, base_lr: float, poly: float) -> float:
        """The group's lr in the epoch that the harness's per-step ``poly`` value falls in."""
        if base_lr <= 0:
            return poly
        progress = 1 - (poly / base_lr) ** (1 / 0.9)
        e = min(int(progress * self.epochs + 1e-6), self.epochs - 1)
        decay = self.decay_rate ** (e // self.decay_epoch) if self.decay_epoch > 0 else 1.0
        return base_lr * (1 - e / self.epochs) ** 0.9 * decay

    def step(self, closure=None):
        for group in self.param_groups:
            group["lr"] = self.epoch_lr(group["base_lr"], group["lr"])
        return super().step(closure)


def adam_groups(model: nn.Module, rates: dict[str, float], lr: float, weight_decay: float) -> list[dict]:
    """Parameter groups by name prefix, each at ``lr × rate`` (``""``: everything not matched)."""
    taken: set[int] = set()
    groups = []
    for prefix, rate in sorted(rates.items(), key=lambda kv: -len(kv[0])):
        params = [p for n, p in model.named_parameters() if n.startswith(prefix) and id(p) not in taken]
        taken |= {id(p) for p in params}
        groups.append({"params": params, "lr": lr * rate, "base_lr": lr * rate, "weight_decay": weight_decay})
    return [g for g in groups if g["params"]]
