"""SEAM's optimiser and PSA's AffinityNet step beside ``YudeWang/SEAM``'s code (docs/seam.md records the output).

    python benchmarks/seam_side_by_side.py /path/to/SEAM-checkout [--json out.json]

The checkout's modules are imported as they are (``network.resnet38_SEAM``, ``network.resnet38_aff``,
``tool.torchutils``, ``tool.imutils``, ``tool.pyutils``); the lines of its scripts that live under
``if __name__ == '__main__'`` (train_SEAM.py's optimiser and loop body, train_aff.py's loss, infer_aff.py's
walk) are read from the checkout's files at run time and executed, never copied here. ``.cuda()`` is
the identity (CPU); ``tensorboardX`` and ``cv2`` are stubs (train_SEAM.py imports them and never uses them here).

Compared (max absolute differences, CPU float32 unless said):

1. ``cls_optimizer=psa``: SEAM's network with random weights (BatchNorm statistics randomised) and
   SEAMClassifier with the same state dict, both in SEAM's training mode (BN frozen, conv1a/B2 frozen,
   dropout off: its random masks are drawn in another order), one batch: the loss, then every parameter
   after one and two steps of SEAM's PolyOptimizer and of ours (max_step 10, so the poly lr changes).
2. PSA: the pairs (pyutils.get_indices_of_pairs), the affinity labels from a label map with 255s
   (voc12/data.py ExtractAffinityLabelInRadius), resnet38_aff.Net's affinities and train_aff.py's loss on the
   same weights and batch, its dense affinity matrix, and infer_aff.py's walk (transition matrix, walked
   scores) against the toolkit's dense and sparse walks.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def snippet(path: Path, first: str, last: str) -> str:
    """The lines of ``path`` from the first one containing ``first`` to the next containing ``last``, less the
    first one's indentation (blank and comment lines dropped)."""
    lines = path.read_text().splitlines()
    i = next(k for k, s in enumerate(lines) if first in s)
    j = next(k for k in range(i, len(lines)) if last in lines[k])
    indent = len(lines[i]) - len(lines[i].lstrip())
    return "\n".join(s[indent:] for s in lines[i:j + 1] if s.strip() and not s.lstrip().startswith("#"))


def setup(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    for name in ("tensorboardX", "cv2"):
        sys.modules.setdefault(name, types.SimpleNamespace(SummaryWriter=None))
    torch.Tensor.cuda = lambda self, *a, **k: self          # the reference runs on CUDA; here on the CPU


def randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)


def no_dropout(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d)):
            m.p = 0.0


def optimiser(checkout: Path, size: int, out: dict) -> None:
    """train_SEAM.py's optimiser and loop body beside SEAMClassifier + cls_optimizer=psa + seam_losses."""
    import network.resnet38_SEAM as ref_net

    from wsssbench.methods_api import METHODS
    seam = sys.modules[METHODS.get("seam").train_step.__module__]   # (imports every method first: cpn imports seam)
    from wsssbench.models import build_backbone
    from wsssbench.models.seam import SEAMClassifier
    from wsssbench.stages.common import poly_lr

    torch.manual_seed(0)
    ref = ref_net.Net()
    randomise_bn(ref)
    mine = SEAMClassifier(build_backbone("resnet38", output_stride=8), 20, frozen=True)
    sd = {}
    for k, v in ref.state_dict().items():
        if k == "fc8.weight":
            sd["classifier.weight"] = v[1:].clone()
        elif k.split(".")[0] in ("f8_3", "f8_4", "f9"):
            sd["classifier_pcm." + k] = v.clone()
        else:
            sd["backbone." + k] = v.clone()
    mine.load_state_dict(sd, strict=True)
    no_dropout(ref)
    no_dropout(mine)
    ns = {"torch": torch, "F": F, "np": np, "model": ref,
          "args": argparse.Namespace(lr=0.01, wt_dec=5e-4), "max_step": 10}
    exec(snippet(checkout / "train_SEAM.py", "def adaptive_min_pooling_loss", "return x"), ns)
    exec("from tool import torchutils, visualization", ns)
    exec(snippet(checkout / "train_SEAM.py", "param_groups = model.get_parameter_groups()", "max_step=max_step)"), ns)
    ref.train()
    mine.train()
    opt = seam.psa_optimizer(mine, 0.01, 5e-4)
    g = torch.Generator().manual_seed(1)
    img = torch.randn(2, 3, size, size, generator=g)
    lab = torch.zeros(2, 20)
    lab[0, 3] = lab[0, 14] = lab[1, 7] = 1
    body = snippet(checkout / "train_SEAM.py", "scale_factor = 0.3", "optimizer.step()")
    ref_params, my_params = dict(ref.named_parameters()), dict(mine.named_parameters())

    def ours(name: str) -> torch.Tensor:
        if name == "fc8.weight":
            return my_params["classifier.weight"]
        if name.split(".")[0] in ("f8_3", "f8_4", "f9"):
            return my_params["classifier_pcm." + name]
        return my_params["backbone." + name]

    before = {k: v.detach().clone() for k, v in ref_params.items()}
    for step in (1, 2):
        ns["pack"] = (None, img.clone(), lab.clone())
        exec(body, ns)
        for grp in opt.param_groups:
            grp["lr"] = poly_lr(grp["base_lr"], step - 1, 10)
        loss = sum(seam.seam_losses(mine, img.clone(), lab.clone(), 0.3, 0.2).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        diffs = {k: (p[1:] if k == "fc8.weight" else p).detach().sub(ours(k).detach()).abs().max().item()
                 for k, p in ref_params.items()}
        moved = {k: (p - before[k]).abs().max().item() for k, p in ref_params.items()}
        worst = max(diffs, key=diffs.get)
        out[f"step{step}"] = {
            "loss_ref": ns["loss"].item(), "loss_ours": loss.item(),
            "loss_absdiff": abs(ns["loss"].item() - loss.item()),
            "param_max_absdiff": diffs[worst], "param_worst": worst,
            "params_moved": sum(m > 0 for m in moved.values()), "params_total": len(moved),
            "max_update": max(moved.values()),
            "lr_groups_ref": [grp["lr"] for grp in ns["optimizer"].param_groups],
            "lr_groups_ours": [grp["lr"] for grp in opt.param_groups],
        }
    out["momentum_ref"] = ns["optimizer"].param_groups[0]["momentum"]
    out["momentum_ours"] = opt.param_groups[0]["momentum"]
    out["group_sizes_ref"] = [len(grp["params"]) for grp in ns["optimizer"].param_groups]
    out["group_sizes_ours"] = [len(grp["params"]) for grp in opt.param_groups]


def psa(checkout: Path, size: int, out: dict) -> None:
    """resnet38_aff.py, imutils.ExtractAffinityLabelInRadius, train_aff.py's loss, infer_aff.py's walk."""
    import network.resnet38_aff as ref_aff
    from tool import pyutils
    from voc12.data import ExtractAffinityLabelInRadius   # what VOC12AffDataset uses

    from wsssbench.models import build_backbone
    from wsssbench.models.psa import (PSAAffinityNet, affinity_labels, affinity_loss, affinity_matrix,
                                      pair_indices)
    from wsssbench.stages.expand import dense_transition, walk

    side = size // 8
    src, dst = pair_indices(5, side, side + 3)
    ref_from, ref_to = pyutils.get_indices_of_pairs(5, (side, side + 3))
    out["pairs_equal"] = bool(np.array_equal(src.numpy(), ref_from) and np.array_equal(dst.reshape(-1).numpy(), ref_to))

    g = torch.Generator().manual_seed(2)
    label = torch.randint(0, 4, (side, side), generator=g)
    label[torch.rand(side, side, generator=g) < 0.3] = 255
    label[:, :3] = 0
    ref_lab = ExtractAffinityLabelInRadius(cropsize=side, radius=5)(label.numpy().astype(np.uint8))
    my_lab = affinity_labels(label[None], 5)
    out["affinity_labels_equal"] = all(np.array_equal(r, m[0].numpy()) for r, m in zip(ref_lab, my_lab))
    out["affinity_label_counts"] = [int(r.sum()) for r in ref_lab]

    torch.manual_seed(3)
    ref = ref_aff.Net()
    randomise_bn(ref)
    mine = PSAAffinityNet(build_backbone("resnet38", output_stride=8), radius=5, frozen=True)
    mine.load_state_dict({k if k.split(".")[0] in ("f8_3", "f8_4", "f8_5", "f9") else "backbone." + k: v.clone()
                          for k, v in ref.state_dict().items()}, strict=True)
    no_dropout(ref)
    no_dropout(mine)
    ref.train()
    mine.train()
    img = torch.randn(2, 3, size, size, generator=g)
    labels = torch.randint(0, 3, (2, side, side), generator=g)
    labels[:, :, -5:] = 255
    aff_ref, aff_mine = ref(img), mine(img)
    out["aff_max_absdiff"] = (aff_ref - aff_mine).abs().max().item()
    out["aff_range"] = [aff_ref.min().item(), aff_ref.max().item()]
    packs = [ExtractAffinityLabelInRadius(cropsize=side, radius=5)(lab.numpy().astype(np.uint8))
             for lab in labels]
    ns = {"torch": torch, "aff": aff_ref,
          "pack": [None, [torch.from_numpy(np.stack([p[k] for p in packs])) for k in range(3)]]}
    exec(snippet(checkout / "train_aff.py", "bg_label = pack[1][0]", "loss = bg_loss/4"), ns)
    loss = affinity_loss(aff_mine, *affinity_labels(labels, 5))
    out["aff_loss_ref"], out["aff_loss_ours"] = ns["loss"].item(), loss.item()
    out["aff_loss_absdiff"] = abs(ns["loss"].item() - loss.item())
    ns["loss"].backward()
    loss.backward()
    out["aff_grad_f9_absdiff"] = (ref.f9.weight.grad - mine.f9.weight.grad).abs().max().item()
    out["aff_grad_f9_scale"] = ref.f9.weight.grad.abs().max().item()

    # infer_aff.py: the dense affinity matrix, ^beta, column-normalised, logt squarings, cams @ T
    ref.eval()
    mine.eval()
    x = torch.randn(1, 3, size, size + 16, generator=g)
    hs, ws = size // 8, (size + 16) // 8
    with torch.no_grad():
        aff_mat_ref = ref.forward(x, True)
        aff = mine(x)[0]
    mat = affinity_matrix(aff, mine.radius_for(hs, ws), hs, ws)
    out["aff_matrix_max_absdiff"] = (mat.to_dense() - aff_mat_ref).abs().max().item()
    cams = torch.rand(3, hs * ws, generator=g)
    ns = {"torch": torch, "aff_mat": aff_mat_ref, "args": argparse.Namespace(beta=8, logt=8)}
    ns["model"] = types.SimpleNamespace(forward=lambda *_: aff_mat_ref)
    exec("aff_mat = torch.pow(aff_mat, args.beta)\n"
         + snippet(checkout / "infer_aff.py", "trans_mat = aff_mat / torch.sum", "trans_mat = torch.matmul"), ns)
    trans_ref = ns["trans_mat"]
    ns["cam_vec"] = cams
    exec(snippet(checkout / "infer_aff.py", "cam_rw = torch.matmul(cam_vec", "cam_rw = torch.matmul(cam_vec"), ns)
    walked_ref = ns["cam_rw"]
    trans = dense_transition(mat, 8, 8)
    out["transition_max_absdiff"] = (trans - trans_ref).abs().max().item()
    out["transition_scale"] = trans_ref.abs().max().item()
    for method in ("dense", "sparse"):
        walked = walk(cams, mat, 8, 8, method)
        out[f"walked_{method}_max_absdiff"] = (walked - walked_ref).abs().max().item()
    exact = walk(cams.double(), mat.double(), 8, 8, "sparse")
    out["walked_scale"] = walked_ref.abs().max().item()
    out["walked_ref_vs_float64_max_absdiff"] = (walked_ref.double() - exact).abs().max().item()
    out["walked_sparse_vs_float64_max_absdiff"] = (walk(cams, mat, 8, 8, "sparse").double() - exact).abs().max().item()
    out["cells_in_no_pair"] = int(((aff_mat_ref != 0).sum(0) == 1).sum())
    agree = walk(cams, mat, 8, 8, "sparse").argmax(0) == walked_ref.argmax(0)
    out["walked_argmax_agree"] = float(agree.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a YudeWang/SEAM checkout")
    parser.add_argument("--size", type=int, default=96, help="image side (a multiple of 8; SEAM crops 448)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    setup(args.checkout)
    out: dict = {"optimiser": {}, "psa": {}}
    optimiser(args.checkout, args.size, out["optimiser"])
    psa(args.checkout, args.size, out["psa"])
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
