"""Stage: train the multi-label classifier whose CAMs the later stages use (IRN step/train_cam.py)."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import UserError
from .common import ImageLabels, poly_lr


def pretrained_source(cfg) -> str | None:
    """What the backbone starts from: the configured weights file, else None (random init).

    ``weights=torchvision`` asks for torchvision's local cache (never downloaded).
    """
    return cfg.weights or None


def build_cam_classifier(ctx) -> torch.nn.Module:
    """The CAM baseline's classifier: backbone → 1×1 conv (no bias) → GAP (IRN resnet50_cam.Net)."""
    from ..models import CAMClassifier, build_backbone
    backbone = build_backbone(ctx.cfg.backbone, pretrained=pretrained_source(ctx.cfg),
                              output_stride=ctx.cfg.cls_output_stride)
    return CAMClassifier(backbone, ctx.num_fg)


def multilabel_step(ctx, model, batch) -> torch.Tensor:
    """The CAM baseline's loss: multi-label soft margin on the image-level labels (IRN)."""
    return F.multilabel_soft_margin_loss(model(batch["image"]), batch["labels"])


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Backbone at ``lr``, freshly initialised head (``classifier``) at 10× (IRN trainable_parameters)."""
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    ids = {id(p) for p in head}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr, "weight_decay": weight_decay, "base_lr": lr},
            {"params": head, "lr": 10 * lr, "weight_decay": weight_decay, "base_lr": 10 * lr}]


def sgd_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    """``cls_optimizer=sgd``: :func:`param_groups` with momentum 0.9 and weight decay (the paper's intent)."""
    return torch.optim.SGD(param_groups(model, lr, weight_decay), lr=lr, momentum=0.9)


def irn_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    """``cls_optimizer=irn``: as IRN's code — misc/torchutils.py PolyOptimizer calls ``SGD(params, lr,
    weight_decay)``, whose third positional slot is momentum, so momentum = ``weight_decay`` (the groups of
    step/train_cam.py keep their own weight decay)."""
    return torch.optim.SGD(param_groups(model, lr, weight_decay), lr, weight_decay)


def freeze(model: torch.nn.Module, blocks: int, fixed_bn: bool) -> None:
    """The first ``blocks`` backbone blocks take no gradient (IRN net/resnet50_cam.py Net.forward detaches
    stage2's output: conv1-layer2 never train); ``fixed_bn``: every BatchNorm on its running statistics
    (IRN net/resnet50.py FixedBatchNorm)."""
    from ..models.backbones import fix_batchnorm
    for block in model.backbone.stages[:blocks] if blocks else ():
        block.requires_grad_(False)
    if fixed_bn:
        fix_batchnorm(model)


def train(ctx, model, step: Callable, samples, *, epochs: int, batch_size: int, lr: float,
          weight_decay: float, size: int, rescale: tuple[float, float] = (1.0, 1.0), workers: int = 0,
          extras: Callable | None = None, progress=None, optimizer: str = "sgd",
          augment: str = "toolkit") -> list[float]:
    """The ``optimizer`` of :data:`~wsssbench.methods_api.CLS_OPTIMIZERS` with the poly schedule; returns the mean loss
    per epoch. ``extras(sample)``: the per-image inputs augmented with each image; ``augment``: how
    (:class:`ImageLabels`)."""
    device = torch.device(ctx.device)
    model.to(device).train()
    if ctx.device == "cuda":
        model.to(memory_format=torch.channels_last)
    data = ImageLabels(ctx.dataset, samples, size, train=True, rescale=rescale, extras=extras, augment=augment)
    gen = torch.Generator().manual_seed(ctx.seed)
    sampler = None
    if distributed.active():    # batch_size is global: each of N ranks takes batch_size / N of a shuffled shard
        batch_size = distributed.local_batch(batch_size, "cls_batch_size")
        sampler = torch.utils.data.DistributedSampler(data, seed=ctx.seed)
    per_rank = len(sampler) if sampler is not None else len(data)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                                         drop_last=per_rank > batch_size, generator=gen, num_workers=workers,
                                         pin_memory=ctx.device == "cuda", persistent_workers=workers > 0)
    from ..methods_api import CLS_OPTIMIZERS
    opt = CLS_OPTIMIZERS.get(optimizer)(model, lr, weight_decay)
    step = distributed.ddp_step(ctx, model, step)
    total = epochs * len(loader)
    losses, it = [], 0
    task = progress.add_task("train classifier", total=total) if progress else None
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        running = 0.0
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = poly_lr(g["base_lr"], it, total)
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            if ctx.device == "cuda":
                batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device == "cuda"):
                loss = step(ctx, model, batch)
            if not math.isfinite(loss.item()):
                raise UserError(f"classifier training diverged (loss {loss.item()}) at step {it}; "
                                "lower cls_lr with --set cls_lr=...")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
            it += 1
            if progress:
                progress.advance(task)
        losses.append(running / max(len(loader), 1))
        if distributed.active():    # the mean over ranks
            total_loss = distributed.all_reduce_sum(torch.tensor(losses[-1], dtype=torch.float64))
            losses[-1] = float(total_loss) / distributed.world()
    model.eval()
    return losses


def method_extras(ctx, method) -> Callable | None:
    """``sample -> dict`` of the method's per-image inputs, or None (a partial, so DataLoader workers can pickle it)."""
    return None if method.extra_inputs is None else functools.partial(method.extra_inputs, ctx)


def run(ctx, method, samples, workdir: Path, progress=None) -> torch.nn.Module:
    """Build the method's classifier, train it on ``samples``, save ``model.pt`` into ``workdir``."""
    from ..io import write_json
    cfg = ctx.cfg
    model = method.build_classifier(ctx)
    freeze(model, cfg.cls_frozen_blocks, cfg.cls_fixed_bn)
    losses = train(ctx, model, method.train_step, samples, epochs=cfg.cls_epochs, batch_size=cfg.cls_batch_size,
                   lr=cfg.cls_lr, weight_decay=cfg.cls_weight_decay, size=cfg.cls_size, rescale=cfg.cls_rescale,
                   workers=cfg.cls_workers, extras=method_extras(ctx, method), progress=progress,
                   optimizer=cfg.cls_optimizer, augment=cfg.cls_augment)
    if distributed.is_main():
        torch.save(model.state_dict(), workdir / "model.pt")
        write_json(workdir / "log.json", {"epoch_loss": losses, "pretrained": pretrained_source(cfg)})
    return model
