"""`cpn` beside Ferenas/CPN's own code: CP pairs, the network (PCM + PRCM), the losses and their gradients.

    git --git-dir=<mirror of Ferenas/CPN> archive HEAD | tar -x -C /tmp/cpn
    python benchmarks/cpn_side_by_side.py /tmp/cpn [--json]

CPN's functions run unchanged from the checkout (never copied here): ``tool/imutils.py`` (``hide_patch``,
``hide_patch_ss``), ``network/resnet38_CPN.py`` (``Net``, ``PCM``, ``PRCM``, ``SpatialGather_Module``), and
the loop body of ``train_cpn.py`` (its lines from ``cam,cam_improved = model(img)`` to ``loss_cpcr = ...``,
read from the file and executed on the same tensors). The script only stubs what a CPU machine lacks
(pydensecrf; ``np.int``, removed from NumPy, for ``hide_patch_ss``). Both sides share the same random
ResNet-38 weights (BatchNorm statistics randomised, eval mode) and the same random draws; the script prints
the largest absolute difference of each comparison (docs/cpn.md records them).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsssbench.methods.cpn import cpn_losses
from wsssbench.models import build_backbone
from wsssbench.models.cpn import CPNClassifier, grid_pair, prcm, slic_labels, superpixel_pair
from wsssbench.models.seam import captured, pcm_input

NUM_FG = 20


def import_cpn(root: Path) -> types.SimpleNamespace:
    """CPN's modules from its checkout, and the loop body of train_cpn.py as a code object."""
    for name in ("pydensecrf", "pydensecrf.densecrf", "pydensecrf.utils"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["pydensecrf.utils"].unary_from_softmax = None
    if not hasattr(np, "int"):
        np.int = int                                 # hide_patch_ss's astype(np.int), NumPy < 1.24
    sys.path.insert(0, str(root))
    import importlib
    mods = {n.split(".")[-1]: importlib.import_module(n)
            for n in ("tool.imutils", "tool.visualization", "network.resnet38_CPN")}
    source = (root / "train_cpn.py").read_text()
    head = source.split("if __name__ == '__main__':")[0]
    lines = source.splitlines()
    start = next(i for i, s in enumerate(lines) if "cam,cam_improved = model(img)" in s)
    end = next(i for i, s in enumerate(lines) if "loss_cpcr =  loss_cpcr1_ohem" in s)
    body = textwrap.dedent("\n".join(lines[start:end + 1]))
    head_ns: dict = {}
    exec(compile(head.replace("import voc12.data\n", ""), "train_cpn.py", "exec"), head_ns)
    return types.SimpleNamespace(**mods, body=compile(body, "train_cpn.py", "exec"),
                                 min_pool=head_ns["adaptive_min_pooling_loss"])


def models(cpn: types.SimpleNamespace, seed: int = 0) -> tuple[torch.nn.Module, CPNClassifier]:
    """CPN's Net (random init, randomised BatchNorm statistics, eval mode) and ours with its weights."""
    torch.manual_seed(seed)
    ref = cpn.resnet38_CPN.Net()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = CPNClassifier(build_backbone("resnet38", output_stride=8), NUM_FG)
    state = {}
    for key, value in ref.state_dict().items():
        head, _, rest = key.partition(".")
        if head == "fc8":
            state["classifier.weight"] = value[1:]      # fc8's channel 0 is read by nothing
        elif head in ("f8_3", "f8_4", "f9"):
            state[f"classifier_pcm.{key}"] = value
        elif head == "f10":
            state["classifier_prcm.weight"] = value
        else:
            state[f"backbone.{key}"] = value
    ours.load_state_dict(state)
    ref.eval()                                       # resnet38d.Net.train returns None
    return ref, ours.eval()


def diff(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def compare_pairs(cpn) -> dict:
    """hide_patch (grid 224/448 as the file sets) and hide_patch_ss (SLIC 300) beside ours, same draws."""
    g = torch.Generator().manual_seed(0)
    out = {}
    img = torch.randn(3, 600, 500, generator=g)
    random.seed(7)
    img1, img2, c, _ = cpn.imutils.hide_patch(img)
    random.seed(7)
    shown, lam = grid_pair(600, 500, (224, 448), 0.5)
    out["grid"] = {"I_h": diff(img1, img * shown), "I_hbar": diff(img2, img * (1 - shown)), "lambda": abs(c - lam),
                   "hidden_share": float(1 - shown.mean())}
    smooth = F.avg_pool2d(torch.randn(1, 3, 72, 88, generator=g), 9, 1, 4)[0] * 3   # regions SLIC can find
    np.random.seed(11)
    img1, img2, c, _ = cpn.imutils.hide_patch_ss(smooth)
    np.random.seed(11)
    labels = slic_labels(smooth.numpy(), 300, 10.0)
    shown, lam = superpixel_pair(labels, 0.5, "code")
    out["superpixel"] = {"I_h": diff(img1, smooth * shown), "I_hbar": diff(img2, smooth * (1 - shown)),
                         "lambda": abs(c - lam), "segments": int(labels.max()), "hidden_share": float(1 - shown.mean())}
    return out


def compare_network(cpn, ref, ours) -> dict:
    """Forward outputs, PRCM alone on the same (Y, F), and the refined map's PCM/PRCM split."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 56, 72, generator=g)
    with torch.no_grad():
        cam_r, rv_r = ref(x)
        cam_o, rv_o = ours.seam_outputs(x)
        with captured(ours.taps) as low:
            cam = ours.classifier(ours.backbone(x))
        norm, f = pcm_input(cam), ours.classifier_pcm.features(x, *[torch.relu(t) for t in low])
        p_ref = ref.PRCM(ref.spatial_gather(f, norm), f)
        p_ours = prcm(ours.classifier_pcm.f9, ours.classifier_prcm, norm, f)
    return {"cam": diff(cam_r[:, 1:], cam_o), "cam_magnitude": float(cam_o.abs().max()),
            "refined": diff(rv_r, rv_o), "refined_magnitude": float(rv_o.abs().max()),
            "prcm_softmax": diff(p_ref, p_ours), "prcm_magnitude": float(p_ours.abs().max())}


def compare_losses(cpn, ref, ours) -> dict:
    """train_cpn.py's loop body (exec'd from the file) and cpn_losses on the same triplet, and the gradients."""
    g = torch.Generator().manual_seed(2)
    img = torch.randn(2, 3, 48, 64, generator=g)
    shown = (torch.rand(2, 1, 48, 64, generator=g) > 0.5).float()
    lam = torch.tensor([0.37, 0.62])
    labels = torch.zeros(2, NUM_FG)
    labels[0, [2, 13]] = 1
    labels[1, 6] = 1
    ns = {"model": ref, "img": img, "img1": img * shown, "img2": img * (1 - shown), "F": F, "torch": torch,
          "label": torch.cat([torch.ones(2, 1), labels], 1)[:, :, None, None],
          "ctri": lam.view(2, 1, 1, 1).repeat(1, 21, 1, 1), "uctri": (1 - lam).view(2, 1, 1, 1).repeat(1, 21, 1, 1),
          "visualization": cpn.visualization, "imutils": cpn.imutils, "adaptive_min_pooling_loss": cpn.min_pool}
    exec(cpn.body, ns)
    terms = cpn_losses(ours, img, labels, shown, lam, top=0.2)
    out = {"cls": diff(ns["loss_cls"], terms["cls"]), "tcp": diff(ns["loss_tcp_all"], terms["tcp"]),
           "cpcr": diff(ns["loss_cpcr"], terms["cpcr"]),
           "values": {k: float(v) for k, v in terms.items()}}
    (ns["loss_cls"] + ns["loss_tcp_all"] + ns["loss_cpcr"]).backward()
    sum(terms.values()).backward()
    pairs = {"fc8[1:]": (ref.fc8.weight.grad[1:], ours.classifier.weight.grad),
             "f9": (ref.f9.weight.grad, ours.classifier_pcm.f9.weight.grad),
             "f10": (ref.f10.weight.grad, ours.classifier_prcm.weight.grad),
             "f8_3": (ref.f8_3.weight.grad, ours.classifier_pcm.f8_3.weight.grad),
             "b7.conv_branch2b2": (ref.b7.conv_branch2b2.weight.grad, ours.backbone.b7.conv_branch2b2.weight.grad)}
    out["gradients"] = {k: {"max_abs_diff": diff(a, b), "magnitude": float(b.abs().max())}
                        for k, (a, b) in pairs.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of github.com/Ferenas/CPN")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpn = import_cpn(args.checkout.resolve())
    ref, ours = models(cpn)
    report = {"pairs": compare_pairs(cpn), "network": compare_network(cpn, ref, ours),
              "losses": compare_losses(cpn, ref, ours)}
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
