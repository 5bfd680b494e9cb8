"""Stage: the segmentation model trained on the pseudo-masks, predicting val (and, for CONTA, train).

The default is DeepLab-v2 (ASPP 6/12/18/24) with cross-entropy ignoring 255, as kazuto1011/deeplab-pytorch
which CONTA and C2AM ran (SGD momentum 0.9, poly 0.9); a method replaces the model with
``build_segmenter`` and the loss with ``seg_step`` (SEC's three losses, DSRG's region growing). The
``seg_`` settings of the ``paper`` recipes reproduce deeplab-pytorch's main.py (parameter groups, poly every
10 iterations, ITER_SIZE, scale/crop/flip, frozen BatchNorm) and C2AM's balanced loss (docs/recipes.md).
Batches stream from disk through DataLoader workers; every random draw is made in this process
(:class:`SegBatches`), so the numbers do not depend on the worker count.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import distributed
from ..cams import load_cams
from ..errors import UserError
from .common import extra_tensors, label_vector, loader_workers, poly_lr, resize, stream, to_tensor
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
    """The default segmentation loss, summed over the outputs: ``seg_loss`` "ce", cross-entropy ignoring 255
    (labels resized by torch's nearest-exact); "deeplab", the same on labels resized by PIL's NEAREST rule
    (:func:`nearest`, deeplab-pytorch main.py); "balanced", C2AM's (:func:`balanced_cross_entropy`)."""
    from ..models import DeepLabV2
    outputs, kind = model.outputs(batch["image"]), ctx.cfg.seg_loss
    if kind == "ce":
        return DeepLabV2.loss(outputs, batch["mask"])
    loss = balanced_cross_entropy if kind == "balanced" else functools.partial(F.cross_entropy, ignore_index=255)
    return sum(loss(out.float(), nearest(batch["mask"], out.shape[2:])) for out in outputs)


def pil_nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """The source index of each of ``n_out`` pixels as PIL's NEAREST resize picks it (Geometry.c
    ImagingScaleAffine: a position starting at half a step, the step added once per pixel, truncated).
    torch's nearest-exact multiplies instead and picks another pixel once in a while (64 → 6: one of six)."""
    step = n_in / n_out
    pos = np.cumsum(np.concatenate([[0.5 * step], np.full(n_out - 1, step)]))
    return torch.from_numpy(np.clip(pos.astype(np.int64), 0, n_in - 1))


def nearest(labels: torch.Tensor, size) -> torch.Tensor:
    """(..., H, W) integer labels at ``size`` by PIL's NEAREST rule (deeplab-pytorch main.py resize_labels and
    libs/datasets/base.py)."""
    h, w = labels.shape[-2:]
    rows, cols = pil_nearest_index(h, size[0]).to(labels.device), pil_nearest_index(w, size[1]).to(labels.device)
    return labels.index_select(-2, rows).index_select(-1, cols)


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """C2AM segmentation/main.py ``criterion_balance``: the mean cross-entropy over background pixels and the
    mean over foreground pixels (255 ignored), halved. A batch without foreground (or background) pixels
    makes C2AM's 0/0 NaN; here that half counts 0."""
    loss = F.cross_entropy(logits, labels, reduction="none", ignore_index=255)
    bg, fg = labels == 0, (labels != 0) & (labels != 255)
    return (loss[bg].sum() / bg.sum().clamp(min=1) + loss[fg].sum() / fg.sum().clamp(min=1)) / 2


def sgd_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    """``seg_optimizer=sgd``: every parameter in one group, momentum 0.9, weight decay."""
    return torch.optim.SGD([{"params": list(model.parameters()), "base_lr": lr}], lr=lr, momentum=0.9,
                           weight_decay=weight_decay)


def deeplab_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    """``seg_optimizer=deeplab``: deeplab-pytorch main.py ``get_params`` (Caffe's lr_mult / decay_mult):
    every conv outside the ASPP at ``lr``, the ASPP's conv weights at 10×, its biases at 20× without weight
    decay, momentum 0.9. Nothing else is optimised: BatchNorm's affine parameters never change."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    head = [m for name, m in convs if name.split(".")[0] == "aspp"]
    if not head:
        raise UserError("seg_optimizer=deeplab needs a segmenter with an `aspp` module (DeepLab-v2)")
    body = [p for name, m in convs if name.split(".")[0] != "aspp" for p in m.parameters()]
    groups = [(body, 1, weight_decay), ([m.weight for m in head], 10, weight_decay),
              ([m.bias for m in head if m.bias is not None], 20, 0.0)]
    return torch.optim.SGD([{"params": ps, "lr": k * lr, "base_lr": k * lr, "weight_decay": wd}
                            for ps, k, wd in groups], lr=lr, momentum=0.9)


def seg_lr(base: float, it: int, total: int, step: int = 0, every: int = 1) -> float:
    """The segmenter's learning rate at iteration ``it`` (from 0): poly 0.9 (``step`` 0), recomputed every
    ``every`` iterations (deeplab-pytorch's PolynomialLR, step_size 10), or Caffe's "step" policy,
    ``base · 0.1^(it // step)`` (SEC's and DSRG's solver.prototxt).

    >>> [round(seg_lr(1e-3, it, 8000, step=2000), 12) for it in (0, 1999, 2000, 4000)]
    [0.001, 0.001, 0.0001, 1e-05]
    >>> [round(seg_lr(1.0, it, 100, every=10), 4) for it in (9, 10, 19, 20)]
    [1.0, 0.9095, 0.9095, 0.8181]
    """
    return base * 0.1 ** (it // step) if step else poly_lr(base, it - it % max(every, 1), total)


class SegmentationPairs(torch.utils.data.Dataset):
    """Item ``(i, flip, scale, uy, ux)``: training image ``i`` with its pseudo-mask, its CAM cues (one plane
    per foreground class, zero for absent ones) and the method's extra inputs, read from disk when asked.

    ``scale`` None: all resized to ``size``² (image and cues bilinear, mask nearest), flipped if ``flip``.
    Else deeplab-pytorch's ``_augmentation`` (libs/datasets/base.py): each side × ``scale`` truncated
    (bilinear; the mask with PIL's NEAREST rule), padded at the bottom and right to ``size`` (image 0 = the
    mean colour, mask 255, cues and extras 0), the ``size``² window at ``floor(u · (side − size + 1))``
    for ``uy``, ``ux`` in [0, 1), then flipped.
    """

    def __init__(self, ctx, samples, masks_dir: Path, cams_dir: Path, size: int, extras=None):
        self.ctx, self.samples, self.masks_dir, self.cams_dir, self.size = ctx, samples, masks_dir, cams_dir, size
        self.extras = extras

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item) -> dict:
        i, flip, scale, uy, ux = item
        sample, ds = self.samples[i], self.ctx.dataset
        x = to_tensor(ds.load_image(sample))
        mask = torch.from_numpy(np.array(Image.open(self.masks_dir / f"{sample.id}.png"))).long()
        cam = load_cams(self.cams_dir / f"{sample.id}.npz")
        cams = torch.zeros((self.ctx.num_fg, *x.shape[-2:]))
        cams[torch.from_numpy(cam.keys)] = torch.from_numpy(cam.cams.astype(np.float32))
        planes = {"image": x, "cams": cams, **extra_tensors(self.extras, sample, x.shape[-2:])}
        if scale is None:
            size = (self.size, self.size)
            out = {k: resize(v, size) for k, v in planes.items()} | {"mask": resize(mask[None], size)[0]}
        else:
            out = self.scaled_crop(planes, mask, scale, uy, ux)
        if flip:
            out = {k: v.flip(-1) for k, v in out.items()}
        return {**out, "labels": label_vector(ds, sample), "index": i}

    def scaled_crop(self, planes: dict, mask: torch.Tensor, scale: float, uy: float, ux: float) -> dict:
        h, w = mask.shape
        size = (int(h * scale), int(w * scale))
        out = {k: resize(v, size) for k, v in planes.items()}
        out["mask"] = nearest(mask[None], size)[0]
        ph, pw = max(self.size - size[0], 0), max(self.size - size[1], 0)
        out = {k: F.pad(v, (0, pw, 0, ph), value=255 if k == "mask" else 0) for k, v in out.items()}
        y0 = int(uy * (size[0] + ph - self.size + 1))
        x0 = int(ux * (size[1] + pw - self.size + 1))
        return {k: v[..., y0:y0 + self.size, x0:x0 + self.size] for k, v in out.items()}


class SegBatches:
    """The segmenter's batches, every random draw made here from ``generator`` (never in a worker).

    ``scales`` empty (the toolkit's): ``batch_size`` images drawn with replacement, then a flip for each.
    Else deeplab-pytorch's DataLoader (shuffle, last partial batch kept, re-iterated when done), a scale from
    ``scales``, two crop offsets and a flip for each image.
    """

    def __init__(self, n: int, batch_size: int, batches: int, scales: tuple[float, ...], generator):
        self.n, self.batch_size, self.batches, self.scales, self.gen = n, min(batch_size, n), batches, scales, generator

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        order: list[int] = []
        for _ in range(self.batches):
            if not self.scales:
                sel = torch.randint(self.n, (self.batch_size,), generator=self.gen)
                flip = torch.rand(len(sel), generator=self.gen) < 0.5
                yield [(int(i), bool(f), None, 0.0, 0.0) for i, f in zip(sel, flip)]
                continue
            if not order:
                order = torch.randperm(self.n, generator=self.gen).tolist()
            sel, order = order[:self.batch_size], order[self.batch_size:]
            yield [self.draw(i) for i in sel]

    def draw(self, i: int) -> tuple:
        k = int(torch.randint(len(self.scales), (), generator=self.gen))
        uy, ux, f = torch.rand(3, generator=self.gen).tolist()
        return i, f < 0.5, self.scales[k], uy, ux


def run(ctx, method, train_samples, masks_dir: Path, cams_dir: Path, predict: dict[str, list], workdir: Path,
        progress=None) -> None:
    """Train on ``masks_dir``; write ``model.pt`` and, for each ``predict`` entry, ``<name>/<id>.png``.

    Each iteration adds up the gradients of ``seg_iter_size`` batches (each loss divided by it) and takes one
    step (deeplab-pytorch main.py); batches stream from disk through ``workers`` DataLoader processes.
    """
    from ..models.backbones import fix_batchnorm
    cfg, device = ctx.cfg, torch.device(ctx.device)
    model = method.build_segmenter(ctx).to(device)
    if cfg.seg_fixed_bn:
        fix_batchnorm(model)
    data = SegmentationPairs(ctx, train_samples, masks_dir, cams_dir, cfg.seg_size, method_extras(ctx, method))
    gen = torch.Generator().manual_seed(ctx.seed)
    batches = SegBatches(len(data), cfg.seg_batch_size, cfg.seg_iterations * cfg.seg_iter_size, cfg.seg_scales, gen)
    batches = distributed.rank_slices(batches, cfg.seg_batch_size, "seg_batch_size")     # torchrun: a slice each
    loader = iter(stream(data, batches, loader_workers(cfg), ctx.device))
    from ..methods_api import SEG_OPTIMIZERS
    opt = SEG_OPTIMIZERS.get(cfg.seg_optimizer)(model, cfg.seg_lr, cfg.seg_weight_decay)
    task = progress.add_task("train segmenter", total=cfg.seg_iterations) if progress else None
    model.train()
    step = distributed.ddp_step(ctx, model, method.seg_step)
    for it in range(cfg.seg_iterations):
        for g in opt.param_groups:
            g["lr"] = seg_lr(g["base_lr"], it, cfg.seg_iterations, cfg.seg_lr_step, cfg.seg_lr_every)
        train_iteration(ctx, method, model, opt, [next(loader) for _ in range(cfg.seg_iter_size)], step)
        if progress:
            progress.advance(task)
    model.eval()
    if distributed.is_main():
        torch.save(model.state_dict(), workdir / "model.pt")
    for name, samples in predict.items():
        predict_masks(ctx, model, distributed.shard(samples), workdir / name, progress, f"segment {name}")


def train_iteration(ctx, method, model, opt, batches: list[dict], step=None) -> float:
    """One optimiser step: the gradients of ``method.seg_step`` (or ``step``, its DDP form) on each batch, its
    loss divided by the batch count, added up (deeplab-pytorch main.py ITER_SIZE); returns the summed loss."""
    device, total = torch.device(ctx.device), 0.0
    opt.zero_grad(set_to_none=True)
    for batch in batches:
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device == "cuda"):
            loss = (step or method.seg_step)(ctx, model, batch)
        loss = loss / len(batches) if len(batches) > 1 else loss
        loss.backward()
        total += float(loss.detach())
    opt.step()
    return total


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
