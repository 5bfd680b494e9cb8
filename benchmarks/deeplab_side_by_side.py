"""The toolkit's DeepLab-v2 stage beside kazuto1011/deeplab-pytorch's main.py (and C2AM's balanced loss).

    python benchmarks/deeplab_side_by_side.py DEEPLAB_PYTORCH_CHECKOUT [--c2am C2AM_CHECKOUT] [--json]

On the same initial weights (the reference's MSC DeepLab-v2 with a 1-block-per-stage ResNet, its trunk
and ASPP copied into the toolkit's ``DeepLabV2``) and the same two batches, it compares

* the optimiser's parameter groups (``main.py get_params``: 1x / 10x / 20x, no decay on ASPP biases);
* one iteration with ``ITER_SIZE`` 2 (two batches, each loss / 2, one step): the loss and every parameter;
* the learning rate of each group at every iteration of a 100-iteration run (``PolynomialLR`` step_size 10);
* the augmentation (``libs/datasets/base.py _augmentation``) given the same draws (its ``random`` calls are
  replaced by the toolkit's draws), on a random image of each scale;
* with ``--c2am``: the balanced cross-entropy (``segmentation/main.py criterion_balance``) on random logits.

The reference's main.py imports tensorboard, torchnet, omegaconf, joblib and tqdm for logging only: they
are stubbed here (never in the reference checkout). Prints the max absolute difference of each.
"""
from __future__ import annotations

import argparse
import copy
import importlib.machinery
import importlib.util
import json
import random
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn


def stub_logging_modules() -> None:
    """Empty stand-ins for the reference's logging imports (they do nothing in what is compared)."""
    stubs = {"joblib": (), "omegaconf": ("OmegaConf",), "torchnet": (), "torchnet.meter": ("MovingAverageValueMeter",),
             "tqdm": ("tqdm",), "torch.utils.tensorboard": ("SummaryWriter",)}
    for name, attrs in stubs.items():
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        for attr in attrs:
            setattr(mod, attr, object)
        sys.modules[name] = mod


class _Torch2:
    """``torch`` for the reference's resize_labels, whose ``torch.LongTensor(list of float32 arrays)`` fails on
    torch 2 (it did not on torch 1.x): the same labels, stacked first."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def LongTensor(arrays):
        return torch.from_numpy(np.stack(arrays)).long()


def load_main(checkout: Path, name: str):
    """The checkout's main.py as a module, with its ``libs`` importable."""
    sys.path.insert(0, str(checkout))
    for key in [k for k in sys.modules if k == "libs" or k.startswith("libs.")]:
        del sys.modules[key]
    spec = importlib.util.spec_from_file_location(name, checkout / "main.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.torch = _Torch2()
    sys.path.remove(str(checkout))
    return mod


class Trunk(nn.Module):
    """The reference DeepLab-v2's layer1-layer5 as a toolkit backbone (``out_channels``, ``forward``)."""

    def __init__(self, ref_base: nn.Module):
        super().__init__()
        for name in ("layer1", "layer2", "layer3", "layer4", "layer5"):
            self.add_module(name, copy.deepcopy(getattr(ref_base, name)))
        self.out_channels = ref_base.aspp.c0.in_channels

    def forward(self, x):
        for name in ("layer1", "layer2", "layer3", "layer4", "layer5"):
            x = getattr(self, name)(x)
        return x


def twin_models(libs, n_classes: int = 5):
    """The reference MSC DeepLab-v2 and the toolkit's DeepLabV2 on a copy of the same weights."""
    from wsssbench.models import DeepLabV2
    torch.manual_seed(0)
    ref = libs.MSC(base=libs.DeepLabV2(n_classes=n_classes, n_blocks=[1, 1, 1, 1], atrous_rates=[6, 12, 18, 24]),
                   scales=[0.5, 0.75])
    for m in ref.modules():         # running statistics away from (0, 1), so frozen BN is visible
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = DeepLabV2(Trunk(ref.base), n_classes)
    for k, branch in enumerate(ours.aspp.branches):
        src = getattr(ref.base.aspp, f"c{k}")
        branch.weight.data.copy_(src.weight.data)
        branch.bias.data.copy_(src.bias.data)
    return ref, ours


def paired_params(ref, ours):
    """(reference parameter, toolkit parameter) pairs, trunk then ASPP."""
    pairs = list(zip(ref.base.named_parameters(), ours.named_parameters()))
    trunk = [(a, b) for (na, a), (nb, b) in pairs if not na.startswith("aspp")]
    aspp = [(getattr(ref.base.aspp, f"c{k}").weight, ours.aspp.branches[k].weight) for k in range(4)]
    aspp += [(getattr(ref.base.aspp, f"c{k}").bias, ours.aspp.branches[k].bias) for k in range(4)]
    return trunk + aspp


def compare_step(main, libs, size: int, loss: str, criterion_ref) -> dict:
    """One ITER_SIZE-2 iteration of each on the same weights and batches: loss and parameter differences."""
    from wsssbench.models.backbones import fix_batchnorm
    from wsssbench.stages import train_segmenter as ts
    ref, ours = twin_models(libs)
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        x = torch.randn(2, 3, size, size, generator=gen)
        y = torch.randint(0, 5, (2, size, size), generator=gen)
        y[:, : size // 4] = 255
        batches.append((x, y))
    lr, wd = 2.5e-4 * 40, 5e-4        # a larger lr so one step moves the weights visibly
    # ---- reference: main.py's optimiser and the body of its training loop
    opt_ref = torch.optim.SGD(params=[
        {"params": main.get_params(ref, key="1x"), "lr": lr, "weight_decay": wd},
        {"params": main.get_params(ref, key="10x"), "lr": 10 * lr, "weight_decay": wd},
        {"params": main.get_params(ref, key="20x"), "lr": 20 * lr, "weight_decay": 0.0}], momentum=0.9)
    ref.train()
    ref.base.freeze_bn()
    opt_ref.zero_grad()
    loss_ref = 0
    for images, labels in batches:
        logits = ref(images)
        iter_loss = 0   # main.py accumulates the float of a tensor that requires grad: a warning, not an error
        for logit in logits:
            _, _, H, W = logit.shape
            iter_loss += criterion_ref(logit, main.resize_labels(labels, size=(H, W)))
        iter_loss /= 2
        iter_loss.backward()
        loss_ref += float(iter_loss)
    opt_ref.step()
    # ---- toolkit: SEG_OPTIMIZERS["deeplab"], fixed BN, train_iteration with the configured loss
    fix_batchnorm(ours)
    opt = ts.deeplab_optimizer(ours, lr, wd)
    ours.train()
    ctx = SimpleNamespace(cfg=SimpleNamespace(seg_loss=loss), device="cpu")
    method = SimpleNamespace(seg_step=ts.cross_entropy_step)
    loss_ours = ts.train_iteration(ctx, method, ours, opt, [{"image": x, "mask": y} for x, y in batches])
    groups_ref = [len(g["params"]) for g in opt_ref.param_groups]
    groups = [len(g["params"]) for g in opt.param_groups]
    diff = max(float((a - b).abs().max()) for a, b in paired_params(ref, ours))
    moved = max(float((a - b).abs().max()) for a, b in paired_params(twin_models(libs)[0], ours))
    return {"size": size, "loss": loss, "loss_ref": loss_ref, "loss_ours": loss_ours,
            "loss_diff": abs(loss_ref - loss_ours), "groups_ref": groups_ref, "groups_ours": groups,
            "param_max_diff": diff, "param_max_change": moved}


def compare_lr(libs_utils) -> dict:
    """The lr of each group at each of 100 iterations: PolynomialLR(step_size 10) against ``seg_lr``."""
    from wsssbench.stages.train_segmenter import seg_lr
    params = [nn.Parameter(torch.zeros(1)) for _ in range(3)]
    base = 2.5e-4
    opt = torch.optim.SGD([{"params": [p], "lr": k * base} for p, k in zip(params, (1, 10, 20))], momentum=0.9)
    sched = libs_utils.PolynomialLR(optimizer=opt, step_size=10, iter_max=100, power=0.9)
    worst = 0.0
    for iteration in range(1, 101):         # main.py: lr in force during `iteration`, then scheduler.step
        for g, k in zip(opt.param_groups, (1, 10, 20)):
            worst = max(worst, abs(g["lr"] - seg_lr(k * base, iteration - 1, 100, every=10)))
        opt.step()
        sched.step(epoch=iteration)
    return {"iterations": 100, "lr_max_diff": worst}


def compare_augmentation(base_mod, trials: int = 40) -> dict:
    """The reference's ``_augmentation`` (cv2 bilinear, PIL nearest, pad, crop, flip) with its ``random``
    replaced by the toolkit's draws, against ``SegmentationPairs.scaled_crop``; image in BGR float as the
    reference holds it, compared before mean subtraction (a constant shift)."""
    from wsssbench.stages.train_segmenter import SegmentationPairs
    rng = np.random.default_rng(0)
    worst_img, worst_mask, crop = 0.0, 0, 41
    for t in range(trials):
        h, w = int(rng.integers(20, 70)), int(rng.integers(20, 70))
        image = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
        label = rng.integers(0, 6, (h, w)).astype(np.uint8)
        scale = float(rng.choice([0.5, 0.75, 1.0, 1.25, 1.5]))
        uy, ux, f = rng.uniform(size=3)
        ds = base_mod._BaseDataset.__new__(base_mod._BaseDataset)
        ds.base_size, ds.scales, ds.crop_size, ds.flip = None, [scale], crop, True
        ds.mean_bgr, ds.ignore_label = np.zeros(3), 255
        sh, sw = int(h * scale), int(w * scale)
        draws = iter([int(uy * (max(sh, crop) - crop + 1)), int(ux * (max(sw, crop) - crop + 1))])
        saved = (random.choice, random.randint, random.random)
        random.choice, random.randint, random.random = (lambda seq: seq[0]), (lambda a, b: next(draws)), (lambda: f)
        try:
            img_ref, lab_ref = ds._augmentation(image.copy(), label.copy())
        finally:
            random.choice, random.randint, random.random = saved
        pairs = SegmentationPairs.__new__(SegmentationPairs)
        pairs.size = crop
        out = pairs.scaled_crop({"image": torch.from_numpy(image).permute(2, 0, 1)},
                                torch.from_numpy(label.astype(np.int64)), scale, uy, ux)
        if f < 0.5:
            out = {k: v.flip(-1) for k, v in out.items()}
        worst_img = max(worst_img, float(np.abs(out["image"].permute(1, 2, 0).numpy() - img_ref).max()))
        worst_mask = max(worst_mask, int((out["mask"].numpy() != lab_ref).sum()))
    return {"trials": trials, "crop": crop, "image_max_diff": worst_img, "mask_pixels_differing": worst_mask}


def compare_balanced(c2am_main) -> dict:
    from wsssbench.stages.train_segmenter import balanced_cross_entropy
    gen = torch.Generator().manual_seed(2)
    worst = 0.0
    for _ in range(20):
        logits = torch.randn(3, 6, 17, 19, generator=gen)
        labels = torch.randint(0, 6, (3, 17, 19), generator=gen)
        labels[torch.rand(labels.shape, generator=gen) < 0.2] = 255
        worst = max(worst, abs(float(c2am_main.criterion_balance(logits, labels)) -
                               float(balanced_cross_entropy(logits, labels))))
    return {"cases": 20, "balanced_loss_max_diff": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("deeplab", type=Path, help="a kazuto1011/deeplab-pytorch checkout")
    parser.add_argument("--c2am", type=Path, help="a yiping-wang/c2am checkout (its segmentation/ folder is used)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stub_logging_modules()
    ref_main = load_main(args.deeplab.resolve(), "deeplab_main")
    sys.path.insert(0, str(args.deeplab.resolve()))
    import libs.datasets.base as base_mod
    import libs.models as libs
    import libs.utils as libs_utils
    sys.path.remove(str(args.deeplab.resolve()))     # C2AM's libs/ (no __init__.py) must not meet this one
    results = {"step_deeplab_64": compare_step(ref_main, libs, 64, "deeplab", nn.CrossEntropyLoss(ignore_index=255)),
               "step_deeplab_65": compare_step(ref_main, libs, 65, "deeplab", nn.CrossEntropyLoss(ignore_index=255)),
               "lr": compare_lr(libs_utils), "augmentation": compare_augmentation(base_mod)}
    if args.c2am:
        c2am_main = load_main((args.c2am / "segmentation").resolve(), "c2am_seg_main")
        results["balanced"] = compare_balanced(c2am_main)
        results["step_balanced_64"] = compare_step(ref_main, libs, 64, "balanced", c2am_main.criterion_balance)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for name, r in results.items():
        print(name, {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
