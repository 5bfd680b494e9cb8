"""Expansion ``psa``: PSA's AffinityNet and random walk, SEAM's pseudo-mask step (``YudeWang/SEAM``
``infer_SEAM.py`` ``_crf_with_alpha``, ``train_aff.py``, ``infer_aff.py``, ``voc12/data.py``
``VOC12AffDataset``; ``jiwoon-ahn/psa``).

1. Two dense CRFs of each training image's CAMs with background ``(1 − max)^α`` at α ``rw_psa_low`` (4)
   and ``rw_psa_high`` (24) (SEAM's ``imutils.crf_inference``).
2. AffinityNet (:class:`wsssbench.models.psa.PSAAffinityNet`) trains on random crops of the images
   (colour jitter, ``cls_size``² crop padded black, flip) with, per stride-8 cell, the 8×8 means of the
   two CRF scores: the low-α argmax where it is foreground, 0 where the high-α argmax is background,
   else (and in the padding) ignored; PSA's optimiser and loss.
3. Each image, zero-padded to a multiple of 8: the CAMs with background ``(1 − max)^rw_psa_alpha``,
   8×8-averaged, walked with ``T = A^rw_beta`` column-normalised, ``2^rw_exp_times`` steps
   (:func:`wsssbench.stages.expand.walk`), upsampled (bilinear), argmax.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cams import load_cams
from ..errors import UserError
from .common import MEAN, STD, poly_lr, random_crop, seam_jitter, to_tensor

#: PSA's settings where a config does not have them (every method but SEAM and those built on it).
DEFAULTS = {"rw_psa_low": 4.0, "rw_psa_high": 24.0, "rw_psa_alpha": 16.0, "rw_psa_weight_decay": 5e-4}
STRIDE = 8   # resnet38_aff.py: the affinities live on the stride-8 feature map; infer_aff.py pads to 8


def setting(cfg, name: str):
    return getattr(cfg, name, DEFAULTS[name])


def crf_scores(image: np.ndarray, cams: np.ndarray, alpha: float) -> np.ndarray:
    """infer_SEAM.py ``_crf_with_alpha``: CRF scores (K+1, H, W) of [bg (1 − max)^α, the CAMs]."""
    from .expand import crf_probs
    bg = np.power(1 - cams.max(0, keepdims=True), alpha) if len(cams) else np.ones((1,) + image.shape[:2])
    return crf_probs(image, np.concatenate([bg, cams]).astype(np.float32))


def training_label(scores: torch.Tensor, n: int) -> torch.Tensor:
    """VOC12AffDataset.__getitem__ after the crop: ``scores`` (2n, h, w) the low-α then the high-α CRF scores
    at stride 8 (8×8 means). Low-α argmax where foreground; 0 where the high-α argmax is background; 255
    elsewhere and where no score is ≥ 1e-5 (the crop's padding)."""
    low, high = scores[:n].argmax(0), scores[n:].argmax(0)
    label = torch.where(low == 0, torch.full_like(low, 255), low)
    label[high == 0] = 0
    label[scores.amax(0) < 1e-5] = 255
    return label


def training_crop(image: np.ndarray, scores: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One train_aff.py sample: jittered image and (2n, H, W) scores cropped together (zero-padded: black
    image, no score), flipped half the time; the scores 8×8-averaged (imutils.AvgPool2d(8))."""
    x = to_tensor(seam_jitter(image))
    mask = torch.ones(1, *x.shape[-2:])
    both = random_crop(torch.cat([x, mask, torch.from_numpy(scores).float()]), size)
    if torch.rand(()) < 0.5:
        both = both.flip(-1)
    x, inside, s = both[:3], both[3:4], both[4:]
    black = (-torch.tensor(MEAN) / torch.tensor(STD)).view(3, 1, 1)     # a uint8 0 after normalisation
    x = torch.where(inside.bool(), x, black)
    return x, F.avg_pool2d(s[None], STRIDE, STRIDE, ceil_mode=True, count_include_pad=False)[0]


def build_net(ctx):
    from ..models import build_backbone
    from ..models.psa import PSAAffinityNet
    from .train_classifier import pretrained_source
    cfg = ctx.cfg
    pretrained = pretrained_source(cfg)
    backbone = build_backbone(cfg.backbone, pretrained=pretrained, output_stride=STRIDE)
    # PSA keeps BatchNorm and the first blocks of its ImageNet backbone fixed; random init has nothing to keep.
    return PSAAffinityNet(backbone, cfg.rw_radius, frozen=pretrained is not None)


def train_net(ctx, samples, crf_dir: Path, workdir: Path, progress=None):
    """train_aff.py: PSA's optimiser (lr ``rw_lr``, poly 0.9), ``rw_epochs`` over ``samples`` in batches of
    ``rw_batch_size`` (the last partial one dropped); saves ``affinity.pt``."""
    from ..models.psa import affinity_labels, affinity_loss, psa_optimizer
    cfg = ctx.cfg
    net = build_net(ctx).to(ctx.device)
    net.train()
    opt = psa_optimizer(net, cfg.rw_lr, setting(cfg, "rw_psa_weight_decay"), new=("f8_", "f9"))
    gen = torch.Generator().manual_seed(ctx.seed)
    steps = max(1, len(samples) // cfg.rw_batch_size)
    total = cfg.rw_epochs * steps
    task = progress.add_task("train affinity (PSA)", total=total) if progress else None
    it = 0
    for _ in range(cfg.rw_epochs):
        order = torch.randperm(len(samples), generator=gen)
        for k in range(steps):
            xs, labels = [], []
            for i in order[k * cfg.rw_batch_size:(k + 1) * cfg.rw_batch_size].tolist():
                scores = np.load(crf_dir / f"{samples[i].id}.npz")
                both = np.concatenate([scores["low"], scores["high"]])
                x, s = training_crop(ctx.dataset.load_image(samples[i]), both, cfg.cls_size)
                xs.append(x)
                labels.append(training_label(s, len(scores["low"])))
            x, label = torch.stack(xs).to(ctx.device), torch.stack(labels).to(ctx.device)
            for g in opt.param_groups:
                g["lr"] = poly_lr(g["base_lr"], it, total)
            aff = checked(net(x), net, *label.shape[-2:], cfg)
            loss = affinity_loss(aff, *affinity_labels(label, net.radius_for(*label.shape[-2:])))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            if progress:
                progress.advance(task)
    net.eval()
    torch.save(net.state_dict(), workdir / "affinity.pt")
    return net


def checked(aff: torch.Tensor, net, h: int, w: int, cfg) -> torch.Tensor:
    """``aff`` if it holds the pairs of an ``h`` × ``w`` map (the input's stride-8 grid), else a UserError."""
    r = net.radius_for(h, w)
    if aff.shape[-1] != (h - r + 1) * (w - 2 * r + 2):
        raise UserError(f"expansion=psa: {cfg.backbone}'s features are not at stride 8 of its input; "
                        "use a stride-8 backbone (resnet38, small)")
    return aff


def walk_inputs(cams: np.ndarray, alpha: float, size: tuple[int, int]) -> torch.Tensor:
    """infer_aff.py ``cam_full_arr``: [(1 − max)^α, the CAMs] zero-padded to ``size`` and 8×8-averaged."""
    cams = torch.from_numpy(cams).float()
    bg = (1 - cams.amax(0, keepdim=True)) ** alpha if len(cams) else torch.ones(1, *cams.shape[1:])
    full = torch.cat([bg, cams])
    full = F.pad(full, (0, size[1] - full.shape[-1], 0, size[0] - full.shape[-2]))
    return F.avg_pool2d(full[None], STRIDE, STRIDE)[0]


@torch.no_grad()
def walked_scores(ctx, net, image: np.ndarray, cams: np.ndarray) -> torch.Tensor:
    """infer_aff.py for one image: the walked [background, CAM] scores (K+1, H, W), bilinear at the image size."""
    from ..models.psa import affinity_matrix
    from .expand import walk
    cfg = ctx.cfg
    h, w = image.shape[:2]
    ph, pw = -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE
    x = F.pad(to_tensor(image)[None], (0, pw - w, 0, ph - h)).to(ctx.device)
    hs, ws = ph // STRIDE, pw // STRIDE
    aff = checked(net(x), net, hs, ws, cfg)[0]
    mat = affinity_matrix(aff, net.radius_for(hs, ws), hs, ws)
    vec = walk_inputs(cams, setting(cfg, "rw_psa_alpha"), (ph, pw)).to(ctx.device)
    walked = walk(vec.reshape(len(vec), -1), mat, cfg.rw_beta, cfg.rw_exp_times, cfg.rw_method)
    up = F.interpolate(walked.view(1, -1, hs, ws).float(), (ph, pw), mode="bilinear", align_corners=False)[0]
    return up[:, :h, :w]


def run(ctx, cams_dir: Path, samples, out_dir: Path, progress=None) -> None:
    """CRF scores of the first ``rw_train_images`` images, AffinityNet trained on them, every image walked."""
    from .expand import save_mask
    cfg = ctx.cfg
    if cfg.rw_radius < 2:
        raise UserError(f"--set rw_radius={cfg.rw_radius}: PSA's affinities need a radius of at least 2")
    train = samples[:cfg.rw_train_images] if cfg.rw_train_images else samples
    crf_dir = out_dir / "crf"
    crf_dir.mkdir(parents=True, exist_ok=True)
    task = progress.add_task("CRF scores (PSA labels)", total=len(train)) if progress else None
    for sample in train:
        cam, image = load_cams(cams_dir / f"{sample.id}.npz"), ctx.dataset.load_image(sample)
        np.savez_compressed(crf_dir / f"{sample.id}.npz",
                            low=crf_scores(image, cam.cams, setting(cfg, "rw_psa_low")),
                            high=crf_scores(image, cam.cams, setting(cfg, "rw_psa_high")))
        if progress:
            progress.advance(task)
    net = train_net(ctx, train, crf_dir, out_dir, progress)
    task = progress.add_task("pseudo-masks (psa)", total=len(samples)) if progress else None
    for sample in samples:
        cam, image = load_cams(cams_dir / f"{sample.id}.npz"), ctx.dataset.load_image(sample)
        pred = walked_scores(ctx, net, image, cam.cams).argmax(0).cpu().numpy()
        save_mask(out_dir / "masks" / f"{sample.id}.png", np.concatenate([[0], cam.keys + 1]).astype(np.uint8)[pred])
        if progress:
            progress.advance(task)
