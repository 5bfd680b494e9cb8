"""DSRG (Huang et al., "Weakly-Supervised Semantic Segmentation Network with Deep Seeded Region Growing", CVPR 2018).

The CAM baseline's classifier gives the foreground seeds (the top 20% of each labelled class's CAM);
saliency gives the background seeds (normalised saliency below 0.06). The segmentation network trains
on the seeds *growing as it learns*: at every step (``speedinghzl/DSRG``, ``pylayers/pylayers.py``)

1. its softmax (plus 1e-4, renormalised: ``SoftmaxLayer``) is refined by a dense CRF (``DSRGLayer.refinement``);
2. the seeds grow over every 8-connected region of pixels whose refined probability of a labelled class
   exceeds the similarity threshold (0.85 foreground, 0.99 background) and that touches a seed of that
   class (``generate_seed_step``);
3. the loss is the balanced seeding loss on the grown seeds (``BalancedSeedLossLayer``) plus the boundary
   loss, the KL divergence between the CRF output and the softmax (``ConstrainLossLayer``).

The seeds are this method's pseudo-masks (``expand``: the ``pseudo`` numbers score the seeds, 255 =
unlabelled); the region growing and both losses are ``seg_step``. ``docs/dsrg.md`` gives each choice with
its source, the reference quirks kept, and the side-by-side checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsssbench.errors import UserError
from wsssbench.methods_api import METHODS, SEG_OPTIMIZERS, CamConfig, Method, Recipe

MIN_PROB = 1e-4                     # pylayers.py line 20: min_prob = 0.0001
SEED_RULES = ("pixels", "max")
BOUNDARY_GRADIENTS = ("caffe", "none")


@dataclass
class DSRGConfig(CamConfig):
    """CAM's classifier and CAMs, DSRG's seeds and segmenter; CPU-sized lengths, CONTA appendix 3.3's in comments."""

    # --- seeds (CONTA appendix 3.3 "Hyper-parameters"; DSRG Sec. 4.1)
    seed_fg_top: float = 0.2            # the top 20% of each class's CAM values are its foreground seeds
    seed_fg_rule: str = "pixels"        # pixels: the class's top 20% of pixels | max: CAM >= 20% of its max
    seed_saliency: float = 0.06         # normalised saliency below this is a background seed
    saliency_dir: str | None = None     # one PNG per image id (DSRG's DRFI maps); None: the synthetic benchmark's own
    # --- segmenter (appendix 3.3: ResNet-101 DeepLab OS 16, crop 321, batch 20, 10,000 iterations, SGD lr 5e-4
    # /10 every 2,000, momentum 0.9, wd 5e-4); the seeds grow on its output grid (DSRG: 41 x 41)
    seg_output_stride: int = 8          # appendix: 16; tiny's 64-px crops give an 8 x 8 grid at 8
    seg_iterations: int = 300           # appendix: 10,000
    seg_batch_size: int = 8             # appendix: 20
    seg_lr: float = 0.001               # appendix: 5e-4 (ImageNet ResNet-101); tiny: 0.01 overshoots with the
    #                                   head's 10x / 20x (seg mIoU 29.4 vs 49.8 at 0.001; docs/dsrg.md)
    seg_lr_step: int = 0                # appendix: 2,000 (lr / 10); 0: poly 0.9 for the short CPU run
    seg_optimizer: str = "dsrg"         # Caffe's lr_mult / decay_mult: weights 1x, biases 2x (no decay), head 10x / 20x
    seg_grow_fg: float = 0.85           # train-s.prototxt DSRGLayer th2 0.85: the foreground threshold
    seg_grow_bg: float = 0.99           # train-s.prototxt th1 0.99 (the appendix swaps the two: see docs/dsrg.md)
    seg_boundary_gradient: str = "caffe"  # caffe: CRFLayer.backward's (1 - Q) pass-through | none: CRF output constant

    def resolve(self, given: set[str]) -> None:
        check(self)


def setting(cfg, name: str):
    """A DSRG setting of ``cfg``, or DSRG's default where ``cfg`` is another method's (CONTA's ``base=dsrg``)."""
    return getattr(cfg, name, getattr(DSRGConfig, name))


def check(cfg) -> None:
    """One UserError for a DSRG setting out of range."""
    top, rule = setting(cfg, "seed_fg_top"), setting(cfg, "seed_fg_rule")
    if not 0 < top <= 1:
        raise UserError(f"--set seed_fg_top={top}: the foreground share must lie in (0, 1]")
    if rule not in SEED_RULES:
        raise UserError(f"--set seed_fg_rule={rule}: use one of {', '.join(SEED_RULES)}")
    for name in ("seed_saliency", "seg_grow_fg", "seg_grow_bg"):
        if not 0 <= setting(cfg, name) <= 1:
            raise UserError(f"--set {name}={setting(cfg, name)}: must lie in [0, 1]")
    if setting(cfg, "seg_output_stride") not in (8, 16, 32):
        raise UserError(f"--set seg_output_stride={setting(cfg, 'seg_output_stride')}: use 8, 16 or 32")
    if setting(cfg, "seg_boundary_gradient") not in BOUNDARY_GRADIENTS:
        raise UserError(f"--set seg_boundary_gradient={setting(cfg, 'seg_boundary_gradient')}: "
                        f"use one of {', '.join(BOUNDARY_GRADIENTS)}")


# --- seeds ----------------------------------------------------------------------------------------------


def foreground_seeds(cams: np.ndarray, keys: np.ndarray, top: float = 0.2, rule: str = "pixels") -> np.ndarray:
    """(H, W) int64: 1 + the class index of each foreground seed, 0 elsewhere. A class seeds its
    ``top`` share of pixels (``pixels``: CAM at or above its (1 - top) quantile) or its pixels at or
    above ``top`` × its maximum (``max``), positive CAM only; where classes overlap, the larger CAM wins.

    >>> cams = np.array([[[0.0, 0.1, 0.5, 1.0, 0.9]]])
    >>> foreground_seeds(cams, np.array([2]), 0.2).tolist(), foreground_seeds(cams, np.array([2]), 0.2, "max").tolist()
    ([[0, 0, 0, 3, 0]], [[0, 0, 3, 3, 3]])
    """
    out = np.zeros(cams.shape[1:], np.int64)
    best = np.zeros(cams.shape[1:], cams.dtype)
    for key, cam in zip(keys, cams):
        cut = np.quantile(cam, 1 - top) if rule == "pixels" else top * cam.max()
        seed = (cam >= cut) & (cam > 0) & (cam > best)
        out[seed], best[seed] = key + 1, cam[seed]
    return out


def seed_mask(cams: np.ndarray, keys: np.ndarray, saliency: np.ndarray, *, top: float = 0.2, rule: str = "pixels",
              bg_saliency: float = 0.06) -> np.ndarray:
    """(H, W) uint8 localisation cues: the foreground seeds (class + 1), background 0 where the
    normalised saliency is below ``bg_saliency`` and no foreground seed lies, 255 elsewhere."""
    fg = foreground_seeds(cams, keys, top, rule)
    out = np.full(fg.shape, 255, np.uint8)
    out[saliency < bg_saliency] = 0
    out[fg > 0] = fg[fg > 0]
    return out


def expand(ctx, cams_dir: Path, out_dir: Path) -> None:
    """The seeds of every image with CAMs in ``cams_dir``, written as ``<id>.png`` into ``out_dir``."""
    from wsssbench.cams import load_cams
    from wsssbench.data.saliency import load_saliency
    from wsssbench.stages.expand import save_mask
    ds, cfg = ctx.dataset, ctx.cfg
    if not ds.has_background:
        raise UserError(f"dsrg: {ds.name or 'this dataset'} has no background class; DSRG segments with one")
    samples = {}
    for split in ds.split_names():
        for s in ds.samples(split):
            if s.id not in samples or samples[s.id].mask is None:
                samples[s.id] = s
    for path in sorted(Path(cams_dir).glob("*.npz")):
        cam = load_cams(path)
        sal = load_saliency(ds, samples[path.stem], setting(cfg, "saliency_dir"))
        save_mask(Path(out_dir) / f"{path.stem}.png", seed_mask(
            cam.cams, cam.keys, sal, top=setting(cfg, "seed_fg_top"), rule=setting(cfg, "seed_fg_rule"),
            bg_saliency=setting(cfg, "seed_saliency")))


# --- region growing and the losses (pylayers/pylayers.py) --------------------------------------------------


def grow_seeds(labels: np.ndarray, seeds: np.ndarray, probs: np.ndarray, fg: float = 0.85,
               bg: float = 0.99) -> np.ndarray:
    """One image's seeded region growing, ``generate_seed_step`` (pylayers.py lines 237-275), vectorised.

    ``labels`` (C,) image labels with the background 1; ``seeds`` (C, h, w) 0/1 cues; ``probs``
    (C, h, w) the CRF-refined probabilities. Each pixel takes the labelled class of highest
    probability if that exceeds ``fg`` (a foreground class) or both ``fg`` and ``bg`` (background:
    line 253 tests th2 first); other pixels keep their seed class (line 250, the last class of
    several). A class then grows over every 8-connected region of its pixels that holds one of its
    seeds, except pixels that are one other class's seed (lines 268-269; they still connect the region).
    Returns the grown seeds (C, h, w), a new array.
    """
    import cv2
    seeds = np.array(seeds, dtype=np.float32)
    present = np.flatnonzero(labels == 1)
    label_map = np.zeros(seeds.shape[1:], np.int64)
    for c in range(len(seeds)):                 # np.where order: class-major, so the last class wins
        label_map[seeds[c] > 0] = c + 1
    chosen = probs[present]
    cls, value = present[chosen.argmax(0)], chosen.max(0)
    grow = (value > fg) & ((cls != 0) | (value > bg))
    label_map[grow] = cls[grow] + 1
    for c in present:
        region = label_map == c + 1
        _, comp = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
        hit = np.unique(comp[region & (seeds[c] == 1)])
        keep = region & np.isin(comp, hit) & ~((seeds[c] != 1) & (seeds.sum(0) == 1))
        seeds[c][keep] = 1
    return seeds


def softmax_probs(logits):
    """``SoftmaxLayer`` (lines 23-51): softmax + 1e-4, renormalised; then the 1e-4 floor ``CRFLayer.forward``
    writes into that blob in place (line 67), which every later layer reads (the gradient passes through)."""
    import torch
    probs = torch.softmax(logits, 1) + MIN_PROB
    probs = probs / probs.sum(1, keepdim=True)
    return probs + (probs.clamp(min=MIN_PROB) - probs).detach()


def balanced_seed_loss(probs, seeds):
    """``BalancedSeedLossLayer`` (lines 120-152): the mean over images of −Σ log p on background seeds
    over their count, plus the same over the foreground seeds of every class (counts floored at 1e-4)."""
    import torch
    log = torch.log(probs)
    bg = (seeds[:, 0] * log[:, 0]).sum((1, 2)) / seeds[:, 0].sum((1, 2)).clamp(min=MIN_PROB)
    fg = (seeds[:, 1:] * log[:, 1:]).sum((1, 2, 3)) / seeds[:, 1:].sum((1, 2, 3)).clamp(min=MIN_PROB)
    return -bg.mean() - fg.mean()


def boundary_loss(probs, crf_probs, gradient: str = "caffe"):
    """``ConstrainLossLayer`` (lines 154-180): mean over pixels of Σ_c Q log clip(Q / P, 0.05, 20), Q the
    CRF output. ``caffe``: the gradient that reaches log Q also reaches P times (1 − Q), as
    ``CRFLayer.backward`` (lines 90-92) passes it; ``none``: Q is a constant (the PyTorch ports)."""
    import torch
    q = crf_probs.detach()
    log_q = torch.log(q)
    if gradient == "caffe":
        log_q = log_q + (1 - q) * (probs - probs.detach())
    q = torch.exp(log_q)
    return (q * torch.log(torch.clamp(q / probs, 0.05, 20))).sum(1).mean()


def crf_refine(images: np.ndarray, probs: np.ndarray, scale_factor: float = 12.0, iterations: int = 10) -> np.ndarray:
    """``DSRGLayer.refinement`` / ``CRFLayer.forward`` (lines 63-88, 310-331) on (B, C, h, w) probabilities
    and (B, h, w, 3) uint8 images: krahenbuhl2013 ``CRF`` (CRF/krahenbuhl2013/CRF.py) with unary energy
    −p (the probability, not its log), bilateral w 10 xy 80/12 rgb 13, Gaussian w 3 xy 3/12; the result
    floored at 1e-4 and renormalised."""
    import pydensecrf.densecrf as dcrf
    b, c, h, w = probs.shape
    out = np.empty(probs.shape, np.float64)
    for i in range(b):
        d = dcrf.DenseCRF2D(w, h, c)
        d.setUnaryEnergy(np.ascontiguousarray(-probs[i].reshape(c, -1), dtype=np.float32))
        d.addPairwiseGaussian(sxy=3 / scale_factor, compat=3)
        d.addPairwiseBilateral(sxy=80 / scale_factor, srgb=13, rgbim=np.ascontiguousarray(images[i]), compat=10)
        out[i] = np.array(d.inference(iterations)).reshape(c, h, w)
    out[out < MIN_PROB] = MIN_PROB
    return out / out.sum(1, keepdims=True)


def crf_images(images, size) -> np.ndarray:
    """The normalised batch as the CRF sees it (lines 315-319): back to 0-255, resized linearly with
    the corners aligned (scipy ``zoom(order=1)``) to the output grid, rounded; (B, h, w, 3) uint8."""
    import torch
    import torch.nn.functional as F

    from wsssbench.stages.common import MEAN, STD
    mean, std = (torch.tensor(v, device=images.device).view(1, 3, 1, 1) for v in (MEAN, STD))
    rgb = (images.float() * std + mean) * 255
    rgb = F.interpolate(rgb, size=tuple(size), mode="bilinear", align_corners=True)
    return rgb.round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def seg_step(ctx, model, batch):
    """Softmax → CRF → region growing on the seeds (``mask``) → seeding loss + boundary loss."""
    import torch
    import torch.nn.functional as F
    cfg = ctx.cfg
    logits = model(batch["image"]).float()
    probs = softmax_probs(logits)
    size = logits.shape[2:]
    refined = crf_refine(crf_images(batch["image"], size), probs.detach().cpu().numpy())
    mask = F.interpolate(batch["mask"][:, None].float(), size=size, mode="nearest-exact")[:, 0].long()
    c = logits.shape[1]
    seeds = (mask[:, None] == torch.arange(c, device=mask.device).view(1, c, 1, 1)).float().cpu().numpy()
    labels = torch.cat([torch.ones_like(batch["labels"][:, :1]), batch["labels"]], 1).cpu().numpy()
    grown = np.stack([grow_seeds(lab, s, p, setting(cfg, "seg_grow_fg"), setting(cfg, "seg_grow_bg"))
                      for lab, s, p in zip(labels, seeds, refined)])
    grown = torch.from_numpy(grown).to(logits.device)
    refined = torch.from_numpy(refined).to(logits.device, torch.float32)
    return balanced_seed_loss(probs, grown) + boundary_loss(probs, refined, setting(cfg, "seg_boundary_gradient"))


def build_segmenter(ctx):
    """DeepLab-v2 (ASPP 6/12/18/24) on ``seg_backbone`` at ``seg_output_stride``, single scale (DSRG has no MSC)."""
    from wsssbench.models import DeepLabV2, build_backbone
    from wsssbench.stages.train_classifier import pretrained_source
    cfg = ctx.cfg
    backbone = cfg.seg_backbone or cfg.backbone
    weights = cfg.seg_weights or (pretrained_source(cfg) if backbone == cfg.backbone else None)
    net = build_backbone(backbone, pretrained=weights, output_stride=setting(cfg, "seg_output_stride"))
    return DeepLabV2(net, ctx.dataset.num_classes, msc_scales=())


def dsrg_optimizer(model, lr: float, weight_decay: float):
    """``seg_optimizer=dsrg``: train-s.prototxt's ``lr_mult``/``decay_mult``: backbone weights 1x with decay,
    biases 2x without; the classifier head (fc8, here ASPP) 10x and 20x; SGD momentum 0.9."""
    import torch
    groups = {(head, bias): [] for head in (False, True) for bias in (False, True)}
    for name, p in model.named_parameters():
        groups[(name.startswith("aspp."), name.endswith("bias"))].append(p)
    mult = {(False, False): 1, (False, True): 2, (True, False): 10, (True, True): 20}
    return torch.optim.SGD([{"params": ps, "lr": lr * mult[k], "base_lr": lr * mult[k],
                             "weight_decay": 0.0 if k[1] else weight_decay} for k, ps in groups.items() if ps],
                           lr=lr, momentum=0.9)


SEG_OPTIMIZERS.add("dsrg", dsrg_optimizer)

#: CONTA appendix 3.3 for the segmenter; the classifier and CAMs are CAM's paper recipe (IRN's ResNet-50).
PAPER = Recipe("paper", "CAM's paper classifier; CONTA appendix 3.3's DSRG: ResNet-101 DeepLab OS 16 (ImageNet), "
                        "crop 321, batch 20, 10k iterations, lr 5e-4 / 10 every 2k", (
    *((k, v) for k, v in METHODS.get("cam").recipe("paper").settings if not k.startswith("seg_")),
    ("seg_backbone", "resnet101"), ("seg_weights", "torchvision"), ("seg_output_stride", 16), ("seg_size", 321),
    ("seg_scales", (1.0,)),             # "cropped into a fix size of 321 x 321 using zero padding if needed"
    ("seg_batch_size", 20), ("seg_iterations", 10000), ("seg_lr", 5e-4), ("seg_lr_step", 2000),
    ("seg_weight_decay", 5e-4), ("seg_optimizer", "dsrg")))

METHODS.add("dsrg", Method(
    name="dsrg",
    config=DSRGConfig,
    summary="DSRG: seeds from CAM and saliency grown during segmentation training (Huang et al. 2018)",
    expand=expand,
    build_segmenter=build_segmenter,
    seg_step=seg_step,
    recipes=(PAPER,),
))
