"""Stage: the segmentation model trained on the pseudo-masks, predicting val (and, for CONTA, train).

The default is DeepLab-v2 (ASPP 6/12/18/24) with cross-entropy ignoring 255, as kazuto1011/deeplab-pytorch
which CONTA and C2AM ran (SGD momentum 0.9, poly 0.9); a method replaces the model with
``build_segmenter`` and the loss with ``seg_step`` (SEC's three losses, DSRG's region growing).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..cams import load_cams
from .common import extra_tensors, label_vector, poly_lr, resize, to_tensor
from .expand import dense_crf, save_mask
from .train_classifier import method_extras, pretrained_source


def crf_post(image: np.ndarray, probs: np.ndarray, t: int = 10) -> np.ndarray:
    """deeplab-pytorch's post-CRF: Gaussian w 3 xy 1, bilateral w 4 xy 67 rgb 3, 10 iterations."""
    return dense_crf(image, probs, gaussian=(1, 3), bilateral=(67, 3, 4), t=t)


def build_deeplab(ctx) -> torch.nn.Module:
    """DeepLab-v2 on ``seg_backbone`` (default: the classifier's) at output stride 8."""
    from ..models import DeepLabV2, build_backbone
    cfg = ctx.cfg
    backbone = cfg.seg_backbone or cfg.backbone
    weights = cfg.seg_weights or (pretrained_source(cfg) if backbone == cfg.backbone else None)
    return DeepLabV2(build_backbone(backbone, pretrained=weights, output_stride=8), ctx.dataset.num_classes)


def cross_entropy_step(ctx, model, batch) -> torch.Tensor:
    """The default segmentation loss: cross-entropy against the pseudo-mask, ignoring 255, on every output."""
    from ..models import DeepLabV2
    return DeepLabV2.loss(model.outputs(batch["image"]), batch["mask"])


def sgd_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    """``seg_optimizer=sgd``: every parameter in one group, momentum 0.9, weight decay."""
    return torch.optim.SGD([{"params": list(model.parameters()), "base_lr": lr}], lr=lr, momentum=0.9,
                           weight_decay=weight_decay)


def seg_lr(base: float, it: int, total: int, step: int = 0) -> float:
    """The segmenter's learning rate at iteration ``it``: poly 0.9 (``step`` 0, deeplab-pytorch) or
    Caffe's "step" policy, ``base · 0.1^(it // step)`` (SEC's and DSRG's solver.prototxt).

    >>> [round(seg_lr(1e-3, it, 8000, step=2000), 12) for it in (0, 1999, 2000, 4000)]
    [0.001, 0.001, 0.0001, 1e-05]
    """
    return base * 0.1 ** (it // step) if step else poly_lr(base, it, total)


class SegmentationPairs(torch.utils.data.Dataset):
    """One training image resized to ``size``² (bilinear) with its pseudo-mask (nearest), its CAM cues
    (one plane per foreground class, zero for absent ones) and the method's extra inputs."""

    def __init__(self, ctx, samples, masks_dir: Path, cams_dir: Path, size: int, extras=None):
        self.ctx, self.samples, self.masks_dir, self.cams_dir, self.size = ctx, samples, masks_dir, cams_dir, size
        self.extras = extras

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample, ds, size = self.samples[i], self.ctx.dataset, (self.size, self.size)
        x = to_tensor(ds.load_image(sample))
        mask = torch.from_numpy(np.array(Image.open(self.masks_dir / f"{sample.id}.png"))).long()
        cam = load_cams(self.cams_dir / f"{sample.id}.npz")
        cams = torch.zeros((self.ctx.num_fg, *x.shape[-2:]))
        cams[torch.from_numpy(cam.keys)] = torch.from_numpy(cam.cams.astype(np.float32))
        return {"image": resize(x, size), "mask": resize(mask[None], size)[0], "cams": resize(cams, size),
                "labels": label_vector(ds, sample), "index": i,
                **{k: resize(v, size) for k, v in extra_tensors(self.extras, sample, x.shape[-2:]).items()}}


def run(ctx, method, train_samples, masks_dir: Path, cams_dir: Path, predict: dict[str, list], workdir: Path,
        progress=None) -> None:
    """Train on ``masks_dir``; write ``model.pt`` and, for each ``predict`` entry, ``<name>/<id>.png``."""
    cfg, device = ctx.cfg, torch.device(ctx.device)
    model = method.build_segmenter(ctx).to(device)
    data = SegmentationPairs(ctx, train_samples, masks_dir, cams_dir, cfg.seg_size, method_extras(ctx, method))
    gen = torch.Generator().manual_seed(ctx.seed)
    from ..methods_api import SEG_OPTIMIZERS
    opt = SEG_OPTIMIZERS.get(cfg.seg_optimizer)(model, cfg.seg_lr, cfg.seg_weight_decay)
    task = progress.add_task("train segmenter", total=cfg.seg_iterations) if progress else None
    model.train()
    for it in range(cfg.seg_iterations):
        sel = torch.randint(len(data), (min(cfg.seg_batch_size, len(data)),), generator=gen)
        batch = torch.utils.data.default_collate([data[int(i)] for i in sel])
        flip = torch.rand(len(sel), generator=gen) < 0.5
        for k, v in batch.items():
            if torch.is_tensor(v) and v.ndim >= 3:
                v[flip] = v[flip].flip(-1)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        for g in opt.param_groups:
            g["lr"] = seg_lr(g["base_lr"], it, cfg.seg_iterations, cfg.seg_lr_step)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device == "cuda"):
            loss = method.seg_step(ctx, model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress.advance(task)
    model.eval()
    torch.save(model.state_dict(), workdir / "model.pt")
    for name, samples in predict.items():
        predict_masks(ctx, model, samples, workdir / name, progress, f"segment {name}")


@torch.no_grad()
def predict_masks(ctx, model, samples, out_dir: Path, progress=None, label: str = "segment") -> None:
    """``<id>.png`` argmax of the model's scores upsampled to each image (post-CRF if ``seg_crf``)."""
    device = torch.device(ctx.device)
    task = progress.add_task(label, total=len(samples)) if progress else None
    for sample in samples:
        image = ctx.dataset.load_image(sample)
        logits = model(to_tensor(image)[None].to(device)).float()
        probs = F.softmax(F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False), 1)[0]
        probs = probs.cpu().numpy()
        if ctx.cfg.seg_crf:
            probs = crf_post(image, probs)
        save_mask(out_dir / f"{sample.id}.png", probs.argmax(0))
        if progress:
            progress.advance(task)
