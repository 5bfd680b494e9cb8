"""`c2am --recipe paper`'s continued training and Global CAM beside yiping-wang/c2am's own code.

    git --git-dir=<c2am mirror> archive HEAD | tar -x -C /tmp/c2am    # or a worktree
    python benchmarks/c2am_train_side_by_side.py /tmp/c2am [--json]

C2AM's modules run unchanged from the checkout (never copied here): ``net/resnet50_cam.py`` (``Net``, the
stride-32 torchvision ResNet-50 ``train_c2am.py`` trains; ``CAM``, the stride-16 net ``make_cam.py`` /
``make_square_cam.py`` infer with), ``misc/torchutils.py`` (``PolyOptimizer``, ``mean_agg``),
``make_square_cam.py`` (``_work``), ``misc/pyutils.py`` (``sum_cams``, ``sum_cams_by_class``). Stubbed: the
ImageNet downloads (both nets get the toolkit's randomly initialised weights), ``pynvml``/``imageio``
imports, CUDA calls. ``train_c2am.py``'s loop body (lines 101-117) is four calls of those functions; it
is written out here as the file has it, since ``train()`` reads VOC from disk.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
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

from wsssbench.methods import c2am
from wsssbench.methods_api import CLS_OPTIMIZERS, METHODS, make_config
from wsssbench.models import CAMClassifier, build_backbone
from wsssbench.stages.common import poly_lr

CFG = make_config(METHODS.get("c2am"), {"recipe": "paper"})
NUM_CLASSES, MAX_STEP = 20, 10


def import_c2am(root: Path) -> types.SimpleNamespace:
    """C2AM's modules from its checkout (cwd = the checkout, as its scripts run)."""
    for name in ("pynvml", "imageio"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["pynvml"].__all__ = []
    sys.path.insert(0, str(root))
    os.chdir(root)
    names = ("net.resnet50", "net.resnet50_cam", "misc.torchutils", "misc.pyutils", "voc12.dataloader",
             "make_square_cam")
    return types.SimpleNamespace(**{n.split(".")[-1]: importlib.import_module(n) for n in names})


def base_model(seed: int = 0, dtype=torch.float32) -> CAMClassifier:
    """The paper recipe's base classifier (resnet50_irn, stride 16), randomly initialised, BatchNorm
    statistics and affine parameters set away from 0/1 (so train vs eval mode shows)."""
    torch.manual_seed(seed)
    model = CAMClassifier(build_backbone(CFG.backbone, output_stride=CFG.cls_output_stride), NUM_CLASSES)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.3, 0.7)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.to(dtype)


def c2am_net(ref, model: CAMClassifier, cls: str) -> torch.nn.Module:
    """C2AM's ``Net`` or ``CAM`` holding ``model``'s weights (its checkpoint keys ``resnet50.*``, ``classifier.*``)."""
    import torchvision
    plain = torchvision.models.resnet50       # the module C2AM's ``models`` is: patched below, called here
    state = {**model.backbone.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    with mock.patch.object(ref.resnet50.model_zoo, "load_url", lambda url: dict(state)), \
            mock.patch.object(ref.resnet50_cam.models, "resnet50",
                              lambda pretrained: plain(weights=None)):
        net = getattr(ref.resnet50_cam, cls)().to(model.classifier.weight.dtype)
    ckpt = {f"resnet50.{k}": v for k, v in model.backbone.state_dict().items()}
    missing, unexpected = net.load_state_dict({**ckpt, "classifier.weight": model.classifier.weight.data},
                                              strict=False)      # train_c2am.py:75 loads with strict=False
    assert not unexpected and all(k.startswith(("stage", "backbone", "newly_added", "resnet50.fc")) for k in missing)
    return net


def compare_training(ref, dtype=torch.float32, steps: int = 2) -> dict[str, float]:
    """The same weights, batches and Global CAM through train_c2am.py's loop and the toolkit's continued stage."""
    model = base_model(dtype=dtype)
    net = c2am_net(ref, model, "Net")
    gen = torch.Generator().manual_seed(1)
    gcam = torch.rand(NUM_CLASSES, 128, 128, generator=gen).to(dtype)
    batches = [(torch.randn(4, 3, 96, 96, generator=gen).to(dtype),
                (torch.rand(4, NUM_CLASSES, generator=gen) < 0.15).to(dtype)) for _ in range(steps)]
    lr, wd = CFG.c2am_lr, CFG.c2am_weight_decay
    groups = net.trainable_parameters()                         # train_c2am.py:77-85
    opt_ref = ref.torchutils.PolyOptimizer([{"params": groups[0], "lr": lr, "weight_decay": wd},
                                            {"params": groups[1], "lr": 10 * lr, "weight_decay": wd}],
                                           lr=lr, weight_decay=wd, max_step=MAX_STEP)
    net.train()
    ref_losses = []
    for imgs, labels in batches:                                 # train_c2am.py:105-117
        x = net(imgs)
        x = x.unsqueeze(2).unsqueeze(2) * gcam
        x = ref.torchutils.mean_agg(x, r=1)                      # cfg/c2am.yml gamma: 1
        loss = torch.nn.BCEWithLogitsLoss()(x, labels)
        opt_ref.zero_grad()
        loss.backward()
        opt_ref.step()
        ref_losses.append(loss.item())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    strides = [(m.stride, m.dilation, m.padding) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    step = c2am.adjusted_step(lambda logits: c2am.front_door_logits(logits, gcam))
    ours = []
    with c2am.continued_model(model, CFG):                      # what _continue_training wraps train() in
        model.train()
        opt = CLS_OPTIMIZERS.get(CFG.c2am_optimizer)(model, lr, wd)
        for it, (imgs, labels) in enumerate(batches):
            for g in opt.param_groups:
                g["lr"] = poly_lr(g["base_lr"], it, MAX_STEP)
            loss = step(None, model, {"image": imgs, "labels": labels})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ours.append(loss.item())
    ref_state = net.state_dict()
    params = buffers = moved = frozen = 0.0
    for k, v in model.state_dict().items():
        r = ref_state[k.replace("backbone.", "resnet50.", 1)]
        d = float((v.double() - r.double()).abs().max()) if v.is_floating_point() else float((v != r).sum())
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            buffers = max(buffers, d)
        else:
            params = max(params, d)
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var")):
            change = float((v.double() - before[k].double()).abs().max())
            moved = max(moved, change)
            if k.startswith(("backbone.conv1.", "backbone.bn1.")):
                frozen = max(frozen, change)
    after = [(m.stride, m.dilation, m.padding) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return {"loss": max(abs(a - b) for a, b in zip(ours, ref_losses)), "parameters": params,
            "bn_running_stats": buffers, "largest_parameter_change": moved, "conv1_bn1_change": frozen,
            "stride_restored": float(after != strides), **compare_inference(ref, model, net, dtype)}


def compare_inference(ref, model: CAMClassifier, net: torch.nn.Module, dtype) -> dict[str, float]:
    """The trained weights at inference: C2AM's ``CAM`` (stride 16, FixedBatchNorm) vs the toolkit's model
    after the stage (its base stride again), on one image and its flip."""
    cam_net = c2am_net(ref, model, "CAM")
    cam_net.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("resnet50.fc.")},
                            strict=True)        # make_square_cam.py:64 / make_cam.py load train_c2am.py's file
    cam_net.eval()
    model.eval()
    x = torch.randn(1, 3, 80, 112, generator=torch.Generator().manual_seed(3)).to(dtype)
    pair = torch.cat([x, x.flip(-1)])
    with torch.no_grad():
        want = cam_net(pair)                                     # resnet50_cam.py CAM.forward
        got = torch.relu(model.cams(pair))
        got = got[0] + got[1].flip(-1)
    return {"cams_after_step": float((want.double() - got.double()).abs().max()), "cam_shape_h": got.shape[-2]}


def compare_global_cam(ref, count: int = 20) -> dict[str, float]:
    """make_square_cam.py ``_work`` (six scales, each straight to 128²; ``count`` >= 20, as its progress line
    divides by count // 20) then pyutils.sum_cams_by_class / sum_cams, beside :func:`c2am.square_cams` +
    :class:`c2am.GlobalCAM` ("class" / "all")."""
    model = base_model().eval()
    model.classifier.weight.data.abs_()     # no all-zero map: sum_cams_by_class skips them (fails on an empty class)
    cam_net = c2am_net(ref, model, "CAM")
    cam_net.eval()                          # CAM.train() returns None (and never calls Module.train): no chaining
    rng = np.random.default_rng(2)
    names = [f"2007_{i + 1:06d}" for i in range(count)]        # C2AM's integer names decode to these
    images = {n: rng.integers(0, 256, (int(rng.integers(32, 72)), int(rng.integers(32, 72)), 3), dtype=np.uint8)
              for n in names}
    labels = rng.random((count, NUM_CLASSES)) < 0.15
    labels[np.arange(count), np.arange(count) % NUM_CLASSES] = True      # sum_cams_by_class needs every class
    ds = ref.dataloader.VOC12ClassificationDatasetMSF.__new__(ref.dataloader.VOC12ClassificationDatasetMSF)
    ds.img_name_list, ds.label_list = np.array([int(n.replace("_", "")) for n in names]), labels.astype(np.float32)
    ds.voc12_root, ds.img_normal, ds.scales = "", ref.dataloader.TorchvisionNormalize(), CFG.c2am_gcam_scales
    with tempfile.TemporaryDirectory() as tmp:
        config = {"cam_out_dir": tmp, "cam_square_shape": CFG.c2am_gcam_size}
        loader = ref.make_square_cam.DataLoader
        with mock.patch.object(ref.dataloader.imageio, "imread", lambda p: images[Path(p).stem], create=True), \
                mock.patch.object(ref.make_square_cam, "DataLoader",
                                  lambda d, **k: loader(d, **{**k, "num_workers": 0})), \
                mock.patch.object(torch.cuda, "device_count", lambda: 1), \
                mock.patch.object(ref.make_square_cam.cuda, "device", lambda i: contextlib.nullcontext()), \
                mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self), \
                mock.patch.object(cam_net, "cuda", lambda: cam_net), \
                contextlib.redirect_stdout(io.StringIO()):
            ref.make_square_cam._work(0, cam_net, [ds], config)
            saved = {n: np.load(Path(tmp) / f"{n}.npy", allow_pickle=True).item()["raw_outputs"] for n in names}
            by_class = ref.pyutils.sum_cams_by_class(tmp).numpy()
            over_all = ref.pyutils.sum_cams(tmp).numpy()
    acc, per_image = c2am.GlobalCAM(NUM_CLASSES, (CFG.c2am_gcam_size,) * 2), 0.0
    acc_image = c2am.GlobalCAM(NUM_CLASSES, (CFG.c2am_gcam_size,) * 2)
    for n, lab in zip(names, labels):
        cams = c2am.square_cams(model, images[n][None], CFG.c2am_gcam_scales, True, CFG.c2am_gcam_size,
                                arithmetic=CFG.cam_arithmetic)
        one = c2am.GlobalCAM(NUM_CLASSES, (CFG.c2am_gcam_size,) * 2)
        one.update(cams, torch.as_tensor(lab[None]))
        per_image = max(per_image, float(np.abs(one.sum.numpy() - saved[n]).max()))
        acc.update(cams, torch.as_tensor(lab[None]))
        from wsssbench.stages.infer_cams import multiscale_cams
        full, _ = multiscale_cams(model, images[n][None], CFG.c2am_gcam_scales, True, arithmetic=CFG.cam_arithmetic)
        acc_image.update(full, torch.as_tensor(lab[None]))
    return {"per_image_square_maps": per_image,
            "global_cam_class": float(np.abs(acc.compute("class").numpy() - by_class).max()),
            "global_cam_all": float(np.abs(acc.compute("all").numpy() - over_all).max()),
            "class_vs_all_(contrast)": float(np.abs(by_class - over_all).max()),
            "resize_image_vs_square_(contrast)": float(np.abs(acc_image.compute("class").numpy() - by_class).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of yiping-wang/c2am (outside this repository)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("WSSSBENCH_THREADS", "1")))
    ref = import_c2am(args.checkout.resolve())
    result = {"training": compare_training(ref), "training_float64": compare_training(ref, torch.float64),
              "global_cam": compare_global_cam(ref)}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for part, numbers in result.items():
        for name, value in numbers.items():
            print(f"{part:17s} {name:34s} {value:.3g}")


if __name__ == "__main__":
    main()
