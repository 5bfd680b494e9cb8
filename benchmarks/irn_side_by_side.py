"""`--recipe paper` beside jiwoon-ahn/irn's own code: augmentation, one training run of two SGD steps, CAMs.

    git -C <irn mirror> worktree add /tmp/irn HEAD      # or: git archive HEAD | tar -x -C /tmp/irn
    python benchmarks/irn_side_by_side.py --irn /tmp/irn [--json]

IRN's functions run unchanged from the checkout (never copied here); the script only stubs what a
CPU machine lacks: pydensecrf/imageio imports, the ImageNet download (IRN's ``resnet50(pretrained=True)``
gets the toolkit's randomly initialised ResNet-50 instead), CUDA calls in ``step/make_cam.py _work``.
Both sides start from the same weights and see the same batch / images; the script prints the
largest absolute difference of each comparison (docs/recipes.md records them).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import types
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from wsssbench.methods_api import METHODS, make_config
from wsssbench.models import CAMClassifier, build_backbone
from wsssbench.stages.common import irn_resize_long, poly_lr, random_crop, to_tensor
from wsssbench.stages.infer_cams import max_normalise, multiscale_cams
from wsssbench.methods_api import CLS_OPTIMIZERS
from wsssbench.stages.train_classifier import freeze

CFG = make_config(METHODS.get("cam"), {"recipe": "paper"})
NUM_CLASSES = 20


def import_irn(root: Path) -> types.SimpleNamespace:
    """IRN's modules, imported from its checkout (cwd = the checkout: voc12/dataloader.py loads a relative path)."""
    for name in ("pydensecrf", "pydensecrf.densecrf", "pydensecrf.utils", "imageio"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["pydensecrf.utils"].unary_from_labels = None
    sys.path.insert(0, str(root))
    os.chdir(root)
    import importlib
    names = ("net.resnet50", "net.resnet50_cam", "misc.torchutils", "misc.imutils", "voc12.dataloader", "step.make_cam")
    return types.SimpleNamespace(**{n.split(".")[-1]: importlib.import_module(n) for n in names})


def toolkit_model(seed: int = 0) -> CAMClassifier:
    """The recipe's classifier, randomly initialised, with BatchNorm statistics calibrated on noise (so
    that frozen BatchNorm keeps activations in range), frozen as the recipe says."""
    torch.manual_seed(seed)
    model = CAMClassifier(build_backbone(CFG.backbone, output_stride=CFG.cls_output_stride), NUM_CLASSES)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None                       # cumulative average over the calibration batches
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 128, 128))
    freeze(model, CFG.cls_frozen_blocks, CFG.cls_fixed_bn)
    return model


def irn_net(irn, model: CAMClassifier, cls: str = "Net") -> torch.nn.Module:
    """IRN's ``resnet50_cam.Net`` (or ``CAM``) holding ``model``'s weights: its ImageNet download replaced by them."""
    state = {**model.backbone.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    with mock.patch.object(irn.resnet50.model_zoo, "load_url", lambda url: dict(state)):
        net = getattr(irn.resnet50_cam, cls)()
    net.classifier.weight.data.copy_(model.classifier.weight.data)
    return net


def compare_augmentation(irn) -> dict[str, float]:
    """resize_long (same drawn long side), normalisation, crop geometry (same drawn offsets, both extremes)."""
    rng = np.random.default_rng(0)
    out = {"resize_long": 0.0, "normalise": 0.0, "crop": 0.0}
    lo, hi = (round(CFG.cls_size * r) for r in CFG.cls_rescale)
    for shape in ((375, 500, 3), (500, 333, 3), (281, 500, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        for target in (lo, (lo + hi) // 2 + 1, hi):
            with mock.patch.object(irn.imutils.random, "randint", lambda a, b, t=target: t):
                theirs = irn.imutils.random_resize_long(image, lo, hi)
            with mock.patch.object(torch, "randint", lambda n, size, t=target - lo: torch.tensor(t)):
                ours = irn_resize_long(image, lo, hi)
            out["resize_long"] = max(out["resize_long"], float(np.abs(theirs.astype(int) - ours.astype(int)).max()))
            norm = irn.dataloader.TorchvisionNormalize()(theirs)
            x = to_tensor(ours)
            out["normalise"] = max(out["normalise"], float(np.abs(norm.transpose(2, 0, 1) - x.numpy()).max()))
            for pick in (lambda n: 0, lambda n: n - 1):
                with mock.patch.object(irn.imutils.random, "randrange", pick):
                    crop_theirs = irn.imutils.random_crop(norm, CFG.cls_size, 0).transpose(2, 0, 1)
                with mock.patch.object(torch, "randint", lambda n, size, p=pick: torch.tensor(p(n))):
                    crop_ours = random_crop(x, CFG.cls_size).numpy()
                out["crop"] = max(out["crop"], float(np.abs(crop_theirs - crop_ours).max()))
    return out


def compare_training(irn, dtype=torch.float32, steps: int = 2, total: int = 10, size: int = 128) -> dict[str, float]:
    """Loss and parameters after each of ``steps`` SGD steps, IRN's train_cam.py loop beside the toolkit's,
    both in ``dtype``."""
    ours = toolkit_model().to(dtype)
    theirs = irn_net(irn, ours).to(dtype)
    theirs.train()                                     # IRN's Net.train: conv1/bn1 requires_grad False
    groups = theirs.trainable_parameters()
    lr, wd = CFG.cls_lr, CFG.cls_weight_decay
    opt_theirs = irn.torchutils.PolyOptimizer([
        {"params": groups[0], "lr": lr, "weight_decay": wd},
        {"params": groups[1], "lr": 10 * lr, "weight_decay": wd}], lr=lr, weight_decay=wd, max_step=total)
    ours.train()
    opt_ours = CLS_OPTIMIZERS.get(CFG.cls_optimizer)(ours, lr, wd)
    gen = torch.Generator().manual_seed(1)
    out = {"bn_statistics_moved": 0.0, "frozen_moved": 0.0}
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    for it in range(steps):
        x = torch.randn(4, 3, size, size, generator=gen).to(dtype)
        y = (torch.rand(4, NUM_CLASSES, generator=gen) < 0.15).float()
        loss_t = torch.nn.functional.multilabel_soft_margin_loss(theirs(x), y)
        opt_theirs.zero_grad()
        loss_t.backward()
        opt_theirs.step()
        for g in opt_ours.param_groups:
            g["lr"] = poly_lr(g["base_lr"], it, total)
        loss_o = torch.nn.functional.multilabel_soft_margin_loss(ours(x), y)
        opt_ours.zero_grad(set_to_none=True)
        loss_o.backward()
        opt_ours.step()
        out[f"loss_step{it + 1}"] = abs(loss_t.item() - loss_o.item())
        out[f"parameters_step{it + 1}"] = parameter_difference(ours, theirs)
    for k, v in ours.state_dict().items():
        if "running_" in k:
            out["bn_statistics_moved"] = max(out["bn_statistics_moved"], float((v - before[k]).abs().max()))
        if k.split(".")[1] in ("conv1", "bn1", "layer1", "layer2"):
            out["frozen_moved"] = max(out["frozen_moved"], float((v.float() - before[k].float()).abs().max()))
    out["largest_update"] = max(float((v.float() - before[k].float()).abs().max()) for k, v in ours.state_dict().items())
    out["momentum_slot"] = opt_theirs.param_groups[0]["momentum"]
    out["momentum_ours"] = opt_ours.param_groups[0]["momentum"]
    return out


def parameter_difference(ours: CAMClassifier, theirs: torch.nn.Module) -> float:
    """Largest absolute difference over the parameters and buffers of the two classifiers."""
    irn_state = theirs.resnet50.state_dict()
    diff = 0.0
    for k, v in ours.state_dict().items():
        ref = theirs.classifier.weight.detach() if k == "classifier.weight" else irn_state[k.removeprefix("backbone.")]
        diff = max(diff, float((v.float() - ref.float()).abs().max()))
    return diff


def compare_cams(irn, count: int = 20) -> dict[str, float]:
    """IRN's make_cam.py ``_work`` (CUDA calls stubbed) on ``count`` random images beside multiscale_cams."""
    model = toolkit_model().eval()
    cam_net = irn_net(irn, model, "CAM")
    cam_net.eval()
    ids = [line.strip() for line in Path("voc12/train.txt").read_text().split()[:count]]
    rng = np.random.default_rng(2)
    images = {i: rng.integers(0, 256, (int(rng.integers(40, 130)), int(rng.integers(40, 130)), 3), dtype=np.uint8)
              for i in ids}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "list.txt").write_text("\n".join(i.replace("_", "") for i in ids))   # IRN's integer names
        dataset = irn.dataloader.VOC12ClassificationDatasetMSF(str(Path(tmp) / "list.txt"), voc12_root=tmp,
                                                               scales=CFG.cam_scales)
        args = types.SimpleNamespace(num_workers=0, cam_out_dir=tmp)
        with mock.patch.object(irn.dataloader.imageio, "imread", lambda p: images[Path(p).stem], create=True), \
                mock.patch.object(torch.cuda, "device_count", lambda: 1), \
                mock.patch.object(irn.make_cam.cuda, "device", lambda i: contextlib.nullcontext()), \
                mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self), \
                mock.patch.object(cam_net, "cuda", lambda: cam_net), \
                contextlib.redirect_stdout(io.StringIO()):     # _work's progress dots
            irn.make_cam._work(0, cam_net, [dataset], args)
        saved = {i: np.load(Path(tmp) / f"{i}.npy", allow_pickle=True).item() for i in ids}
    out = {"irn_arithmetic": 0.0, "toolkit_arithmetic": 0.0, "stride4_cam": 0.0}
    for i in ids:
        keys = list(saved[i]["keys"].numpy())
        for arithmetic in ("irn", "toolkit"):
            cams, _, strided = multiscale_cams(model, images[i], CFG.cam_scales, CFG.cam_flip, arithmetic=arithmetic,
                                               stride4=True)
            diff = np.abs(max_normalise(cams[keys]).numpy() - saved[i]["high_res"]).max()
            out[f"{arithmetic}_arithmetic"] = max(out[f"{arithmetic}_arithmetic"], float(diff))
            if arithmetic == "irn":         # make_cam.py's "cam": the stride-4 maps its random walk reads
                diff = np.abs(max_normalise(strided[keys]).numpy() - saved[i]["cam"].numpy()).max()
                out["stride4_cam"] = max(out["stride4_cam"], float(diff))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--irn", type=Path, required=True, help="a checkout of jiwoon-ahn/irn (outside this repository)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("WSSSBENCH_THREADS", "1")))
    irn = import_irn(args.irn.resolve())
    result = {"augmentation": compare_augmentation(irn), "training": compare_training(irn),
              "training_float64": compare_training(irn, torch.float64), "cams": compare_cams(irn)}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for part, numbers in result.items():
        for name, value in numbers.items():
            print(f"{part:13s} {name:22s} {value:.3g}")


if __name__ == "__main__":
    main()
