"""The segmentation scoring protocols of the WSSS lineages, one named preset each.

Every number wsssbench prints carries the name of the preset that produced it. The presets differ only
in how a confusion matrix becomes IoUs and a mean, and in what a predicted 255 (ignore) means:

======== ============================ ========================================= =====================
preset   IoU                          mean over                                 predicted 255
======== ============================ ========================================= =====================
irn      TP / (TP + FP + FN)          classes with a non-empty union (nanmean)  background
seam     TP / (TP + FP + FN + 1e-10)  all classes (absent ones count 0)         a miss of the GT class
deeplab  TP / (TP + FP + FN)          classes present in the ground truth       an error
======== ============================ ========================================= =====================

>>> import numpy as np
>>> m = np.array([[2, 1, 0], [0, 1, 0], [0, 0, 0]])   # [gt, pred]; class 2 absent on both sides
>>> round(PROTOCOLS.get("irn").scores(m, np.zeros(3, np.int64))[0], 4)
58.3333
>>> round(PROTOCOLS.get("seam").scores(m, np.zeros(3, np.int64))[0], 4)
38.8889
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..registry import Registry


@dataclass(frozen=True)
class SegProtocol:
    name: str
    summary: str
    source: str          # the reference file whose arithmetic this preset reproduces
    average: str         # "union": nanmean over non-empty unions; "all": every class; "gt": GT-present classes
    void_pred: str       # what a predicted 255 is: "background", "miss" or "error"
    eps: float = 0.0     # added to the IoU denominator

    def scores(self, matrix: np.ndarray, void: np.ndarray) -> tuple[float, np.ndarray]:
        """(mIoU, per-class IoU), both in percent; a class without a defined IoU is NaN.

        ``matrix`` is the int64 ``[gt, pred]`` confusion, ``void[c]`` the GT-``c`` pixels predicted 255.
        """
        matrix = np.asarray(matrix, dtype=np.int64)
        void = np.asarray(void, dtype=np.int64)
        if self.void_pred == "background":
            matrix = matrix.copy()
            matrix[:, 0] += void
            void = np.zeros_like(void)
        elif self.void_pred == "error" and void.any():
            raise UserError(f"protocol {self.name}: {int(void.sum())} predicted pixels are 255 (ignore), which "
                            "deeplab-pytorch's metric cannot score; use --protocol irn or seam")
        tp = np.diag(matrix).astype(np.float64)
        gt = matrix.sum(axis=1) + void
        union = gt + matrix.sum(axis=0) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (union + self.eps)
        if self.average == "all":
            miou = float(np.mean(iou))
        else:
            keep = union > 0 if self.average == "union" else gt > 0
            miou = float(np.mean(iou[keep])) if keep.any() else float("nan")
        return 100.0 * miou, 100.0 * iou


PROTOCOLS: Registry[SegProtocol] = Registry("segmentation protocol")
for _p in (
    SegProtocol("irn", "IRN/CONTA/C2AM/ReCAM: nanmean IoU over non-empty unions; predicted 255 = background",
                "jiwoon-ahn/irn@a2ece00:step/eval_cam.py, step/eval_sem_seg.py (chainercv confusion)",
                average="union", void_pred="background"),
    SegProtocol("seam", "SEAM/CPN: IoU + 1e-10 denominator, mean over all classes; predicted 255 = miss",
                "YudeWang/SEAM@3212261:evaluation.py (do_python_eval)", average="all", void_pred="miss",
                eps=1e-10),
    SegProtocol("deeplab", "deeplab-pytorch (DeepLab stage of CONTA/C2AM): mean over classes present in the GT",
                "kazuto1011/deeplab-pytorch:libs/utils/metric.py (scores)", average="gt", void_pred="error"),
):
    PROTOCOLS.add(_p.name, _p)


def resolve_protocols(name: str) -> list[SegProtocol]:
    """``"all"`` → every preset (sorted by name); otherwise the one named preset."""
    if name == "all":
        return [PROTOCOLS.get(n) for n in PROTOCOLS.names()]
    return [PROTOCOLS.get(name)]
