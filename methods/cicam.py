"""CI-CAM (Shao et al., "Improving Weakly-supervised Object Localization via Causal Intervention",
ACM MM 2021, Sec. 3), after shaofeifei11/CI-CAM, built on NL-CCAM (``methods/nlccam.py``).

* Causal context pool ``Q`` (n × h × w, a buffer saved with the model): after each training forward
  pass ``Q ← BN(Q + λ·BN(M_π))`` (Eq. 7), π the top class of the first branch, ``M_π`` its CAM, added
  only for images whose π is a label (``utils.py`` ``old_create_attention``), BN per class plane.
* Enhanced features ``X^e = X + X ⊙ Conv1×1(Q_π)`` (Eq. 8) and two weight-shared CAM branches on X and
  X^e (:class:`wsssbench.models.nonlocal_vgg.CICAMClassifier`); loss: the sum of both branches'
  cross-entropies (Eq. 9).
* Localization as ``tmp_test.py``: the class ranking ``S^e`` from a centre-crop pass (resize the short
  side to ``cicam_rank_resize``, centre crop ``cicam_test_size``), the CAMs ``M^e`` from the image resized
  to ``cicam_test_size``², combined with the code's γ ``−(k/(C−1))²`` (``utils.py``
  ``torch_cam_combination``, ``cam_combination_split`` 0), boxed by the ``cicam`` protocol at θ 0.
* Training: ``cls_optimizer=cicam``, train2.py's Adam groups and per-epoch schedule (recipe ``paper``).
``docs/cicam.md`` gives each choice with its source and what the harness does differently.
"""
from __future__ import annotations

from dataclasses import dataclass

from wsssbench.errors import UserError
from wsssbench.methods.nlccam import (NLCCAM, NLCCAMConfig, positive_ranks, scaled_raw_cams, scheduled_adam,
                                      softmax_cross_entropy)
from wsssbench.methods_api import CLS_OPTIMIZERS, METHODS, Recipe, derive


@dataclass
class CICAMConfig(NLCCAMConfig):
    """NL-CCAM's config with the context pool's update rate; CPU-sized training, the paper's in comments."""

    # training (Sec. 4.2): Adam β (0.9, 0.99) (the code: torch's default 0.999); CUB: lr 5e-4, batch 6, 100
    # epochs; ILSVRC: lr 1e-4, batch 40, 20 epochs. cls_optimizer "cicam" is train2.py's (recipe "paper");
    # tiny keeps SGD (docs/cicam.md "Optimisers")
    cls_lr: float = 0.01                # SGD at CAM's 0.1 (head 1.0) diverges on synthetic-loc tiny (loss nan
    #                                   at step 33): X^e = X + X ⊙ Conv(Q) amplifies the features
    cicam_update_rate: float = 0.01     # λ of Eq. 7 (Sec. 4.2; Table 4 sweeps 0.002-0.08)
    cicam_context_pool: bool = True     # False: Table 3's "TwoC" (train2.py --attention 0: X^e = X, no pool)
    cicam_decay_epoch: int = 14         # run.sh --decay_epoch 14 (CUB, VGG-16): lr x decay_rate every 14 epochs
    cicam_decay_rate: float = 0.5       # run.sh --decay_rate 0.5
    cicam_beta2: float = 0.999          # Adam β2 of cls_optimizer "cicam": train2.py torch's default; the paper 0.99
    cicam_test_size: int = 64           # tmp_test.py: maps of the image resized to crop_size² (224); tiny: 64
    cicam_rank_resize: int = 87         # tmp_test.py: ranking from Resize(304) + CenterCrop(224); 64·304/224
    cam_combination_split: float = 0.0  # utils.py torch_cam_combination 'quadratic': γ = −(k/(C−1))², all ≤ 0
    wsol_protocol: str = "cicam"        # tmp_test.py / utils.py box rule (wsssbench.metrics.localization)
    wsol_threshold: float = 0.0         # Sec. 4.2: θ = 0.0 (tmp_test.py seg_thr = [0.0])

    def resolve(self, given: set[str]) -> None:
        """NL-CCAM's checks, and λ ≥ 0."""
        super().resolve(given)
        if self.cicam_update_rate < 0:
            raise UserError(f"--set cicam_update_rate={self.cicam_update_rate}: must be 0 or more "
                            "(λ of CI-CAM Eq. 7; the paper: 0.01)")
        if not 0 < self.cicam_test_size <= self.cicam_rank_resize:
            raise UserError(f"--set cicam_test_size={self.cicam_test_size}, cicam_rank_resize="
                            f"{self.cicam_rank_resize}: need 0 < test size <= rank resize (the centre crop "
                            "is cut from the resized image; CI-CAM: 224 and 304)")


def pool_size(backbone, size: int) -> tuple[int, int]:
    """The feature map's (h, w) for a ``size``² training crop (cub_vgg16.py: attention_size 14 at 224)."""
    import torch
    mode = backbone.training
    with torch.no_grad():
        h, w = backbone.eval()(torch.zeros(1, 3, size, size)).shape[-2:]
    backbone.train(mode)
    return int(h), int(w)


def build_cicam(ctx) -> torch.nn.Module:
    """NL-CCAM's network with the context pool sized to the training crop's feature map."""
    from wsssbench.models import build_backbone
    from wsssbench.models.nonlocal_vgg import CICAMClassifier
    from wsssbench.stages.train_classifier import pretrained_source
    backbone = build_backbone(ctx.cfg.backbone, pretrained=pretrained_source(ctx.cfg),
                              output_stride=ctx.cfg.cls_output_stride)
    cfg = ctx.cfg
    model = CICAMClassifier(backbone, ctx.num_fg, pool_size(backbone, cfg.cls_size), cfg.cicam_update_rate,
                            cfg.cicam_context_pool)
    model.epoch_schedule = {"epochs": cfg.cls_epochs, "decay_epoch": cfg.cicam_decay_epoch,
                            "decay_rate": cfg.cicam_decay_rate}          # read by the "cicam" optimiser
    model.adam_betas = (0.9, cfg.cicam_beta2)
    return model


def cicam_optimizer(model, lr: float, weight_decay: float):
    """``cls_optimizer=cicam``, train2.py (``--shared_classifier 1``): one Adam (torch's default β (0.9, 0.999);
    the paper says 0.99) over the classifier at lr and ``mask2attention`` and the backbone (with its
    non-local blocks) at lr × ``backbone_rate`` 0.1 (the unused regressor is left out), no weight decay
    in the code; ``utils.py`` ``poly_lr_scheduler`` once per epoch: poly 0.9 × ``decay_rate^⌊e/decay_epoch⌋``."""
    from wsssbench.models.nonlocal_vgg import adam_groups
    return scheduled_adam(model, adam_groups(model, {"classifier": 1.0, "context_attention": 0.1, "": 0.1},
                                             lr, weight_decay))


CLS_OPTIMIZERS.add("cicam", cicam_optimizer)


def cicam_step(ctx, model, batch) -> torch.Tensor:
    """Eq. 9 on both branches; then Eq. 7 from the first branch (train2.py: after the forward pass)."""
    logits, cams, logits_e, _ = model.branches(batch["image"])
    loss = softmax_cross_entropy(logits, batch["labels"]) + softmax_cross_entropy(logits_e, batch["labels"])
    model.update_pool(cams.detach(), logits.detach(), batch["labels"])
    return loss


def centre_crop(image, short: int, size: int):
    """torchvision ``Resize(short)`` (short side, PIL bilinear) then ``CenterCrop(size)`` of a uint8 (H, W, 3)."""
    import numpy as np
    from PIL import Image
    h, w = image.shape[:2]
    ow, oh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    resized = np.asarray(Image.fromarray(image).resize((ow, oh), Image.BILINEAR))
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    return resized[top:top + size, left:left + size]


def two_pass_maps(ctx, model, image):
    """The ``wsol_maps`` hook, as tmp_test.py: scores ``S^e`` of the centre-crop pass (they rank the
    classes, and are Top-k cls); the combinational map of ``M^e`` from the image resized (PIL bilinear)
    to ``cicam_test_size``² over ``cam_scales``/``cam_flip`` (:func:`scaled_raw_cams`), one copy per class."""
    import numpy as np
    import torch
    from PIL import Image

    from wsssbench.models.nonlocal_vgg import combinational_map
    from wsssbench.stages.common import to_tensor
    cfg = ctx.cfg
    crop = centre_crop(image, cfg.cicam_rank_resize, cfg.cicam_test_size)
    with torch.no_grad():
        logits = model.logits_and_cams(to_tensor(crop)[None].to(ctx.device))[0][0].float()
    size = (cfg.cicam_test_size, cfg.cicam_test_size)
    test = image if image.shape[:2] == size else np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    _, cams = scaled_raw_cams(ctx, model, test)
    combined = combinational_map(cams, logits, positive_ranks(cfg, len(logits)))
    return torch.softmax(logits, 0), combined.float().expand(len(logits), -1, -1)


PAPER = Recipe("paper", "CI-CAM's CUB run (run.sh, train2.py, tmp_test.py): VGG-16 at 224 px, Adam 5e-4 (backbone "
                "0.1x), per-epoch poly and 0.5 every 14 epochs, batch 6, 100 epochs; maps at 224, ranking "
                "from 304 + centre crop 224", (
    ("backbone", "vgg16"),                  # cub_vgg16.py Non_Local_VGG16 (ImageNet conv weights), no pool5
    ("weights", "torchvision"),
    ("cls_output_stride", 16),              # attention_size 14 at 224 px
    ("cls_size", 224),                      # crop_size 224
    ("cls_epochs", 100),                    # --epoch 100
    ("cls_batch_size", 6),                  # --batch_size 6
    ("cls_lr", 5e-4),                       # --lr 0.0005
    ("cls_weight_decay", 0.0),              # torch.optim.Adam(..., lr=lr): none
    ("cls_optimizer", "cicam"),
    ("cam_scales", (1.0,)),                 # one pass, no flip
    ("cam_flip", False),
    ("cicam_test_size", 224),
    ("cicam_rank_resize", 304)))            # --input_size 304

METHODS.add("cicam", derive(
    NLCCAM, name="cicam", config=CICAMConfig,
    summary="NL-CCAM with a causal context pool re-projected onto the features, two weight-shared CAM "
            "branches (Shao et al. 2021)",
    build_classifier=build_cicam, train_step=cicam_step, wsol_maps=two_pass_maps, recipes=(PAPER,)))
