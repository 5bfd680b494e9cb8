"""Stage: expand CAMs into pseudo-masks — the AffinityNet/IRN random walk, or dense CRF on CAMs.

Random walk (IRN step/make_sem_seg_labels.py, AffinityNet's loss): confident labels come from dense
CRF on the CAMs at ``rw_conf_fg`` / ``rw_conf_bg`` (unsure pixels ignored); an affinity network learns
``a_ij = exp(-mean|f_i - f_j|)`` on pixel pairs within ``rw_radius`` at stride 4; the walk multiplies
the CAMs by the transition matrix ``T = D⁻¹ A^β`` raised to ``2^rw_exp_times``; the walked maps are
divided by their global max, a constant background plane ``rw_bg_threshold`` is put first, argmax.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..cams import load_cams
from ..io import atomic_path
from .common import poly_lr, to_tensor

STRIDE = 4      # IRN walks on the stride-4 CAM


# ---------------------------------------------------------------- dense CRF (pydensecrf)
def crf_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, t: int = 10, gt_prob: float = 0.7) -> np.ndarray:
    """IRN imutils.crf_inference_label: unary from labels (gt_prob 0.7), Gaussian sxy 3 compat 3,
    bilateral sxy 50 srgb 5 compat 10."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels
    h, w = labels.shape
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.require(image, np.uint8, ["C", "W"]), compat=10)
    q = d.inference(t)
    return np.argmax(np.array(q).reshape(n_labels, h, w), axis=0)


def crf_probs(image: np.ndarray, probs: np.ndarray, t: int = 10) -> np.ndarray:
    """SEAM imutils.crf_inference: unary −log p, Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13 compat 10."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax
    n, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(unary_from_softmax(np.ascontiguousarray(probs, dtype=np.float32)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.require(image, np.uint8, ["C", "W"]), compat=10)
    return np.array(d.inference(t)).reshape(n, h, w)


def confident_labels(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, conf_fg: float, conf_bg: float) -> np.ndarray:
    """IRN cam_to_ir_label: class-index map (0 background, c+1 class c), 255 where unsure."""
    lut = np.concatenate([[0], keys + 1]).astype(np.uint8)

    def at(threshold):
        planes = np.concatenate([np.full((1,) + cams.shape[1:], threshold, cams.dtype), cams])
        return crf_labels(image, np.argmax(planes, 0), planes.shape[0])

    fg, bg = at(conf_fg), at(conf_bg)
    conf = lut[fg]
    conf[fg == 0] = 255
    conf[(fg + bg) == 0] = 0
    return conf


def crf_mask(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, alpha: float) -> np.ndarray:
    """Dense CRF on CAMs with background (1 − max cam)^α (SEAM infer_SEAM.py ``_crf_with_alpha``)."""
    bg = np.power(1 - cams.max(0, keepdims=True), alpha) if len(cams) else np.ones((1,) + image.shape[:2])
    probs = crf_probs(image, np.concatenate([bg, cams]).astype(np.float32))
    return np.concatenate([[0], keys + 1]).astype(np.uint8)[probs.argmax(0)]


# ---------------------------------------------------------------- affinity network and random walk
class AffinityHead(torch.nn.Module):
    """Backbone blocks 2–5 → 1×1 conv each → upsampled to block 2 (stride 4) → concatenated → embedding."""

    def __init__(self, backbone, dim: int = 64):
        super().__init__()
        self.backbone = backbone
        self.reduce = torch.nn.ModuleList(torch.nn.Conv2d(c, 32, 1) for c in backbone.stage_channels[1:])
        self.embed = torch.nn.Conv2d(32 * len(self.reduce), dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_stages(x)[1:]
        size = feats[0].shape[-2:]
        up = [F.interpolate(r(f), size=size, mode="bilinear", align_corners=False) for r, f in zip(self.reduce, feats)]
        return self.embed(F.relu(torch.cat(up, 1)))


def offsets(radius: int) -> list[tuple[int, int]]:
    """Half of the disc of ``radius`` (each unordered pair once), as AffinityNet's path indices.

    >>> offsets(2)
    [(0, 1), (1, -1), (1, 0), (1, 1)]
    """
    return [(dy, dx) for dy in range(radius) for dx in range(-radius + 1, radius)
            if 0 < dy * dy + dx * dx < radius * radius and (dy > 0 or dx > 0)]


def _shift_pairs(h: int, w: int, dy: int, dx: int):
    """Slices (source, destination) of the pixel pairs at offset (dy, dx) in an h×w grid."""
    ys, yd = slice(0, h - dy), slice(dy, h)
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return (ys, xs), (yd, xd)


def pair_affinities(feat: torch.Tensor, radius: int) -> list[torch.Tensor]:
    """(B, D, h, w) features → per offset, ``exp(-mean_d |f_i − f_j|)`` over valid pairs (B, h', w')."""
    out = []
    for dy, dx in offsets(radius):
        (ys, xs), (yd, xd) = _shift_pairs(feat.shape[-2], feat.shape[-1], dy, dx)
        out.append(torch.exp(-(feat[..., ys, xs] - feat[..., yd, xd]).abs().mean(1)))
    return out


def affinity_loss(feat: torch.Tensor, labels: torch.Tensor, radius: int) -> torch.Tensor:
    """AffinityNet's loss: bg-pos/4 + fg-pos/4 + neg/2 over confident pairs (255 = unsure)."""
    sums = {k: feat.new_zeros(()) for k in ("bg", "fg", "neg")}
    counts = {k: 0 for k in sums}
    for (dy, dx), aff in zip(offsets(radius), pair_affinities(feat, radius)):
        (ys, xs), (yd, xd) = _shift_pairs(labels.shape[-2], labels.shape[-1], dy, dx)
        a, b = labels[..., ys, xs], labels[..., yd, xd]
        valid = (a != 255) & (b != 255)
        for name, sel, term in (("bg", valid & (a == b) & (a == 0), -torch.log(aff + 1e-5)),
                                ("fg", valid & (a == b) & (a != 0), -torch.log(aff + 1e-5)),
                                ("neg", valid & (a != b), -torch.log(1 + 1e-5 - aff))):
            sums[name] = sums[name] + term[sel].sum()
            counts[name] += int(sel.sum())
    mean = {k: sums[k] / max(counts[k], 1) for k in sums}
    return mean["bg"] / 4 + mean["fg"] / 4 + mean["neg"] / 2


def transition_matrix(feat: torch.Tensor, radius: int, beta: float, exp_times: int) -> torch.Tensor:
    """Dense (N, N) ``T^(2^exp_times)`` with ``T = A^β`` column-normalised, self-affinity 1 (IRN indexing.py)."""
    _, h, w = feat.shape
    idx = torch.arange(h * w, device=feat.device).view(h, w)
    aff = torch.eye(h * w, device=feat.device)
    for (dy, dx), a in zip(offsets(radius), pair_affinities(feat[None], radius)):
        (ys, xs), (yd, xd) = _shift_pairs(h, w, dy, dx)
        i, j, v = idx[ys, xs].reshape(-1), idx[yd, xd].reshape(-1), a[0].reshape(-1)
        aff[i, j] = v
        aff[j, i] = v
    trans = aff.pow(beta)
    trans = trans / trans.sum(0, keepdim=True)
    for _ in range(exp_times):
        trans = trans @ trans
    return trans


def train_affinity(ctx, samples, conf_dir: Path, workdir: Path, progress=None) -> AffinityHead:
    """Train the affinity head on the confident labels in ``conf_dir``; save ``affinity.pt``."""
    from ..models import build_backbone
    from .train_classifier import pretrained_source
    cfg = ctx.cfg
    net = AffinityHead(build_backbone(cfg.backbone, pretrained=pretrained_source(cfg), output_stride=16)).to(ctx.device)
    images, labels = [], []
    for sample in samples:
        x = to_tensor(ctx.dataset.load_image(sample))
        y = torch.from_numpy(np.array(Image.open(conf_dir / f"{sample.id}.png"))).long()
        images.append(F.interpolate(x[None], size=(cfg.cls_size,) * 2, mode="bilinear", align_corners=False)[0])
        labels.append(F.interpolate(y[None, None].float(), size=(cfg.cls_size // STRIDE,) * 2, mode="nearest")[0, 0].long())
    images, labels = torch.stack(images), torch.stack(labels)
    gen = torch.Generator().manual_seed(ctx.seed)
    steps_per_epoch = max(1, len(images) // cfg.rw_batch_size)
    total = cfg.rw_epochs * steps_per_epoch
    opt = torch.optim.SGD(net.parameters(), lr=cfg.rw_lr, momentum=0.9, weight_decay=1e-4)
    task = progress.add_task("train affinity", total=total) if progress else None
    net.train()
    it = 0
    for _ in range(cfg.rw_epochs):
        order = torch.randperm(len(images), generator=gen)
        for k in range(steps_per_epoch):
            sel = order[k * cfg.rw_batch_size:(k + 1) * cfg.rw_batch_size]
            x, y = images[sel], labels[sel]
            flip = torch.rand(len(sel), generator=gen) < 0.5
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
            for g in opt.param_groups:
                g["lr"] = poly_lr(cfg.rw_lr, it, total)
            feat = net(x.to(ctx.device))
            feat = F.interpolate(feat, size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = affinity_loss(feat, y.to(ctx.device), cfg.rw_radius)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            if progress:
                progress.advance(task)
    net.eval()
    torch.save(net.state_dict(), workdir / "affinity.pt")
    return net


@torch.no_grad()
def random_walk_mask(ctx, net: AffinityHead, image: np.ndarray, cams: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """IRN make_sem_seg_labels: walk the stride-4 CAMs, global-max normalise, bg plane, argmax."""
    cfg = ctx.cfg
    h, w = image.shape[:2]
    lut = np.concatenate([[0], keys + 1]).astype(np.uint8)
    if len(keys) == 0:
        return np.zeros((h, w), np.uint8)
    hs, ws = -(-h // STRIDE), -(-w // STRIDE)
    feat = net(to_tensor(image)[None].to(ctx.device))
    feat = F.interpolate(feat, size=(hs, ws), mode="bilinear", align_corners=False)[0]
    small = F.interpolate(torch.from_numpy(cams)[None].to(ctx.device), size=(hs, ws), mode="bilinear",
                          align_corners=False)[0]
    trans = transition_matrix(feat, cfg.rw_radius, cfg.rw_beta, cfg.rw_exp_times)
    walked = (small.reshape(len(keys), -1) @ trans).view(1, len(keys), hs, ws)
    walked = F.interpolate(walked, size=(h, w), mode="bilinear", align_corners=False)[0]
    walked = walked / walked.max()
    planes = torch.cat([torch.full((1, h, w), cfg.rw_bg_threshold, device=walked.device), walked])
    return lut[planes.argmax(0).cpu().numpy()]


def save_mask(path: Path, mask: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(mask.astype(np.uint8)).save(tmp, format="PNG")


def run(ctx, cams_dir: Path, samples, out_dir: Path, progress=None) -> None:
    """Write ``<id>.png`` pseudo-masks (class indices) for ``samples`` by ``ctx.cfg.expansion``."""
    cfg = ctx.cfg
    masks = out_dir / "masks"
    if cfg.expansion == "rw":
        conf = out_dir / "confident"
        task = progress.add_task("confident labels (CRF)", total=len(samples)) if progress else None
        for sample in samples:
            cam = load_cams(cams_dir / f"{sample.id}.npz")
            save_mask(conf / f"{sample.id}.png", confident_labels(ctx.dataset.load_image(sample), cam.cams, cam.keys,
                                                                 cfg.rw_conf_fg, cfg.rw_conf_bg))
            if progress:
                progress.advance(task)
        net = train_affinity(ctx, samples, conf, out_dir, progress)
    task = progress.add_task(f"pseudo-masks ({cfg.expansion})", total=len(samples)) if progress else None
    for sample in samples:
        cam = load_cams(cams_dir / f"{sample.id}.npz")
        image = ctx.dataset.load_image(sample)
        if cfg.expansion == "rw":
            mask = random_walk_mask(ctx, net, image, cam.cams, cam.keys)
        elif cfg.expansion == "crf":
            mask = crf_mask(image, cam.cams, cam.keys, cfg.crf_alpha)
        else:   # "none": the seeds themselves (IRN threshold rule)
            planes = np.concatenate([np.full((1,) + cam.cams.shape[1:], cfg.seed_threshold, cam.cams.dtype), cam.cams])
            mask = np.concatenate([[0], cam.keys + 1]).astype(np.uint8)[planes.argmax(0)]
        save_mask(masks / f"{sample.id}.png", mask)
        if progress:
            progress.advance(task)


EXPANSIONS = ("rw", "crf", "none")
