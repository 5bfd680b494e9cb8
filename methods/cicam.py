"""CI-CAM (Shao et al., "Improving Weakly-supervised Object Localization via Causal Intervention",
ACM MM 2021, Sec. 3), after shaofeifei11/CI-CAM, built on NL-CCAM (``methods/nlccam.py``).

* Causal context pool ``Q`` (n × h × w, a buffer saved with the model): after each training forward
  pass ``Q ← BN(Q + λ·BN(M_π))`` (Eq. 7), π the top class of the first branch, ``M_π`` its CAM, added
  only for images whose π is a label (``utils.py`` ``old_create_attention``), BN per class plane.
* Enhanced features ``X^e = X + X ⊙ Conv1×1(Q_π)`` (Eq. 8) and two weight-shared CAM branches on X and
  X^e (:class:`wsssbench.models.nonlocal_vgg.CICAMClassifier`); loss: the sum of both branches'
  cross-entropies (Eq. 9). Localization: NL-CCAM's combinational map of ``M^e`` ranked by ``S^e``.
``docs/cicam.md`` gives each choice with its source and what the harness does differently.
"""
from __future__ import annotations

from dataclasses import dataclass

from wsssbench.errors import UserError
from wsssbench.methods.nlccam import NLCCAM, NLCCAMConfig, softmax_cross_entropy
from wsssbench.methods_api import METHODS, derive


@dataclass
class CICAMConfig(NLCCAMConfig):
    """NL-CCAM's config with the context pool's update rate; CPU-sized training, the paper's in comments."""

    # training (Sec. 4.2): Adam β (0.9, 0.99); CUB: lr 5e-4, batch 6, 100 epochs; ILSVRC: lr 1e-4,
    # batch 40, 20 epochs. The harness trains with SGD + poly (cls_lr, cls_batch_size, cls_epochs).
    cls_lr: float = 0.01                # SGD at CAM's 0.1 (head 1.0) diverges on synthetic-loc tiny (loss nan
    #                                   at step 33): X^e = X + X ⊙ Conv(Q) amplifies the features
    cicam_update_rate: float = 0.01     # λ of Eq. 7 (Sec. 4.2; Table 4 sweeps 0.002-0.08)
    wsol_threshold: float = 0.0         # Sec. 4.2: θ = 0.0 (run.sh --seg_thr 0.0)

    def resolve(self, given: set[str]) -> None:
        """NL-CCAM's checks, and λ ≥ 0."""
        super().resolve(given)
        if self.cicam_update_rate < 0:
            raise UserError(f"--set cicam_update_rate={self.cicam_update_rate}: must be 0 or more "
                            "(λ of CI-CAM Eq. 7; the paper: 0.01)")


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
    return CICAMClassifier(backbone, ctx.num_fg, pool_size(backbone, ctx.cfg.cls_size), ctx.cfg.cicam_update_rate)


def cicam_step(ctx, model, batch) -> torch.Tensor:
    """Eq. 9 on both branches; then Eq. 7 from the first branch (train2.py: after the forward pass)."""
    logits, cams, logits_e, _ = model.branches(batch["image"])
    loss = softmax_cross_entropy(logits, batch["labels"]) + softmax_cross_entropy(logits_e, batch["labels"])
    model.update_pool(cams.detach(), logits.detach(), batch["labels"])
    return loss


METHODS.add("cicam", derive(
    NLCCAM, name="cicam", config=CICAMConfig,
    summary="NL-CCAM with a causal context pool re-projected onto the features, two weight-shared CAM "
            "branches (Shao et al. 2021)",
    build_classifier=build_cicam, train_step=cicam_step))
