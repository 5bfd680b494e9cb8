"""IRNet (Ahn, Cho & Kwak, CVPR 2019) as a named method: the CAM classifier, IRN's boundary net and random
walk, then DeepLab-v2 — CONTA Table 2's "IRNet*" row and the baseline of Tables A1 and A5.

Its hooks are the CAM baseline's; what makes it IRNet is ``expansion="rw"`` (``cam --set expansion=rw``
is the same pipeline). CONTA's appendix 3.2 gives the settings the paper ran it with; the values below
are the toolkit's CPU ones where they differ, with the paper's beside them, to be set with ``--set`` on
real data:

- ResNet-50 at output stride 16 (``--set backbone=resnet50 cls_output_stride=16``), crop 512
  (``cls_size=512``), SGD lr 0.1 poly 0.9, batch 16 for the classifier and 32 for the inter-pixel
  relation model (``rw_batch_size=32``), 8,000 iterations;
- radius 10 when training the relation model (always so here, IRN ``train_irn.py``) and 5 at inference
  (``rw_radius``), β 10 (``rw_beta``), t = 256 (``rw_exp_times=8``);
- "the hard threshold parameter for CAM was set to 16 … changed to 4 and 24" (CRF background powers
  as AffinityNet's; IRN's own code keeps its confidence thresholds ``rw_conf_fg`` 0.30 / ``rw_conf_bg``
  0.05, which the toolkit follows).

``--recipe paper`` (cam's) also trains and infers the boundary net as IRN's code does: ``rw_pairs``,
``rw_augment``, ``rw_optimizer``, ``rw_infer`` = ``irn`` (docs/recipes.md "IRN's boundary net and walk").
"""
from dataclasses import dataclass

from wsssbench.methods_api import METHODS, CamConfig, derive


@dataclass
class IRNetConfig(CamConfig):
    expansion: str = "rw"       # IRN's boundary net + random walk (CONTA appendix 3.2)


METHODS.add("irnet", derive(
    METHODS.get("cam"), name="irnet", config=IRNetConfig,
    summary="IRNet: CAM seeds expanded by IRN's boundary net and random walk, then DeepLab-v2 (Ahn et al. 2019)",
))
