"""SEC (Kolesnikov & Lampert, "Seed, Expand and Constrain", ECCV 2016), one of CONTA's four baselines.

The CAM classifier gives localisation cues (the ``expand`` hook writes them as masks: class, background
or 255 = no cue); the segmentation network (:class:`wsssbench.models.sec.SECNet`, VGG-16 LargeFOV)
then trains on three losses of its softmax at stride 8 (``seg_step``), as kolesman/SEC's Caffe layers
(``pylayers/pylayers/pylayers.py``) compute them:

- **seed**: −log p of each cue's class, averaged over the image's cues, then over the batch;
- **expand**: global weighted rank pooling (GWRP) of each class map, decay 0.996 for foreground and
  0.999 for background; −log GWRP of the present classes, −log(1 − max p) of the absent ones, each
  averaged over its classes, −log GWRP of the background;
- **constrain**: KL(Q ‖ p) per pixel, Q the dense CRF of the scores on the image resized to the output
  (Q a constant: the CRF layer passes no gradient).

``docs/sec.md`` gives each choice with its source, the side-by-side checks and what differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsssbench.errors import UserError
from wsssbench.methods_api import METHODS, SEG_OPTIMIZERS, CamConfig, Method, Recipe


@dataclass
class SECConfig(CamConfig):
    """CAM's classifier and CAMs, SEC's cues and segmentation network; CPU-sized, the paper's in comments."""

    expansion: str = "none"             # unused: the expand hook writes SEC's cues
    expansion_fg_ratio: float = 0.2     # fg cue: CAM > 0.2 x its max (weak-localization/foreground/localization.ipynb;
    #                                   CONTA appendix 3.4 "top 20%")
    expansion_bg_ratio: float = 0.1     # bg cue: the lowest 10% (weak-localization/background/localization.ipynb)
    seg_backbone: str | None = None     # appendix 3.4 / train.prototxt: vgg16 (ImageNet weights, vgg16_20M.caffemodel)
    seg_iterations: int = 600           # solver.prototxt max_iter 8000 (appendix: 8,000); tiny from random init
    #                                   predicts all background until ~300 (seg mIoU 17.0 at 300 / step 100, 37.4 here)
    seg_batch_size: int = 8             # train.prototxt batch_size 15 (appendix: 15)
    seg_lr: float = 0.01                # solver.prototxt base_lr 0.001 (appendix: 0.001); fc8 x10, biases x2
    seg_lr_step: int = 300              # solver.prototxt stepsize 2000, gamma 0.1 (appendix: /10 every 2,000)
    seg_weight_decay: float = 5e-4      # solver.prototxt weight_decay 0.0005 (appendix)
    seg_optimizer: str = "sec"          # train.prototxt lr_mult 1/2 (conv w/b), 10/20 (fc8 w/b), decay_mult 0 on biases
    seg_size: int = 64                  # train.prototxt new_height/new_width 321 (appendix: crop 321)
    seg_sec_channels: int = 1024        # fc6/fc7 num_output 1024 (appendix)
    seg_sec_dilation: int = 12          # fc6 dilation 12 (DeepLab-LargeFOV)
    seg_sec_dropout: float = 0.5        # drop6/drop7 dropout_ratio 0.5 (appendix)
    seg_sec_q_fg: float = 0.996         # pylayers.py:155 q_fg
    seg_sec_q_bg: float = 0.999         # pylayers.py:162 q_bg
    seg_sec_min_prob: float = 1e-4      # pylayers.py:13 min_prob (softmax and CRF outputs)
    seg_sec_crf_scale: float = 12.0     # pylayers.py:71 scale_factor 12: xy kernels of CRF.py divided by 12
    seg_sec_crf_iterations: int = 10    # krahenbuhl2013/CRF.py maxiter 10

    def resolve(self, given: set[str]) -> None:
        check(self)


#: appendix 3.4 and kolesman/SEC training/solver.prototxt, train.prototxt (the CONTA runs' SEC)
PAPER = Recipe("paper", "CONTA appendix 3.4 / kolesman/SEC: VGG-16 LargeFOV, 321 px, batch 15, 8k iterations", (
    ("seg_backbone", "vgg16"), ("seg_iterations", 8000), ("seg_batch_size", 15), ("seg_lr", 1e-3),
    ("seg_lr_step", 2000), ("seg_size", 321)))


def setting(cfg, name: str):
    """A SEC setting of ``cfg``, or SEC's default where ``cfg`` is another method's (CONTA's ``base=sec``)."""
    return getattr(cfg, name, getattr(SECConfig, name))


def check(cfg) -> None:
    """One UserError for a SEC setting out of range."""
    for name in ("expansion_fg_ratio", "expansion_bg_ratio"):
        if not 0 <= setting(cfg, name) < 1:
            raise UserError(f"--set {name}={setting(cfg, name)}: must lie in [0, 1)")
    for name in ("seg_sec_q_fg", "seg_sec_q_bg"):
        if not 0 < setting(cfg, name) <= 1:
            raise UserError(f"--set {name}={setting(cfg, name)}: a GWRP decay must lie in (0, 1]")
    if not 0 < setting(cfg, "seg_sec_min_prob") < 0.5:
        raise UserError(f"--set seg_sec_min_prob={setting(cfg, 'seg_sec_min_prob')}: must lie in (0, 0.5)")
    if not 0 <= setting(cfg, "seg_sec_dropout") < 1:
        raise UserError(f"--set seg_sec_dropout={setting(cfg, 'seg_sec_dropout')}: must lie in [0, 1)")
    for name in ("seg_sec_channels", "seg_sec_dilation", "seg_sec_crf_iterations"):
        if setting(cfg, name) < 1:
            raise UserError(f"--set {name}={setting(cfg, name)}: must be at least 1")
    if setting(cfg, "seg_sec_crf_scale") <= 0:
        raise UserError(f"--set seg_sec_crf_scale={setting(cfg, 'seg_sec_crf_scale')}: must be positive")


# --- localisation cues (the expand hook) -----------------------------------------------------------------


def cues_from_cams(cams: np.ndarray, keys: np.ndarray, fg_ratio: float, bg_ratio: float) -> np.ndarray:
    """SEC's cues as a (H, W) uint8 mask: c + 1 where class c's CAM exceeds ``fg_ratio`` of its max, 0 on
    background, 255 elsewhere.

    Foreground follows SEC's ``localization.ipynb`` (``heat_map > 0.2 * max``). SEC's background is the
    10% of pixels least salient for a classification network (``grad < sorted(grad)[int(0.1 N)]``, the
    gradient of all class scores); the hook has the CAMs, not the classifier, so the saliency here is
    the largest CAM, and ties at the threshold all count (ReLU'd CAMs are often exactly 0). A pixel cued
    twice takes the foreground class with the largest CAM (SEC's cue file has no overlaps).

    >>> cams = np.array([[[1.0, 0.5, 0.1, 0.0]], [[0.0, 0.6, 0.0, 0.0]]], np.float32)
    >>> cues_from_cams(cams, np.array([2, 4]), 0.2, 0.0).tolist()     # bg: the lowest value, ties included
    [[3, 5, 255, 0]]
    """
    if not len(cams):
        return np.zeros(cams.shape[1:], np.uint8)
    peak = cams.reshape(len(cams), -1).max(1)[:, None, None]
    fg = cams > fg_ratio * peak
    scored = np.where(fg, cams, -np.inf)
    mask = np.full(cams.shape[1:], 255, np.uint8)
    saliency = cams.max(0)
    threshold = np.sort(saliency.ravel())[int(bg_ratio * saliency.size)]
    mask[saliency <= threshold] = 0
    cued = fg.any(0)
    mask[cued] = (keys + 1).astype(np.uint8)[scored.argmax(0)][cued]
    return mask


def expand(ctx, cams_dir: Path, out_dir: Path) -> None:
    """Write each image's cues (:func:`cues_from_cams`) as ``<id>.png``: the masks the segmenter reads."""
    from wsssbench.cams import load_cams
    from wsssbench.stages.expand import save_mask
    if not ctx.dataset.has_background:
        raise UserError("sec: SEC's cues and losses need a background class; this dataset has none")
    cfg = ctx.cfg
    for path in sorted(Path(cams_dir).glob("*.npz")):
        cam = load_cams(path)
        save_mask(Path(out_dir) / f"{path.stem}.png", cues_from_cams(
            cam.cams, cam.keys, setting(cfg, "expansion_fg_ratio"), setting(cfg, "expansion_bg_ratio")))


# --- the three losses (pylayers.py) ----------------------------------------------------------------------


def smoothed_softmax(scores, min_prob: float = 1e-4):
    """pylayers.py:26-29 SoftmaxLayer: softmax over classes, plus ``min_prob``, renormalised (no log 0)."""
    import torch
    probs = torch.softmax(scores, dim=1) + min_prob
    return probs / probs.sum(1, keepdim=True)


def seed_loss(probs, cues):
    """pylayers.py:92-93 SeedLossLayer: −Σ cues · log p / (number of cues), per image, averaged.

    ``cues`` (B, C, h, w) one-hot (0 where no cue). An image without cues adds 0 (the reference divides by 0).
    """
    import torch
    count = cues.sum((1, 2, 3)).clamp(min=1)
    return -((cues * torch.log(probs)).sum((1, 2, 3)) / count).mean()


def gwrp(maps, q: float):
    """Global weighted rank pooling (pylayers.py:153-167): (B, C, h, w) → (B, C).

    The values sorted in decreasing order weighted 1, q, q², …, divided by Σ weights; q = 1 is the mean,
    q → 0 the max.
    """
    import torch
    flat = maps.flatten(2).sort(dim=2, descending=True).values
    weights = q ** torch.arange(flat.shape[2], device=maps.device, dtype=maps.dtype)
    return (flat * weights).sum(2) / weights.sum()


def expand_loss(probs, labels, q_fg: float = 0.996, q_bg: float = 0.999):
    """pylayers.py:148-175 ExpandLossLayer; ``probs`` (B, 1 + n, h, w) with background first, ``labels``
    (B, n) multi-hot foreground classes.

    −mean_b Σ_present log GWRP_fg / #present − mean_b Σ_absent log(1 − max p) / #absent − mean_b log GWRP_bg.
    An image with no present (or no absent) class adds 0 to that term (the reference divides by 0).
    """
    import torch
    present = (labels > 0.5).to(probs.dtype)
    fg = probs[:, 1:]
    pooled = gwrp(fg, q_fg)
    peak = fg.flatten(2).max(2).values
    loss_present = -((present * torch.log(pooled)).sum(1) / present.sum(1).clamp(min=1)).mean()
    loss_absent = -(((1 - present) * torch.log(1 - peak)).sum(1) / (1 - present).sum(1).clamp(min=1)).mean()
    loss_bg = -torch.log(gwrp(probs[:, :1], q_bg)[:, 0]).mean()
    return loss_present + loss_absent + loss_bg


def constrain_loss(probs, crf_log_probs):
    """pylayers.py:118-120 ConstrainLossLayer: mean over pixels of Σ_c Q log(Q / p), Q = exp(CRF log-probs),
    a constant (CRFLayer.backward sets no gradient)."""
    import torch
    q = crf_log_probs.detach().exp()
    return (q * (crf_log_probs.detach() - torch.log(probs))).sum(1).mean()


def crf_log_probs(scores, images: np.ndarray, *, scale: float = 12.0, iterations: int = 10,
                  min_prob: float = 1e-4):
    """pylayers.py:56-77 CRFLayer: the dense CRF of ``scores`` (B, C, h, w) on ``images`` (B, h, w, 3) uint8,
    clipped below at ``min_prob``, renormalised, log.

    Potentials (krahenbuhl2013/CRF.py): Gaussian sxy 3/scale weight 3, bilateral sxy 80/scale srgb 13
    weight 10. The unary is −log softmax (the toolkit's :func:`dense_crf`; the reference sets −scores,
    the same up to a per-pixel constant, but pydensecrf clips probabilities at 1e-5).
    """
    import torch
    from wsssbench.stages.expand import dense_crf
    probs = torch.softmax(scores.detach().float(), 1).cpu().numpy()
    out = np.stack([dense_crf(image, p, gaussian=(3 / scale, 3), bilateral=(80 / scale, 13, 10), t=iterations)
                    for image, p in zip(images, probs)])
    out = np.maximum(out, min_prob)
    out = out / out.sum(1, keepdims=True)
    return torch.from_numpy(np.log(out)).to(scores.device, scores.dtype)


def images_at(image, size) -> np.ndarray:
    """The normalised batch (B, 3, H, W) as (B, h, w, 3) uint8 **BGR** at the output ``size``: bilinear with
    corners aligned (scipy ``zoom(order=1)``, pylayers.py:62), rounded (pylayers.py:64). BGR is Caffe's
    order, and the CRF's permutohedral lattice is not symmetric in the channels (RGB moves log Q by up to 0.9
    after one iteration on a noise image; docs/sec.md)."""
    import torch
    import torch.nn.functional as F

    from wsssbench.stages.common import MEAN, STD
    mean = torch.tensor(MEAN, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=image.device).view(1, 3, 1, 1)
    rgb = (image.float() * std + mean) * 255
    small = F.interpolate(rgb, size=tuple(size), mode="bilinear", align_corners=True)
    return small.round().clamp(0, 255).to(torch.uint8).flip(1).permute(0, 2, 3, 1).cpu().numpy()


def one_hot_cues(mask, num_classes: int, size):
    """(B, H, W) cue masks (255 none) → (B, C, h, w) one-hot at the output size (nearest)."""
    import torch
    import torch.nn.functional as F
    small = F.interpolate(mask[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()
    cues = torch.zeros((len(mask), num_classes + 1, *small.shape[1:]), device=mask.device)
    cues.scatter_(1, small.clamp(max=num_classes)[:, None], 1.0)
    return cues[:, :num_classes]


def sec_step(ctx, model, batch):
    """seed + expand + constrain on the network's scores (train.prototxt: each loss_weight 1)."""
    cfg = ctx.cfg
    scores = model.outputs(batch["image"])[0].float()
    probs = smoothed_softmax(scores, setting(cfg, "seg_sec_min_prob"))
    size = scores.shape[-2:]
    cues = one_hot_cues(batch["mask"], scores.shape[1], size)
    crf = crf_log_probs(scores, images_at(batch["image"], size), scale=setting(cfg, "seg_sec_crf_scale"),
                        iterations=setting(cfg, "seg_sec_crf_iterations"), min_prob=setting(cfg, "seg_sec_min_prob"))
    return (seed_loss(probs, cues)
            + expand_loss(probs, batch["labels"], setting(cfg, "seg_sec_q_fg"), setting(cfg, "seg_sec_q_bg"))
            + constrain_loss(probs, crf))


# --- network and solver ----------------------------------------------------------------------------------


def build_segmenter(ctx):
    """SEC's network on ``seg_backbone`` (default: the classifier's) at output stride 8."""
    from wsssbench.models import build_backbone
    from wsssbench.models.sec import SECNet
    from wsssbench.stages.train_classifier import pretrained_source
    cfg = ctx.cfg
    if not ctx.dataset.has_background:
        raise UserError("sec: SEC's cues and losses need a background class; this dataset has none")
    name = cfg.seg_backbone or cfg.backbone
    weights = cfg.seg_weights or (pretrained_source(cfg) if name == cfg.backbone else None)
    return SECNet(build_backbone(name, pretrained=weights, output_stride=8), ctx.dataset.num_classes,
                  setting(cfg, "seg_sec_channels"), setting(cfg, "seg_sec_dilation"), setting(cfg, "seg_sec_dropout"))


def sec_optimizer(model, lr: float, weight_decay: float):
    """train.prototxt's solver groups: weights lr×1, biases lr×2 without decay; fc8 weights ×10, bias ×20
    without decay; momentum 0.9 (solver.prototxt)."""
    import torch
    groups = {(final, bias): [] for final in (False, True) for bias in (False, True)}
    for name, p in model.named_parameters():
        groups[(name.startswith("fc8."), name.endswith(".bias"))].append(p)
    mult = {(False, False): 1, (False, True): 2, (True, False): 10, (True, True): 20}
    return torch.optim.SGD([{"params": ps, "base_lr": lr * mult[key], "lr": lr * mult[key],
                             "weight_decay": 0.0 if key[1] else weight_decay}
                            for key, ps in groups.items() if ps], lr=lr, momentum=0.9)


SEG_OPTIMIZERS.add("sec", sec_optimizer)

METHODS.add("sec", Method(
    name="sec",
    config=SECConfig,
    summary="SEC: CAM cues, then a VGG-16 LargeFOV net trained by seed, expand and constrain losses "
            "(Kolesnikov & Lampert 2016)",
    expand=expand,
    build_segmenter=build_segmenter,
    seg_step=sec_step,
    recipes=(PAPER,),
))
