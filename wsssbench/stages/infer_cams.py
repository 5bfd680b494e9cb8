"""Stage: multi-scale + flip CAMs, max-normalised, in the toolkit's CAM format (IRN step/make_cam.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cams import save_cams
from .common import fg_index, to_tensor


@torch.no_grad()
def multiscale_cams(model, images: np.ndarray, scales, flip: bool, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over scales (and flips) of ReLU CAMs upsampled to the image size; and the scale-1 class scores.

    ``images`` is (B, H, W, 3) uint8 (or one (H, W, 3) image). Returns ``(cams (B, K, H, W),
    scores (B, K) sigmoid probabilities)`` — squeezed for one image — before normalisation.
    """
    single = images.ndim == 3
    x = torch.stack([to_tensor(im) for im in (images[None] if single else images)]).to(device)
    n, (h, w) = len(x), x.shape[-2:]
    total, scores = torch.zeros((), device=device), None
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))),
                                               mode="bilinear", align_corners=False)
        if flip:
            xs = torch.cat([xs, xs.flip(-1)])
        cams = F.relu(model.cams(xs).float())
        if flip:
            cams = cams[:n] + cams[n:].flip(-1)
        total = total + F.interpolate(cams, size=(h, w), mode="bilinear", align_corners=False)
        if scores is None or s == 1.0:
            scores = torch.sigmoid(model(xs[:n]).float())
    return (total[0], scores[0]) if single else (total, scores)


def max_normalise(cams: torch.Tensor) -> torch.Tensor:
    """Each plane divided by its own max + 1e-5, no min subtraction (IRN make_cam.py)."""
    return cams / (cams.flatten(1).amax(1).view(-1, 1, 1) + 1e-5)


def run(ctx, method, model, samples, out_dir: Path, progress=None, label: str = "CAMs", batch: int = 16) -> None:
    """Write ``<id>.npz`` per sample: the planes of its ground-truth classes (IRN keys), max-normalised.

    Consecutive images of one size go through the network together (``batch`` at a time).
    """
    cfg = ctx.cfg
    model.to(ctx.device).eval()
    task = progress.add_task(label, total=len(samples)) if progress else None
    for group, images in same_size_batches(ctx.dataset, samples, batch):
        cams, scores = multiscale_cams(model, np.stack(images), cfg.cam_scales, cfg.cam_flip, ctx.device)
        for sample, image, cam, score in zip(group, images, cams, scores):
            keys = sorted({fg_index(ctx.dataset, c) for c in sample.labels})
            planes = cam[keys]
            if method.refine_cams is not None:
                planes = method.refine_cams(ctx, model, image, planes)
            save_cams(out_dir / f"{sample.id}.npz", keys, max_normalise(planes).cpu().numpy().astype(np.float32),
                      norm="max", scores=score.cpu().numpy())
        if progress:
            progress.advance(task, len(group))


def same_size_batches(dataset, samples, batch: int):
    """Runs of consecutive ``(samples, images)`` sharing one image size, ``batch`` at most."""
    group, images = [], []
    for sample in samples:
        image = dataset.load_image(sample)
        if group and (image.shape != images[0].shape or len(group) == batch):
            yield group, images
            group, images = [], []
        group.append(sample)
        images.append(image)
    if group:
        yield group, images
