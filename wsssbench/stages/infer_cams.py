"""Stage: multi-scale + flip CAMs, max-normalised, in the toolkit's CAM format (IRN step/make_cam.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cams import save_cams
from .common import fg_index, to_tensor


@torch.no_grad()
def multiscale_cams(model, image: np.ndarray, scales, flip: bool, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over scales (and flips) of ReLU CAMs upsampled to the image size; and the scale-1 class scores.

    Returns ``(cams (K, H, W) float32, scores (K,) sigmoid probabilities)``, before normalisation.
    """
    h, w = image.shape[:2]
    x = to_tensor(image)[None].to(device)
    total = torch.zeros((), device=device)
    scores = None
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))),
                                               mode="bilinear", align_corners=False)
        if flip:
            xs = torch.cat([xs, xs.flip(-1)])
        cams = F.relu(model.cams(xs).float())
        if flip:
            cams = cams[:1] + cams[1:].flip(-1)
        total = total + F.interpolate(cams, size=(h, w), mode="bilinear", align_corners=False)[0]
        if scores is None or s == 1.0:
            scores = torch.sigmoid(model(xs[:1]).float()[0])
    return total, scores


def max_normalise(cams: torch.Tensor) -> torch.Tensor:
    """Each plane divided by its own max + 1e-5, no min subtraction (IRN make_cam.py)."""
    return cams / (cams.flatten(1).amax(1).view(-1, 1, 1) + 1e-5)


def run(ctx, method, model, samples, out_dir: Path, progress=None, label: str = "CAMs") -> None:
    """Write ``<id>.npz`` per sample: the planes of its ground-truth classes (IRN keys), max-normalised."""
    cfg = ctx.cfg
    model.to(ctx.device).eval()
    task = progress.add_task(label, total=len(samples)) if progress else None
    for sample in samples:
        image = ctx.dataset.load_image(sample)
        cams, scores = multiscale_cams(model, image, cfg.cam_scales, cfg.cam_flip, ctx.device)
        keys = sorted({fg_index(ctx.dataset, c) for c in sample.labels})
        planes = cams[keys]
        if method.refine_cams is not None:
            planes = method.refine_cams(ctx, model, image, planes)
        save_cams(out_dir / f"{sample.id}.npz", keys, max_normalise(planes).cpu().numpy().astype(np.float32),
                  norm="max", scores=scores.cpu().numpy())
        if progress:
            progress.advance(task)

