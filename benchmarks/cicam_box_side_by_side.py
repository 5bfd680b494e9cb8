"""The `cicam` box protocol beside shaofeifei11/CI-CAM's own test code, on tests/test_wsol_cicam.py's fixture.

    python benchmarks/cicam_box_side_by_side.py /path/to/CI-CAM [--json]

Runs CI-CAM's ``utils.py`` (``create_rois``, ``compute_gt_rois``, ``pred_bbox_resize_imagesize``,
``localization_acc``, looped per image as ``tmp_test.py`` does, on CPU: ``config.device`` set to "cpu",
``np.product`` shimmed for numpy 2) and the toolkit's protocol on the same CAMs and crop-pass scores;
prints both sets of boxes and accuracies and the number of differing boxes. ``--json`` prints the
reference's numbers as the test stores them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def reference(checkout: str) -> dict:
    np.product = np.prod                                     # utils.py _connected_component (numpy < 2)
    argv, sys.argv = sys.argv, [sys.argv[0]]                 # config.py parses the command line on import
    sys.path.insert(0, checkout)
    import config as cfg
    import torch
    import utils
    from torch import nn
    sys.argv = argv
    cfg.device = "cpu"
    cams, scores, sizes, labels, gts = fixture_inputs()
    upsample = nn.Upsample(scale_factor=cfg.total_stride, mode="bilinear")
    out = {"frame_boxes": [], "image_boxes": {0.0: [], 0.3: [], 0.6: []}}
    hits = dict.fromkeys(("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known"), 0.0)
    for i in range(len(cams)):
        cam = torch.from_numpy(cams[i:i + 1])
        pred_sort, pred_ids = torch.sort(torch.from_numpy(scores[i:i + 1]), dim=-1, descending=True)
        rois = utils.create_rois(pred_sort, pred_ids, cam, upsample, seg_thr=0.0, topk=cfg.top_k, combination=1,
                                 function="quadratic", mean_num=20)
        img_size = torch.tensor([float(sizes[i][0]), float(sizes[i][1])])
        gt = torch.from_numpy(np.asarray([gts[i].astype(float).tolist()]))
        loc5 = cls5 = 0
        for j in range(cfg.top_k):
            match = pred_ids[0, j].item() == labels[i]
            box = utils.pred_bbox_resize_imagesize(rois[0][j], img_size)
            loc5 += utils.localization_acc(box, gt, match)
            cls5 += match
            if j == 0:
                hits["top1_cls"] += match
                hits["top1_loc"] += utils.localization_acc(box, gt, match)
        hits["top5_loc"] += loc5 >= 1
        hits["top5_cls"] += cls5 >= 1
        for thr in out["image_boxes"]:
            g = utils.compute_gt_rois(pred_sort, pred_ids, cam, upsample, seg_thr=thr, labels=labels[i:i + 1],
                                      combination=1, function="quadratic", mean_num=20)
            image_box = utils.pred_bbox_resize_imagesize(g[0], img_size)
            out["image_boxes"][thr].append(image_box.tolist())
            if thr == 0.0:
                hits["gt_known"] += utils.localization_acc(image_box, gt, True)
        out["frame_boxes"].append(rois[0][0].tolist())
    out.update({k: float(v) / len(cams) for k, v in hits.items()})
    return out


def ours() -> dict:
    from wsssbench.metrics.localization import BOX_PROTOCOLS, cicam_box, cicam_to_image
    cams, scores, sizes, _, _ = fixture_inputs()
    proto = BOX_PROTOCOLS.get("cicam")
    out = {"frame_boxes": [], "image_boxes": {0.0: [], 0.3: [], 0.6: []}}
    for i in range(len(cams)):
        frame = proto.score_map(per_class(i, cams, scores), (224, 224))
        out["frame_boxes"].append(cicam_box(frame, 0.0).tolist())
        for thr in out["image_boxes"]:
            box = cicam_box(frame, thr)[None]
            out["image_boxes"][thr].append(cicam_to_image(box, (224, 224), (int(sizes[i][1]), int(sizes[i][0])))[0]
                                           .tolist())
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_wsol_cicam import REF_ACCURACY, fixture_inputs, per_class   # noqa: E402
    ref = reference(sys.argv[1])
    if "--json" in sys.argv:
        print(json.dumps(ref))
        sys.exit(0)
    mine = ours()
    differ = sum(a != b for a, b in zip(ref["frame_boxes"], mine["frame_boxes"]))
    differ += sum(a != b for t in ref["image_boxes"] for a, b in zip(ref["image_boxes"][t], mine["image_boxes"][t]))
    print(f"boxes compared: {len(ref['frame_boxes']) * 4}, differing: {differ}")
    for key, value in REF_ACCURACY.items():
        print(f"{key}: CI-CAM code {ref[key]:.3f}   test's stored {value:.3f}")
    print("(the toolkit's accuracies on the same files: tests/test_wsol_cicam.py::test_accuracies_equal_ci_cams_code)")
