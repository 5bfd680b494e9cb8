"""CPN (Zhang et al., "Complementary Patch for Weakly Supervised Semantic Segmentation", ICCV 2021).

SEAM's network plus the PRCM (:class:`wsssbench.models.cpn.CPNClassifier`) trained as a weight-shared
triplet on the image I and its complementary patch pair (I_h, I_h̄): I_h hides patches (grid S×S, S drawn
from ``cpn_grid``, or SLIC superpixels) with the normalised value 0 (the normalisation's mean colour), I_h̄
hides the rest, and λ is I_h's shown share. The loss is ``Ferenas/CPN`` ``train_cpn.py``'s:

- L_cls: the three branches' multi-label soft margins, averaged, plus SEAM's min-pooling term on each
  branch's refined maps, averaged (Eq. 13);
- L_tcp: mean |(λY_h + λ̄Y_h̄) − Y_o| on the max-normalised raw CAMs (the pair detached) plus the same on the
  refined CAMs (Eq. 14; the code does not detach the refined pair);
- L_cpcr: |onehot(Y_o − λY_h) − λ̄Ỹ_h̄| + |onehot(Y_o − λ̄Y_h̄) − λỸ_h| with background ``1 − max``,
  each keeping per image the top 20% of its (K+1)·h·w entries (OHEM, L_cpcr*; Eq. 15).

Every term is a setting (``cpn_tcp``, ``cpn_cpcr``, ``cpn_ohem``, ``cpn_pcm``, ``cpn_prcm``: Table 2),
as are the patch strategy and sizes (Figs. 6-7) and p_h (Table 4). Inference, seeds and the later stages
are SEAM's (infer_cam.py normalises as infer_SEAM.py; its final ``/ 2`` only rescales the background
sweep). ``docs/cpn.md`` gives each choice with its source.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsssbench.errors import UserError
from wsssbench.methods_api import METHODS, Recipe, derive

from .seam import PAPER as SEAM_PAPER, SEAMConfig, check as check_seam

PATCHES = ("superpixel", "grid")
SAMPLINGS = ("code", "paper")


@dataclass
class CPNConfig(SEAMConfig):
    """SEAM's config with CPN's; CPU-sized lengths, the paper's and code's values in comments."""

    cls_batch_size: int = 16            # train_cpn.py batch_size 4 (one GPU); SEAM's tiny 16 here
    cpn_patch: str = "superpixel"       # data.py hide_patch_ss (Tables 1-4); grid: hide_patch
    cpn_segments: int = 300             # imutils.py slic n_segments=300; paper S_N = 200 (Sec. 4.2, Fig. 6); < 32768
    cpn_compactness: float = 10.0       # imutils.py slic compactness=10
    cpn_grid: tuple[int, ...] = (56, 112)  # K, the grid sizes S at a cpn_grid_crop crop: paper K = {56, 112}
    #                                   (Fig. 7; imutils.py hide_patch leaves grid_sizes = [224, 448])
    cpn_grid_crop: int = 448            # the crop K is given for (paper: "the input size of the image is 448");
    #                                   S scales to cls_size (tiny's 64: {56, 112} -> {8, 16}), at least 1 px
    cpn_hide: float = 0.5               # p_h (Sec. 3.2, Table 4); imutils.py hide_prob 0.5 / the 0.5 of hide_patch_ss
    cpn_sampling: str = "code"          # code: hide_patch_ss draws ⌊(M+1)p_h⌋ labels with replacement, λ from
    #                                   pixels | paper: each patch hidden with p_h, λ = 1 − N_h/N
    cpn_tcp: bool = True                # L_tcp (Eq. 14)
    cpn_cpcr: bool = True               # L_cpcr (Eq. 15)
    cpn_ohem: bool = True               # L_cpcr*: keep the top seam_ohem (20%) pixel losses (train_cpn.py)
    cpn_pcm: bool = True                # SEAM's PCM in the refined CAM
    cpn_prcm: bool = True               # the PRCM in the refined CAM (Eqs. 11-12)

    def resolve(self, given: set[str]) -> None:
        check(self)


def check(cfg: CPNConfig) -> None:
    """One UserError for a CPN setting out of range."""
    check_seam(cfg)
    for name, allowed in (("cpn_patch", PATCHES), ("cpn_sampling", SAMPLINGS)):
        if getattr(cfg, name) not in allowed:
            raise UserError(f"--set {name}={getattr(cfg, name)}: use one of {', '.join(allowed)}")
    if not 0 < cfg.cpn_hide < 1:
        raise UserError(f"--set cpn_hide={cfg.cpn_hide}: the hiding probability p_h must lie in (0, 1)")
    if not 2 <= cfg.cpn_segments < 32768:
        raise UserError(f"--set cpn_segments={cfg.cpn_segments}: SLIC's segment count must lie in 2..32767")
    if cfg.cpn_compactness <= 0:
        raise UserError(f"--set cpn_compactness={cfg.cpn_compactness}: must be > 0")
    if not cfg.cpn_grid or min(cfg.cpn_grid) < 1 or cfg.cpn_grid_crop < 1:
        raise UserError(f"--set cpn_grid={','.join(map(str, cfg.cpn_grid))} / cpn_grid_crop={cfg.cpn_grid_crop}: "
                        "patch sizes and their crop must be >= 1 pixel")
    if cfg.cpn_cpcr and not (cfg.cpn_pcm or cfg.cpn_prcm):
        raise UserError("--set cpn_cpcr=true needs a refined CAM: switch cpn_pcm or cpn_prcm on")


# --- the losses (train_cpn.py) -----------------------------------------------------------------------


def onehot(x):
    """tool/imutils.py max_onehot: every channel, background included, zeroed where not the pixel's maximum."""
    return x * (x == x.amax(1, keepdim=True))


def cpcr_term(diff, refined, top: float | None):
    """One L_cpcr term: |onehot(diff) − refined|, the mean of each image's top ``top`` share of its entries
    (``None``: the plain mean)."""
    import torch
    loss = (onehot(diff) - refined).abs()
    if top is None:
        return loss.mean()
    n, c, h, w = loss.shape
    return torch.topk(loss.view(n, -1), k=int(c * h * w * top), dim=-1)[0].mean()


def cpn_losses(model, image, labels, shown, lam, *, tcp=True, cpcr=True, top: float | None = 0.2) -> dict:
    """train_cpn.py's loop body for one batch: ``image`` (B, 3, H, W), ``shown`` (B, 1, H, W) I_h's shown
    mask, ``lam`` (B,) λ. Returns the terms (their sum is the loss); no CP pair without L_tcp and L_cpcr
    (Table 2's baseline: L_cls(s_o) alone)."""
    import torch
    import torch.nn.functional as F

    from wsssbench.models.seam import max_norm, with_background

    from .seam import min_pooling_loss
    fg = labels[:, :, None, None].to(image.dtype)
    label = torch.cat([torch.ones_like(fg[:, :1]), fg], 1)
    branches, weights = [image], [1.0]
    if tcp or cpcr:
        branches += [image * shown, image * (1 - shown)]
        weights += [lam.view(-1, 1, 1, 1), (1 - lam).view(-1, 1, 1, 1)]
    cams, refs, cls, rvmin = [], [], [], []
    for x, wt in zip(branches, weights):
        cam, ref = model.seam_outputs(x)
        cls.append(F.multilabel_soft_margin_loss(cam.mean((2, 3)), labels))
        cams.append(wt * max_norm(cam) * fg)
        if ref is not None:
            rvmin.append(min_pooling_loss((ref * label)[:, 1:]))
            refs.append(wt * max_norm(ref) * label)
    terms = {"cls": sum(cls) / len(cls) + (sum(rvmin) / len(rvmin) if rvmin else 0)}
    if tcp:
        terms["tcp"] = ((cams[1] + cams[2]).detach() - cams[0]).abs().mean()
        if refs:
            terms["tcp"] = terms["tcp"] + (refs[0][:, 1:] - refs[1][:, 1:] - refs[2][:, 1:]).abs().mean()
    if cpcr:
        c = [with_background(m).detach() for m in cams]
        r = [with_background(m[:, 1:]) for m in refs]
        terms["cpcr"] = cpcr_term(c[0] - c[1], r[2], top) + cpcr_term(c[0] - c[2], r[1], top)
    return terms


# --- hooks -------------------------------------------------------------------------------------------


def build_classifier(ctx):
    """CPN's network on the configured backbone (resnet38_CPN.py Net)."""
    from wsssbench.models import build_backbone
    from wsssbench.models.cpn import CPNClassifier
    from wsssbench.stages.train_classifier import pretrained_source
    cfg = ctx.cfg
    check(cfg)
    backbone = build_backbone(cfg.backbone, pretrained=pretrained_source(cfg), output_stride=cfg.cls_output_stride)
    return CPNClassifier(backbone, ctx.num_fg, cfg.seam_dropout, cfg.seam_frozen, cfg.cpn_pcm, cfg.cpn_prcm)


#: SLIC labels already computed in this process, by image content and settings (every epoch and the
#: segmenter's batches ask again), up to SLIC_CACHE_BYTES; beyond it they are recomputed.
_SLIC: dict = {}
SLIC_CACHE_BYTES = 256 << 20


def superpixels(image: np.ndarray, segments: int, compactness: float) -> np.ndarray:
    """The SLIC labels (int16) of the (H, W, 3) uint8 ``image``, normalised as the classifier sees it."""
    import hashlib

    from wsssbench.models.cpn import slic_labels
    from wsssbench.stages.common import to_tensor
    key = (hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest(), image.shape,
           segments, compactness)
    labels = _SLIC.get(key)
    if labels is None:
        labels = slic_labels(to_tensor(image).numpy(), segments, compactness).astype(np.int16)
        if sum(v.nbytes for v in _SLIC.values()) + labels.nbytes <= SLIC_CACHE_BYTES:
            _SLIC[key] = labels
    return labels


def extra_inputs(ctx, sample):
    """Super-pixel Patch: the SLIC labels of the normalised image (rescaled nearest, flipped and cropped
    with it; the crop's padding is label 0)."""
    cfg = ctx.cfg
    if cfg.cpn_patch != "superpixel" or not (cfg.cpn_tcp or cfg.cpn_cpcr):
        return {}
    return {"superpixels": superpixels(ctx.dataset.load_image(sample), cfg.cpn_segments, cfg.cpn_compactness)}


def grid_sizes(cfg) -> tuple[int, ...]:
    """K in pixels of the training crop: each S × cls_size / cpn_grid_crop, rounded, at least 1."""
    return tuple(max(1, round(s * cfg.cls_size / cfg.cpn_grid_crop)) for s in cfg.cpn_grid)


def cp_masks(cfg, batch):
    """(B, 1, H, W) shown masks of I_h and (B,) λ for the batch, per image as data.py does."""
    import torch

    from wsssbench.models.cpn import grid_pair, superpixel_pair
    image = batch["image"]
    n, _, h, w = image.shape
    sizes = grid_sizes(cfg)
    pairs = [superpixel_pair(batch["superpixels"][i, 0].cpu().numpy(), cfg.cpn_hide, cfg.cpn_sampling)
             if cfg.cpn_patch == "superpixel" else grid_pair(h, w, sizes, cfg.cpn_hide) for i in range(n)]
    shown = torch.stack([p[0] for p in pairs])[:, None].to(image)
    return shown, torch.tensor([p[1] for p in pairs], dtype=image.dtype, device=image.device)


def train_step(ctx, model, batch):
    """train_cpn.py: L_cls + L_tcp + L_cpcr (w1 = w2 = w3 = 1, Eq. 17) on the triplet (I, I_h, I_h̄)."""
    cfg = ctx.cfg
    pair = cfg.cpn_tcp or cfg.cpn_cpcr
    shown, lam = cp_masks(cfg, batch) if pair else (None, None)
    terms = cpn_losses(model, batch["image"], batch["labels"], shown, lam, tcp=cfg.cpn_tcp, cpcr=cfg.cpn_cpcr,
                       top=cfg.seam_ohem if cfg.cpn_ohem else None)
    return sum(terms.values())


def build_seam_prcm(ctx):
    """SEAM* (Table 1): SEAM's network with the PRCM beside its PCM, trained with SEAM's losses."""
    from wsssbench.models import build_backbone
    from wsssbench.models.cpn import CPNClassifier
    from wsssbench.stages.train_classifier import pretrained_source
    cfg = ctx.cfg
    check_seam(cfg)
    backbone = build_backbone(cfg.backbone, pretrained=pretrained_source(cfg), output_stride=cfg.cls_output_stride)
    return CPNClassifier(backbone, ctx.num_fg, cfg.seam_dropout, cfg.seam_frozen)


METHODS.add("seam_prcm", derive(
    METHODS.get("seam"),
    name="seam_prcm",
    config=SEAMConfig,
    summary="SEAM* (CPN Table 1): SEAM with CPN's PRCM beside its PCM",
    build_classifier=build_seam_prcm,
))

#: SEAM's paper classifier and CAM settings (ResNet-38, crop 448 after RandomResizeLong(448, 768), colour jitter,
#: SEAM's PolyOptimizer, lr 0.01, 8 epochs, 4 scales with flips, α 16: CPN's train_cpn.py / infer_cam.py are SEAM's
#: with the CP branches added) at CPN's batch 4 (Sec. 4.1, one GPU), then the paper's CP settings where its text and
#: the code differ, and IRN's random walk for the pseudo-masks (Sec. 4.3) with IRN's own walk settings.
PAPER = Recipe("paper", "SEAM's paper classifier at batch 4, the paper's CP settings (S_N = 200, each patch hidden "
               "with p_h, λ = 1 − N_h/N; Sec. 3.2, 4.2) and IRN's random walk (Sec. 4.3, β = 10)", (
    *((k, v) for k, v in SEAM_PAPER.settings if not k.startswith(("rw_", "expansion"))),
    ("cls_batch_size", 4),                  # Sec. 4.1 / train_cpn.py batch_size 4
    ("cpn_segments", 200), ("cpn_sampling", "paper"),
    ("expansion", "rw"), ("rw_beta", 10.0),
))


METHODS.add("cpn", derive(
    METHODS.get("seam"),
    name="cpn",
    config=CPNConfig,
    summary="CPN: complementary patch pairs, triplet CP losses and PRCM on SEAM (Zhang et al. 2021)",
    build_classifier=build_classifier,
    train_step=train_step,
    extra_inputs=extra_inputs,
    recipes=(PAPER,),
))
