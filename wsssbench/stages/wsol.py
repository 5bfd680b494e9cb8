"""Stage: localization maps of the classifier for WSOL (clovaai/wsolevaluation's CAM path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import distributed
from ..cams import save_cams
from .infer_cams import multiscale_cams


def cam_maps(ctx, model, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The default localization maps: the classifier's CAMs (``(K,)`` scores, ``(K, H, W)`` maps)."""
    maps, scores = multiscale_cams(model, image, ctx.cfg.cam_scales, ctx.cfg.cam_flip, ctx.device,
                                   arithmetic=ctx.cfg.cam_arithmetic)
    return scores, maps


def minmax(planes: torch.Tensor) -> torch.Tensor:
    """wsolevaluation ``normalize_scoremap``: (cam − min) / max of the shifted map, per plane."""
    flat = planes.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1)
    shifted = planes - lo
    hi = shifted.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(hi > 0, shifted / hi.clamp_min(1e-12), torch.zeros_like(shifted))


@torch.no_grad()
def run(ctx, method, model, samples, out_dir: Path, progress=None) -> None:
    """Write ``<id>.npz``: min-max maps of the top-5 predicted classes and the true ones, all scores."""
    model.to(ctx.device).eval()
    task = progress.add_task("localization maps", total=len(samples)) if progress else None
    for sample in distributed.shard(samples):       # by image under torchrun
        scores, maps = method.wsol_maps(ctx, model, ctx.dataset.load_image(sample))
        keys = sorted(set(torch.topk(scores, min(5, len(scores))).indices.tolist()) | set(sample.labels))
        save_cams(out_dir / f"{sample.id}.npz", keys, minmax(maps[keys]).cpu().numpy().astype(np.float32),
                  norm="minmax", scores=scores.cpu().numpy())
        if progress:
            progress.advance(task)
