"""Stage: multi-scale + flip CAMs, max-normalised, in the toolkit's CAM format (IRN step/make_cam.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed
from ..cams import save_cams
from .common import extra_tensors, fg_index, pil_rescale, to_tensor
from .train_classifier import method_extras


def _scaled(t: torch.Tensor, size, flip: bool) -> torch.Tensor:
    """(B, C, H, W) at ``size`` (floats bilinear, integers nearest), with its flipped copy after it if ``flip``."""
    if t.shape[-2:] != tuple(size):
        t = (F.interpolate(t, size=size, mode="bilinear", align_corners=False) if t.dtype.is_floating_point
             else F.interpolate(t.float(), size=size, mode="nearest").to(t.dtype))
    return torch.cat([t, t.flip(-1)]) if flip else t


def _pil_scaled(images: np.ndarray, scale: float, flip: bool, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 rescaled with PIL bicubic, then normalised, with the flipped copies after them
    if ``flip`` (IRN voc12/dataloader.py VOC12ClassificationDatasetMSF: scale 1 is the image itself)."""
    x = torch.stack([to_tensor(im if scale == 1 else pil_rescale(im, scale)) for im in images]).to(device)
    return torch.cat([x, x.flip(-1)]) if flip else x


def _upsampled(cams: torch.Tensor, size, arithmetic: str) -> torch.Tensor:
    """(B, K, h, w) maps at the image ``size``: bilinear straight to it (toolkit), or to the next
    multiple of 16 on each side and cropped (IRN step/make_cam.py strided_up_size)."""
    if arithmetic != "irn":
        return F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
    up = tuple((n - 1) // 16 * 16 + 16 for n in size)       # IRN misc/imutils.py get_strided_up_size(size, 16)
    return F.interpolate(cams, size=up, mode="bilinear", align_corners=False)[..., :size[0], :size[1]]


@torch.no_grad()
def multiscale_cams(model, images: np.ndarray, scales, flip: bool, device: str = "cpu",
                    extras: dict[str, torch.Tensor] | None = None,
                    arithmetic: str = "toolkit", stride4: bool = False):
    """Sum over scales (and flips) of ReLU CAMs upsampled to the image size; and the scale-1 class scores.

    ``images`` is (B, H, W, 3) uint8 (or one (H, W, 3) image). ``extras``: the method's per-image inputs,
    (B, C, H, W) tensors, rescaled and flipped with the images and passed to the model by name (CONTA's
    context inputs). ``arithmetic``: ``"toolkit"`` rescales the normalised images bilinearly and resizes
    the maps straight to (H, W); ``"irn"`` as IRN's make_cam.py (:func:`_pil_scaled`, :func:`_upsampled`).
    Returns ``(cams (B, K, H, W), scores (B, K) sigmoid probabilities)`` — squeezed for one image —
    before normalisation; ``stride4`` adds IRN's stride-4 sum (each scale's map resized to
    ⌈H/4⌉ × ⌈W/4⌉, make_cam.py ``strided_cam``) as a third element.
    """
    single = images.ndim == 3
    images = images[None] if single else images
    x = torch.stack([to_tensor(im) for im in images]).to(device)
    extras = {k: v.to(device) for k, v in (extras or {}).items()}
    n, (h, w) = len(x), x.shape[-2:]
    total, scores, strided = torch.zeros((), device=device), None, torch.zeros((), device=device)
    grid = ((h - 1) // 4 + 1, (w - 1) // 4 + 1)              # IRN misc/imutils.py get_strided_size(size, 4)
    for s in scales:
        size = (h, w) if s == 1.0 else (max(1, round(h * s)), max(1, round(w * s)))
        xs = _pil_scaled(images, s, flip, device) if arithmetic == "irn" else _scaled(x, size, flip)
        ex = {k: _scaled(v, xs.shape[-2:], flip) for k, v in extras.items()}
        cams = F.relu(model.cams(xs, **ex).float())
        if flip:
            cams = cams[:n] + cams[n:].flip(-1)
        total = total + _upsampled(cams, (h, w), arithmetic)
        if stride4:
            strided = strided + F.interpolate(cams, size=grid, mode="bilinear", align_corners=False)
        if scores is None or s == 1.0:
            scores = torch.sigmoid(model(xs[:n], **{k: v[:n] for k, v in ex.items()}).float())
    out = (total, scores, strided) if stride4 else (total, scores)
    return tuple(t[0] for t in out) if single else out


def max_normalise(cams: torch.Tensor) -> torch.Tensor:
    """Each plane divided by its own max + 1e-5, no min subtraction (IRN make_cam.py)."""
    return cams / (cams.flatten(1).amax(1).view(-1, 1, 1) + 1e-5)


def run(ctx, method, model, samples, out_dir: Path, progress=None, label: str = "CAMs", batch: int = 16) -> None:
    """Write ``<id>.npz`` per sample: the planes of its ground-truth classes (IRN keys), max-normalised.

    Consecutive images of one size go through the network together (``batch`` at a time).
    """
    cfg = ctx.cfg
    model.to(ctx.device).eval()
    # the extra inputs the classifier itself takes (its ``extra_input_names``: CONTA's context), by name
    takes = set(getattr(model, "extra_input_names", ()))
    extras = method_extras(ctx, method) if takes else None
    task = progress.add_task(label, total=len(samples)) if progress else None
    for group, images in image_groups(ctx.dataset, samples, batch):
        per_image = [extra_tensors(extras, s, im.shape[:2]) for s, im in zip(group, images)]
        stacked = {k: torch.stack([e[k] for e in per_image]) for k in per_image[0] if k in takes}
        # IRN's arithmetic also keeps make_cam.py's stride-4 maps, which its random walk starts from (not for a
        # method that refines its CAMs: the refinement is defined on the full-resolution maps)
        stride4 = cfg.cam_arithmetic == "irn" and method.refine_cams is None
        cams, scores, *strided = multiscale_cams(model, np.stack(images), cfg.cam_scales, cfg.cam_flip, ctx.device,
                                                 stacked, cfg.cam_arithmetic, stride4=stride4)
        for i, (sample, image, cam, score) in enumerate(zip(group, images, cams, scores)):
            keys = sorted({fg_index(ctx.dataset, c) for c in sample.labels})
            planes = cam[keys]
            if method.refine_cams is not None:
                planes = method.refine_cams(ctx, model, image, planes)
            small = max_normalise(strided[0][i][keys]).cpu().numpy().astype(np.float32) if stride4 else None
            save_cams(out_dir / f"{sample.id}.npz", keys, max_normalise(planes).cpu().numpy().astype(np.float32),
                      norm="max", scores=score.cpu().numpy(), stride4=small)
        if progress:
            progress.advance(task, len(group))


def image_groups(dataset, samples, batch: int):
    """This rank's :func:`same_size_batches` (all of them in a plain run). Under torchrun the runs are
    cut from the image sizes in the files' headers, exactly as one process cuts them, and dealt out
    round-robin: each image goes through the network in the same batch as in one process, so its CAMs
    are the same numbers."""
    if not distributed.active():
        yield from same_size_batches(dataset, samples, batch)
        return
    from PIL import Image

    from ..data.base import Dataset

    def shape(sample):
        if type(dataset).load_image is Dataset.load_image:      # read_image(sample.image): the header says
            with Image.open(sample.image) as im:
                return im.size[::-1]
        return dataset.load_image(sample).shape[:2]
    runs, last = [], None
    for sample in samples:
        size = shape(sample)
        if not runs or size != last or len(runs[-1]) == batch:
            runs.append([])
        runs[-1].append(sample)
        last = size
    for group in distributed.shard(runs):
        yield group, [dataset.load_image(s) for s in group]


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
