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
``cls_optimizer=psa`` is SEAM's PolyOptimizer, ``cls_augment=seam`` its colour jitter, ``expansion=psa``
its random-walk step (PSA's AffinityNet, ``wsssbench/stages/psa.py``); the ``paper`` recipe sets them all.
``docs/seam.md`` gives each choice with its source and what the harness cannot do as SEAM does.
"""
from __future__ import annotations

from dataclasses import dataclass

from wsssbench.errors import UserError
from wsssbench.methods_api import CLS_OPTIMIZERS, METHODS, CamConfig, Method, Recipe


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
    rw_beta: float = 8.0                # PSA infer_aff.py beta 8 (CONTA A3.1 β = 8)
    # --- expansion=psa (PSA's AffinityNet, SEAM's README step 2; wsssbench/stages/psa.py)
    rw_psa_low: float = 4.0             # infer_SEAM.py crf_alpha[0] 4: the "la" CRF (train_aff.py --la_crf_dir)
    rw_psa_high: float = 24.0           # infer_SEAM.py crf_alpha[1] 24: the "ha" CRF (train_aff.py --ha_crf_dir)
    rw_psa_alpha: float = 16.0          # infer_aff.py --alpha: PSA 16 (CONTA A3.1 "16 by default"); SEAM's copy 6
    rw_psa_weight_decay: float = 5e-4   # train_aff.py wt_dec 5e-4

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
    for name in ("rw_psa_low", "rw_psa_high", "rw_psa_alpha"):
        if not setting(cfg, name) > 0:
            raise UserError(f"--set {name}={setting(cfg, name)}: the background power must be positive")
    if setting(cfg, "rw_psa_weight_decay") < 0:
        raise UserError(f"--set rw_psa_weight_decay={setting(cfg, 'rw_psa_weight_decay')}: must be at least 0")


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


# --- optimiser ---------------------------------------------------------------------------------------


def psa_optimizer(model, lr: float, weight_decay: float):
    """``cls_optimizer=psa``: SEAM's (and PSA's) PolyOptimizer (tool/torchutils.py) on resnet38_SEAM.py's four
    ``get_parameter_groups`` (the layers named ``classifier*`` are SEAM's from-scratch ``fc8``, ``f8_3``,
    ``f8_4``, ``f9``); :func:`wsssbench.models.psa.psa_optimizer` says what it does."""
    from wsssbench.models.psa import psa_optimizer as build
    return build(model, lr, weight_decay, new=("classifier",))


CLS_OPTIMIZERS.add("psa", psa_optimizer)


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


#: SEAM's code (YudeWang/SEAM 3212261) and its README's random-walk step (PSA's AffinityNet); docs/seam.md
#: shows the side-by-side checks. It needs SEAM's ImageNet ResNet-38 (``--weights``) and a GPU.
PAPER = Recipe("paper", "SEAM's ResNet-38 classifier, CAMs and PSA random walk, as YudeWang/SEAM's code runs them", (
    ("backbone", "resnet38"),               # train_SEAM.py --network network.resnet38_SEAM (resnet38d, stride 8)
    ("cls_output_stride", 8),
    ("cls_size", 448),                      # train_SEAM.py:44 crop_size 448 (train_aff.py crop 448 too)
    ("cls_rescale", (1.0, 768 / 448)),      # train_SEAM.py:62 RandomResizeLong(448, 768)
    ("cls_augment", "seam"),                # train_SEAM.py:62-64: PIL bicubic resize, flip, ColorJitter(.3, .3, .3, .1)
    ("cls_epochs", 8),                      # train_SEAM.py:36 max_epoches 8
    ("cls_batch_size", 8),                  # train_SEAM.py:35 batch_size 8
    ("cls_lr", 0.01),                       # train_SEAM.py:38 lr 0.01 (2x, 10x, 20x groups)
    ("cls_weight_decay", 5e-4),             # train_SEAM.py:40 wt_dec 5e-4
    ("cls_optimizer", "psa"),               # train_SEAM.py:78-84 PolyOptimizer (momentum slot = wt_dec)
    ("seam_frozen", True),                  # resnet38_SEAM.py:27 not_training, resnet38d.py Net.train (BN frozen)
    ("cam_scales", (0.5, 1.0, 1.5, 2.0)),   # infer_SEAM.py:39 scales, each with its flip
    ("cam_flip", True),
    ("seed_alpha", 16.0),                   # CONTA A3.1 (infer_SEAM.py's own out_cam_pred uses a flat 0.26)
    ("expansion", "psa"),                   # README "Random walk step": train_aff.py, infer_aff.py
    ("rw_radius", 5),                       # train_aff.py:43 radius=5, resnet38_aff.py radius 5
    ("rw_beta", 8.0),                       # infer_aff.py:61 beta 8
    ("rw_exp_times", 8),                    # CONTA A3.1 t = 256, PSA infer_aff.py logt 8 (SEAM's copy: 6)
    ("rw_psa_alpha", 16.0),                 # CONTA A3.1 16, PSA infer_aff.py alpha 16 (SEAM's copy: 6)
    ("rw_train_images", None),              # train_aff.py --train_list train_aug: every training image
    ("rw_epochs", 8),                       # train_aff.py:18 max_epoches 8
    ("rw_batch_size", 8),                   # train_aff.py:17 batch_size 8
    ("rw_lr", 0.01),                        # train_aff.py:20 lr 0.01 (PolyOptimizer, 4 groups)
    ("rw_psa_weight_decay", 5e-4),          # train_aff.py:22 wt_dec 5e-4
))


METHODS.add("seam", Method(
    name="seam",
    config=SEAMConfig,
    summary="SEAM: siamese equivariant CAMs with a pixel correlation module (Wang et al. 2020)",
    build_classifier=build_classifier,
    train_step=train_step,
    refine_cams=refine_cams,
    recipes=(PAPER,),
))
