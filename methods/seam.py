"""SEAM (Wang et al., "Self-supervised Equivariant Attention Mechanism for WSSS", CVPR 2020).

A siamese classifier: each training image and its copy rescaled by 0.3 go through one network
(:class:`wsssbench.models.seam.SEAMClassifier`: CAM head + pixel correlation module). The loss
(``YudeWang/SEAM`` ``train_SEAM.py``) is

- the multi-label soft margin of both branches' mean CAMs, averaged, plus the "adaptive min pooling"
  term on the PCM maps (the lowest quarter of pixels pushed to 0), averaged;
- ER: the L1 distance between the rescaled CAMs of the image and the CAMs of the rescaled image;
- ECR: the L1 distance between each branch's PCM output and the other branch's one-hot CAMs, keeping
  the top 20% of pixel losses (OHEM).

CAM inference reads the PCM output at every scale and flip, normalised by min and max
(``infer_SEAM.py``); seeds take background ``(1 - max)^16`` and the SEAM scoring preset.
``docs/seam.md`` gives each choice with its source and what the harness cannot do as SEAM does.
"""
from __future__ import annotations

from dataclasses import dataclass

from wsssbench.errors import UserError
from wsssbench.methods_api import METHODS, CamConfig, Method


@dataclass
class SEAMConfig(CamConfig):
    """CAM's config with SEAM's training and seed settings; CPU-sized lengths, the code's in comments."""

    backbone: str = "small"             # SEAM: resnet38 (ImageNet weights, ilsvrc-cls_rna-a1_cls1000_ep-0001)
    cls_size: int = 64                  # train_SEAM.py crop_size 448
    cls_rescale: tuple[float, ...] = (1.0, 1.0)  # train_SEAM.py RandomResizeLong(448, 768) on crop 448: (1.0, 1.71)
    cls_epochs: int = 5                 # train_SEAM.py max_epoches 8
    cls_batch_size: int = 16            # train_SEAM.py batch_size 8
    cls_lr: float = 0.1                 # train_SEAM.py lr 0.01 (new layers 10x, poly power 0.9)
    cls_weight_decay: float = 5e-4      # train_SEAM.py wt_dec 5e-4
    seam_scale: float = 0.3             # train_SEAM.py scale_factor 0.3: the siamese branch's rescaling
    seam_ohem: float = 0.2              # train_SEAM.py: ECR keeps the top 20% pixel losses (CONTA A3.1 "OHEM")
    seam_dropout: float = 0.5           # resnet38_SEAM.py dropout7 = Dropout2d(0.5) before fc8
    seam_frozen: bool = False           # resnet38_SEAM.py train(): True (BN frozen in eval mode, blocks 1-2
    #                                   frozen); for ImageNet weights, off for the CPU default's random init
    cam_scales: tuple[float, ...] = (2.0, 3.0)   # infer_SEAM.py: (0.5, 1.0, 1.5, 2.0), each with its flip
    seed_alpha: float | None = 16.0     # infer_SEAM.py / CONTA A3.1: background (1 - max CAM)^16
    seed_protocol: str = "seam"         # SEAM evaluation.py: IoU over all classes
    rw_beta: float = 8.0                # PSA infer_aff.py beta 8 (CONTA A3.1 β = 8), for --set expansion=rw

    def resolve(self, given: set[str]) -> None:
        check(self)


def setting(cfg, name: str):
    """A SEAM setting of ``cfg``, or SEAM's default where ``cfg`` is another method's (CONTA's ``base=seam``)."""
    return getattr(cfg, name, getattr(SEAMConfig, name))


def check(cfg) -> None:
    """One UserError for a SEAM setting out of range."""
    scale, top, drop = (setting(cfg, n) for n in ("seam_scale", "seam_ohem", "seam_dropout"))
    if not 0 < scale < 1:
        raise UserError(f"--set seam_scale={scale}: the siamese branch's downscaling must lie in (0, 1)")
    if not 0 < top <= 1:
        raise UserError(f"--set seam_ohem={top}: the kept fraction of ECR pixel losses must lie in (0, 1]")
    if not 0 <= drop < 1:
        raise UserError(f"--set seam_dropout={drop}: must lie in [0, 1)")


# --- the losses (train_SEAM.py) ----------------------------------------------------------------------


def min_pooling_loss(x):
    """train_SEAM.py adaptive_min_pooling_loss: the mean ReLU of each image's h·w//4 lowest per-pixel maxima."""
    import torch
    import torch.nn.functional as F
    n, _, h, w = x.shape
    k = h * w // 4
    lowest = torch.topk(x.amax(1).view(n, -1), k=k, dim=-1, largest=False)[0]
    return F.relu(lowest).sum() / (k * n)


def er_loss(cam_rescaled, cam_small):
    """ER (train_SEAM.py ``loss_er``): mean |A(f(I)) − f(A(I))| over the foreground maps."""
    return (cam_rescaled - cam_small).abs().mean()


def ecr_loss(cam_rv, cam_other, top: float):
    """One ECR term (train_SEAM.py ``loss_ecr1``): |max_onehot(other CAMs with background) − PCM output|,
    the mean of each image's top ``top`` fraction over all (K+1)·h·w entries (OHEM), the other detached."""
    import torch

    from wsssbench.models.seam import max_onehot, with_background
    n, c, h, w = cam_rv.shape
    loss = (max_onehot(with_background(cam_other.detach())) - cam_rv).abs()
    return torch.topk(loss.view(n, -1), k=int(c * h * w * top), dim=-1)[0].mean()


def seam_losses(model, image, labels, scale: float, top: float) -> dict:
    """train_SEAM.py's loop body: the four terms for one batch (their sum is the loss)."""
    import torch
    import torch.nn.functional as F

    from wsssbench.models.seam import max_norm
    resize = dict(scale_factor=scale, mode="bilinear", align_corners=True)
    fg = labels[:, :, None, None].to(image.dtype)
    label = torch.cat([torch.ones_like(fg[:, :1]), fg], 1)           # background always present
    cam1, rv1 = model.seam_outputs(image)
    cam2, rv2 = model.seam_outputs(F.interpolate(image, **resize))
    cls = sum(F.multilabel_soft_margin_loss(c.mean((2, 3)), labels) for c in (cam1, cam2)) / 2
    rvmin = sum(min_pooling_loss((rv * label)[:, 1:]) for rv in (rv1, rv2)) / 2
    cam1, rv1 = F.interpolate(max_norm(cam1), **resize) * fg, F.interpolate(max_norm(rv1), **resize) * label
    cam2, rv2 = max_norm(cam2) * fg, max_norm(rv2) * label
    return {"cls": cls, "rvmin": rvmin, "er": er_loss(cam1, cam2),
            "ecr": ecr_loss(rv1, cam2, top) + ecr_loss(rv2, cam1, top)}


# --- hooks -------------------------------------------------------------------------------------------


def build_classifier(ctx):
    """SEAM's network on the configured backbone (resnet38_SEAM.py Net)."""
    from wsssbench.models import build_backbone
    from wsssbench.models.seam import SEAMClassifier
    from wsssbench.stages.train_classifier import pretrained_source
    cfg = ctx.cfg
    check(cfg)
    backbone = build_backbone(cfg.backbone, pretrained=pretrained_source(cfg), output_stride=cfg.cls_output_stride)
    return SEAMClassifier(backbone, ctx.num_fg, setting(cfg, "seam_dropout"), setting(cfg, "seam_frozen"))


def train_step(ctx, model, batch):
    """train_SEAM.py: loss_cls (with the min-pooling term) + loss_er + loss_ecr on the siamese pair."""
    terms = seam_losses(model, batch["image"], batch["labels"], setting(ctx.cfg, "seam_scale"),
                        setting(ctx.cfg, "seam_ohem"))
    return sum(terms.values())


def refine_cams(ctx, model, image, cams):
    """infer_SEAM.py's normalisation: the scale sum minus its minimum (+1e-5); the harness then divides
    by the maximum, which gives SEAM's ``(cam - min - 1e-5) / (max - min + 1e-5)`` but for the 1e-5 of
    the divisor and the pixels at the minimum (SEAM: a small negative value, here 0)."""
    import torch.nn.functional as F
    from wsssbench.models.seam import EPS
    return F.relu(cams - cams.flatten(1).amin(1).view(-1, 1, 1) - EPS)


METHODS.add("seam", Method(
    name="seam",
    config=SEAMConfig,
    summary="SEAM: siamese equivariant CAMs with a pixel correlation module (Wang et al. 2020)",
    build_classifier=build_classifier,
    train_step=train_step,
    refine_cams=refine_cams,
))
