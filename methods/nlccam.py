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
from wsssbench.methods_api import METHODS, CamConfig, Method


@dataclass
class NLCCAMConfig(CamConfig):
    """CAM's config with NL-CCAM's map and box rule; CPU-sized training, the paper's in comments."""

    # backbone: "small" on CPU; NL-CCAM: vgg16 (ImageNet), LeakyReLU(0.2), no pool5 (14×14 maps at 224 px)
    cls_output_stride: int = 8          # NL-CCAM: 16 (vgg16 without pool5); 8 gives 64-px crops 8×8 maps
    # training (train_cub.py): Adam, lr 1e-3 head / 1e-4 backbone, poly decay, batch 32, 100 epochs on CUB;
    # the harness trains every classifier with SGD + poly (cls_lr, cls_epochs, cls_batch_size)
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
    return NonLocalCAM(backbone, ctx.num_fg)


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


def combinational_maps(ctx, model, image) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``wsol_maps`` hook: softmax scores and NL-CCAM's combinational map at the feature resolution
    (returnCAM_ resizes it to the frame itself; the ``nlccam`` protocol does), one copy per class."""
    import torch

    from wsssbench.models.nonlocal_vgg import combinational_map
    from wsssbench.stages.common import to_tensor
    with torch.no_grad():
        logits, cams = model.logits_and_cams(to_tensor(image)[None].to(ctx.device))
        combined = combinational_map(cams[0], logits[0], positive_ranks(ctx.cfg, logits.shape[1]))
    return torch.softmax(logits[0].float(), 0), combined.float().expand(logits.shape[1], -1, -1)


NLCCAM = Method(
    name="nlccam",
    config=NLCCAMConfig,
    summary="Non-local CAM network, combinational class activation map over all classes ranked by score "
            "(Yang et al. 2020)",
    build_classifier=build_nlccam,
    train_step=nlccam_step,
    wsol_maps=combinational_maps,
)
METHODS.add("nlccam", NLCCAM)
