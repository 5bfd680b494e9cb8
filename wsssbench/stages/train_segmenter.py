"""Stage: DeepLab-v2 (ASPP 6/12/18/24) trained on the pseudo-masks, predicting val
(kazuto1011/deeplab-pytorch as CONTA and C2AM ran it: SGD momentum 0.9, poly 0.9, CE ignoring 255)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .common import poly_lr, to_tensor, training_pairs
from .expand import dense_crf, save_mask


def crf_post(image: np.ndarray, probs: np.ndarray, t: int = 10) -> np.ndarray:
    """deeplab-pytorch's post-CRF: Gaussian w 3 xy 1, bilateral w 4 xy 67 rgb 3, 10 iterations."""
    return dense_crf(image, probs, gaussian=(1, 3), bilateral=(67, 3, 4), t=t)


def run(ctx, train_samples, masks_dir: Path, val_samples, workdir: Path, progress=None) -> Path:
    """Train on ``masks_dir``; write ``model.pt`` and val predictions ``pred/<id>.png``; return the pred dir."""
    from ..models import DeepLabV2, build_backbone
    from .train_classifier import pretrained_source
    cfg, device = ctx.cfg, torch.device(ctx.device)
    model = DeepLabV2(build_backbone(cfg.backbone, pretrained=pretrained_source(cfg), output_stride=8),
                      ctx.dataset.num_classes).to(device)
    images, labels = training_pairs(ctx.dataset, train_samples, masks_dir, cfg.seg_size)
    gen = torch.Generator().manual_seed(ctx.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.seg_lr, momentum=0.9, weight_decay=cfg.seg_weight_decay)
    task = progress.add_task("train segmenter", total=cfg.seg_iterations) if progress else None
    model.train()
    for it in range(cfg.seg_iterations):
        sel = torch.randint(len(images), (min(cfg.seg_batch_size, len(images)),), generator=gen)
        x, y = images[sel], labels[sel]
        flip = torch.rand(len(sel), generator=gen) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        for g in opt.param_groups:
            g["lr"] = poly_lr(cfg.seg_lr, it, cfg.seg_iterations)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device == "cuda"):
            loss = DeepLabV2.loss(model.outputs(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress.advance(task)
    model.eval()
    torch.save(model.state_dict(), workdir / "model.pt")
    pred_dir = workdir / "pred"
    task = progress.add_task("segment val", total=len(val_samples)) if progress else None
    with torch.no_grad():
        for sample in val_samples:
            image = ctx.dataset.load_image(sample)
            logits = model(to_tensor(image)[None].to(device)).float()
            probs = F.softmax(F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False), 1)[0]
            probs = probs.cpu().numpy()
            if cfg.seg_crf:
                probs = crf_post(image, probs)
            save_mask(pred_dir / f"{sample.id}.png", probs.argmax(0))
            if progress:
                progress.advance(task)
    return pred_dir
