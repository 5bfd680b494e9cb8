"""NL-CCAM (Yang et al., "Combinational Class Activation Maps for Weakly Supervised Object
Localization", WACV 2020), after Yangseung/NL-CCAM.

* Classifier (``model_cub.py``): the backbone with a non-local block after blocks 2–5, GAP and one
  fully connected layer (:class:`wsssbench.models.nonlocal_vgg.NonLocalCAM`), trained with softmax
  cross-entropy (``train_cub.py`` ``nn.CrossEntropyLoss``).
* Localization map (``IoU_check_cub_5.py`` ``returnCAM_``, ``function='quadratic'``): the class maps
  ``W · X`` ranked by score and combined with weights ``linspace(1, 0, k)²`` for the top ``k`` classes
  and ``−linspace(0, −1, n − k)²`` for the rest (the code's ``thr = 100`` of 200: ``k = n/2``), minus
  the minimum. One map per image: Top-k and GT-known boxes all come from it, as in the code.
* Boxes: the ``nlccam`` box protocol (``wsssbench.metrics.localization``), θ = 0.12 (the code's).
``docs/cicam.md`` gives each choice with its source and what the harness does differently.
"""
from __future__ import annotations

from dataclasses import dataclass

from wsssbench.errors import UserError
from wsssbench.methods_api import CLS_OPTIMIZERS, METHODS, CamConfig, Method, Recipe


@dataclass
class NLCCAMConfig(CamConfig):
    """CAM's config with NL-CCAM's map and box rule; CPU-sized training, the paper's in comments."""

    # backbone: "small" on CPU; NL-CCAM: vgg16 (ImageNet), LeakyReLU(0.2), no pool5 (14×14 maps at 224 px)
    cls_output_stride: int = 8          # NL-CCAM: 16 (vgg16 without pool5); 8 gives 64-px crops 8×8 maps
    cls_lr: float = 0.01                # SGD at CAM's 0.1 (head 1.0) with softmax CE: epoch-1 loss 5.5 (chance
    #                                   1.79), Top-1 cls 58% on synthetic-loc tiny; 0.01: 97%
    # training (train_cub.py): cls_optimizer "nlccam": Adam, lr 5e-4 head / 5e-5 backbone, per-epoch poly,
    # batch 16, 100 epochs on CUB (recipe "paper"); tiny keeps SGD (docs/cicam.md "Optimisers")
    cam_combination_split: float = 0.5  # share of ranks with positive γ (IoU_check_cub_5.py thr=100 of 200)
    wsol_protocol: str = "nlccam"       # NL-CCAM's box rule (bounding_box.py connected_component)
    wsol_threshold: float = 0.12        # IoU_check_cub_5.py threshold = 0.12

    def resolve(self, given: set[str]) -> None:
        """Refuse a split outside [0, 1] (the share of ranked classes with positive weight)."""
        if not 0 <= self.cam_combination_split <= 1:
            raise UserError(f"--set cam_combination_split={self.cam_combination_split}: must be in [0, 1] "
                            "(the share of top-ranked classes with positive weight; NL-CCAM: 0.5)")


def build_nlccam(ctx) -> torch.nn.Module:
    """model_cub.py ``CNN``: non-local blocks after blocks 2–5 of the configured backbone, GAP + FC."""
    from wsssbench.models import build_backbone
    from wsssbench.models.nonlocal_vgg import NonLocalCAM
    from wsssbench.stages.train_classifier import pretrained_source
    backbone = build_backbone(ctx.cfg.backbone, pretrained=pretrained_source(ctx.cfg),
                              output_stride=ctx.cfg.cls_output_stride)
    model = NonLocalCAM(backbone, ctx.num_fg)
    model.epoch_schedule = {"epochs": ctx.cfg.cls_epochs}         # read by the "nlccam" optimiser
    return model


def scheduled_adam(model, groups: list[dict]):
    """:class:`~wsssbench.models.nonlocal_vgg.EpochScheduledAdam` on the model's ``epoch_schedule`` (set by
    the method's build hook) and ``adam_betas`` (torch's default); a model without a schedule gets plain
    Adam on the harness's per-step poly."""
    import torch

    from wsssbench.models.nonlocal_vgg import EpochScheduledAdam
    schedule, betas = getattr(model, "epoch_schedule", None), getattr(model, "adam_betas", (0.9, 0.999))
    return (torch.optim.Adam(groups, betas=betas) if schedule is None
            else EpochScheduledAdam(groups, betas=betas, **schedule))


def nlccam_optimizer(model, lr: float, weight_decay: float):
    """``cls_optimizer=nlccam``, train_cub.py: ``Adam(classifier, lr)`` and ``Adam(cnn.conv, lr/10)``
    (backbone and non-local blocks), torch's default β (0.9, 0.999), no weight decay in the code (the
    paper recipe sets ``cls_weight_decay`` 0), ``Metric.py`` poly once per epoch."""
    from wsssbench.models.nonlocal_vgg import adam_groups
    return scheduled_adam(model, adam_groups(model, {"classifier": 1.0, "": 0.1}, lr, weight_decay))


CLS_OPTIMIZERS.add("nlccam", nlccam_optimizer)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CI-CAM Eq. 9's term ``−Σ s*_i log s_i`` (train_cub.py / train2.py ``nn.CrossEntropyLoss``); a
    multi-label image spreads s* evenly over its labels, an image without labels adds nothing."""
    import torch.nn.functional as F
    target = labels / labels.sum(1, keepdim=True).clamp_min(1)
    return -(target * F.log_softmax(logits, 1)).sum(1).mean()


def nlccam_step(ctx, model, batch) -> torch.Tensor:
    return softmax_cross_entropy(model(batch["image"]), batch["labels"])


def positive_ranks(cfg, num_classes: int) -> int:
    """How many top-ranked classes get positive γ (IoU_check_cub_5.py ``thr``)."""
    return int(num_classes * cfg.cam_combination_split)


def scaled_raw_cams(ctx, model, image) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (K,), cams (K, H, W))``: the logits of the image itself and its raw (signed, no ReLU)
    CAMs ``W · X`` summed over ``cam_scales`` (and their flips with ``cam_flip``), each upsampled to the
    image size, with the CAM baseline's rescaling (``cam_arithmetic``, :func:`multiscale_cams`).

    At scale 1 without flip this is the CAMs of the image at the feature resolution, upsampled."""
    import torch

    from wsssbench.stages.common import to_tensor
    from wsssbench.stages.infer_cams import _pil_scaled, _scaled, _upsampled
    cfg = ctx.cfg
    x = to_tensor(image)[None].to(ctx.device)
    h, w = x.shape[-2:]
    with torch.no_grad():
        logits = model.logits_and_cams(x)[0][0].float()
        total = torch.zeros((), device=ctx.device)
        for s in cfg.cam_scales:
            size = (h, w) if s == 1.0 else (max(1, round(h * s)), max(1, round(w * s)))
            xs = (_pil_scaled(image[None], s, cfg.cam_flip, ctx.device) if cfg.cam_arithmetic == "irn"
                  else _scaled(x, size, cfg.cam_flip))
            cams = model.logits_and_cams(xs)[1].float()
            if cfg.cam_flip:
                cams = cams[:1] + cams[1:].flip(-1)
            total = total + _upsampled(cams, (h, w), cfg.cam_arithmetic)
    return logits, total[0]


def multiscale_combinational_maps(ctx, model, image) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``wsol_maps`` hook: softmax scores of the image and NL-CCAM's combinational map, one copy per
    class. The class maps are the raw CAMs over ``cam_scales``/``cam_flip`` at the image size, as the
    CAM baseline's maps (:func:`scaled_raw_cams`); the combination is linear, so this is the sum of the
    per-scale combinational maps, ranked by the image's own scores. NL-CCAM evaluates at its training
    resolution (224 px, 14 × 14 maps); at the CPU recipe's 64 px a single scale gives 8 × 8 maps that
    localise poorly for any classifier (docs/cicam.md, "Why the first numbers were near zero")."""
    import torch

    from wsssbench.models.nonlocal_vgg import combinational_map
    logits, cams = scaled_raw_cams(ctx, model, image)
    combined = combinational_map(cams, logits, positive_ranks(ctx.cfg, len(logits)))
    return torch.softmax(logits, 0), combined.float().expand(len(logits), -1, -1)


PAPER = Recipe("paper", "NL-CCAM's CUB training and test (train_cub.py, IoU_check_cub_5.py): VGG-16 at 224 px, "
                "Adam 5e-4 / 5e-5 per-epoch poly, batch 16, 100 epochs; one 224-px CAM pass", (
    ("backbone", "vgg16"),                  # model_cub.py: VGG-16 (ImageNet) conv layers, no pool5
    ("weights", "torchvision"),
    ("cls_output_stride", 16),              # 14 x 14 maps at 224 px
    ("cls_size", 224),                      # LoadData.py crop_size 224
    ("cls_epochs", 100),                    # EPOCH = 100
    ("cls_batch_size", 16),                 # --batch_size 16
    ("cls_lr", 5e-4),                       # LR = 0.0005 (backbone LR/10)
    ("cls_weight_decay", 0.0),              # torch.optim.Adam(params, lr=LR): none
    ("cls_optimizer", "nlccam"),
    ("cam_scales", (1.0,)),                 # IoU_check_cub_5.py: the 224-px image once, no flip
    ("cam_flip", False)))

NLCCAM = Method(
    name="nlccam",
    config=NLCCAMConfig,
    summary="Non-local CAM network, combinational class activation map over all classes ranked by score "
            "(Yang et al. 2020)",
    build_classifier=build_nlccam,
    train_step=nlccam_step,
    wsol_maps=multiscale_combinational_maps,
    recipes=(PAPER,),
)
METHODS.add("nlccam", NLCCAM)
