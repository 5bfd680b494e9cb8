"""C2AM (Wang, "Causal Class Activation Maps for WSSS") and its "CAM+Constant" ablation.

C2AM continues training a pre-trained CAM classifier with the front-door adjusted score
(paper Eq. 2-3, App. B): the class logits, multiplied by the **Global CAM** of their class and
mean-pooled, go into the BCE loss. The Global CAM of class z is the mean, over the training images
labelled z, of their max-normalised CAMs from the pre-trained classifier at a fixed resolution
(uniform P(x) over the N_z images, Sec. 3.3). Because the mean is linear, the adjusted score is the
logit times the constant M_z = mean of Global CAM_z (Eq. 6, Fig. 7); "CAM+Constant" replaces M_z by
0.2 for every class (Table 1 caption).

The hyperparameters the paper prints (its Tables 2-4) are data in ``c2am_hparams.yaml``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import yaml

from wsssbench import distributed
from wsssbench.errors import UserError
from wsssbench.io import atomic_path, save_figure, write_json
from wsssbench.methods.cam import PAPER as CAM_PAPER
from wsssbench.methods_api import METHODS, CamConfig, ClassifierStage, Method, Recipe

HPARAMS_PATH = Path(__file__).with_name("c2am_hparams.yaml")
NORM_EPS = 1e-5  # CAM_z / (max CAM_z + 1e-5): IRN's and c2am's make_cam.py / make_square_cam.py
#: c2am_gcam_resize: "image": scales summed at the image size, then squashed to size² (the toolkit's CAMs);
#: "square": each scale's map resized straight to size², then summed (c2am make_square_cam.py _work).
GCAM_RESIZE = ("image", "square")
#: c2am_gcam_mean: "class": per class over the images labelled with it (paper Eq. 2; pyutils.sum_cams_by_class);
#: "all": over every image, zeros where the class is absent (pyutils.sum_cams, the map x N_z / N).
GCAM_MEAN = ("class", "all")


def load_hparams(path: Path = HPARAMS_PATH) -> dict:
    """The paper's Tables 2-4 (and the Global CAM / constant settings) as a dict of sections."""
    return yaml.safe_load(Path(path).read_text())


_HP = load_hparams()
_CLS, _RW = _HP["classifier"], _HP["random_walk"]


@dataclass
class ContinuedConfig(CamConfig):
    """CAM's config plus the continued training of the base classifier (C2AM Table 2; App. D).

    The ``c2am_`` fields join only the continued stage's cache key, so ``cam``, ``cam_constant``
    and ``c2am`` share one base classifier. Table 3's thresholds replace IRN's for the random walk.
    """

    c2am_lr: float = _CLS["lr"]                      # Table 2: 0.0005 (head 10x, poly 0.9, as the base stage)
    c2am_epochs: int = _CLS["epochs"]                # Table 2: 4
    c2am_batch_size: int = _CLS["batch_size"]        # Table 2: 16
    c2am_size: int | None = None                     # Table 2 crop 512 = IRN's base crop; None: the base cls_size
    c2am_weight_decay: float = _CLS["weight_decay"]  # Table 2: 1e-4
    # How train_c2am.py trains (the paper recipe sets the code's values; these defaults keep tiny's records):
    c2am_output_stride: int | None = None            # None: the base's; code 32 (resnet50_cam.py Net: torchvision's)
    c2am_fixed_bn: bool = False                      # False: BatchNorm on batch statistics (code: train() mode)
    c2am_frozen_blocks: int = 0                      # code 1: Net.train() takes conv1/bn1 out of training
    c2am_rescale: tuple[float, ...] = (1.0, 1.0)     # code resize_long (320, 640) with crop 512: (0.625, 1.25)
    c2am_augment: str = "toolkit"                    # code "irn": voc12/dataloader.py VOC12ClassificationDataset
    c2am_optimizer: str = "sgd"                      # code "irn": misc/torchutils.py PolyOptimizer (momentum = wd)
    rw_conf_fg: float = _RW["conf_fg_thres"]         # Table 3: 0.38 (code 0.375)
    rw_conf_bg: float = _RW["conf_bg_thres"]         # Table 3: 0.10
    rw_bg_threshold: float = _RW["sem_seg_bg_thres"]  # Table 3: 0.21 (code 0.20)


@dataclass
class C2AMConfig(ContinuedConfig):
    c2am_gcam_size: int = _HP["global_cam"]["size"]  # code cam_square_shape 128 (the paper names none)
    c2am_gcam_scales: tuple[float, ...] = tuple(_HP["global_cam"]["scales"])  # code cam_scales (six)
    c2am_gcam_resize: str = "image"   # GCAM_RESIZE: "square": each scale straight to size² (code make_square_cam.py)
    c2am_gcam_mean: str = "class"     # GCAM_MEAN: "class": 1/N_z (paper Eq. 2); "all": 1/N (code pyutils.sum_cams)


@dataclass
class CamConstantConfig(ContinuedConfig):
    c2am_constant: float = _HP["constant"]["value"]  # Table 1 caption: logits x 0.2


class GlobalCAM:
    """Accumulator of the per-class mean of max-normalised CAMs (paper Eq. 2, "Global CAM").

    ``update`` takes a batch of CAMs (any resolution) with the image-level labels; each labelled
    class's map is clamped at 0 (Eq. 1's ReLU), resized bilinearly to ``size`` (the whole map, as
    c2am's ``make_square_cam.py`` squashes every image to 128 x 128), divided by its max + 1e-5,
    and added to that class's running sum. State is additive (sum, count, images), so shards ``merge``.

    >>> import torch
    >>> g = GlobalCAM(num_classes=2, size=(2, 2))
    >>> g.update(torch.tensor([[[[1., 0.], [0., 0.]], [[0., 0.], [0., 0.]]]]), torch.tensor([[1, 0]]))
    >>> g.update(torch.tensor([[[[0., 0.], [0., 2.]], [[0., 0.], [0., 0.]]]]), torch.tensor([[1, 0]]))
    >>> g.compute()[0].numpy().round(3).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
    >>> g.count.tolist()
    [2, 0]
    >>> g.compute("all")[0].numpy().round(3).tolist()     # the same: both images carry class 0
    [[0.5, 0.0], [0.0, 0.5]]
    """

    def __init__(self, num_classes: int, size: tuple[int, int] = (128, 128)):
        import torch      # torch only where used: registering the method must not load it
        self.num_classes = num_classes
        self.size = tuple(size)
        self.sum = torch.zeros((num_classes, *self.size), dtype=torch.float64)
        self.count = torch.zeros(num_classes, dtype=torch.int64)
        self.images = torch.zeros((), dtype=torch.int64)        # every image seen, labelled or not

    def update(self, cams: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``cams`` (B, C, h, w) class maps, ``labels`` (B, C) multi-hot image labels."""
        import torch.nn.functional as F
        cams = cams.detach().float().clamp(min=0)
        if cams.shape[-2:] != self.size:
            cams = F.interpolate(cams, self.size, mode="bilinear", align_corners=False)
        cams = cams / (cams.amax(dim=(2, 3), keepdim=True) + NORM_EPS)
        mask = labels.to(cams.device).bool()
        self.sum += (cams * mask[:, :, None, None]).sum(0).double().cpu()
        self.count += mask.sum(0).cpu()
        self.images += len(mask)

    def update_keys(self, cams: torch.Tensor, keys: Sequence[int]) -> None:
        """Add one image's CAMs given only for its labelled classes: ``cams`` (k, h, w), ``keys`` ids."""
        import torch
        full = torch.zeros((1, self.num_classes, *cams.shape[-2:]), dtype=torch.float32)
        labels = torch.zeros((1, self.num_classes), dtype=torch.bool)
        keys = torch.as_tensor(list(keys), dtype=torch.long)
        full[0, keys] = torch.as_tensor(cams, dtype=torch.float32)
        labels[0, keys] = True
        self.update(full, labels)

    def merge(self, other: "GlobalCAM") -> "GlobalCAM":
        if (other.num_classes, other.size) != (self.num_classes, self.size):
            raise ValueError("GlobalCAM.merge: shapes differ")
        self.sum += other.sum
        self.count += other.count
        self.images += other.images
        return self

    def compute(self, mean: str = "class") -> torch.Tensor:
        """(C, H, W) float32: the mean map per class (``mean`` of :data:`GCAM_MEAN`: over the images labelled
        with the class, or over all images); a class no image carries stays all-zero."""
        if mean not in GCAM_MEAN:
            raise UserError(f"--set c2am_gcam_mean={mean}: must be one of {', '.join(GCAM_MEAN)}")
        n = self.count.clamp(min=1)[:, None, None] if mean == "class" else self.images.clamp(min=1)
        return (self.sum / n).float()


def class_constants(global_cam: torch.Tensor) -> torch.Tensor:
    """M_z = GAP(Global CAM_z) (paper Eq. 6; plotted in its Fig. 7), shape (C,)."""
    return global_cam.mean(dim=(-2, -1))


def front_door_logits(logits: torch.Tensor, global_cam: torch.Tensor) -> torch.Tensor:
    """The adjusted score s_z = mean_{h,w}(logit_z * Global CAM_z) (Eq. 3 with mean pooling, App. B).

    The paper's line ``torch.mean(x.unsqueeze(2).unsqueeze(2) * global_cam, dim=(2, 3))`` builds a
    (B, C, H, W) tensor; by linearity it equals ``logits * M_z``, computed here without it.
    """
    return logits * class_constants(global_cam).to(logits)


def constant_logits(logits: torch.Tensor, constant: float) -> torch.Tensor:
    """CAM+Constant: the logits times one constant (0.2 in the paper's Table 1)."""
    return logits * constant


def bce_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE on sigmoid(score) (paper Eq. 4), mean over batch and classes.

    App. B writes ``torch.nn.BCELoss()(x, labels)`` on logits; the released code
    (``train_c2am.py``) uses ``BCEWithLogitsLoss``, which is Eq. 4 — this follows the code.
    """
    import torch.nn.functional as F
    return F.binary_cross_entropy_with_logits(scores, labels.to(scores))


def plot_global_cams(global_cam: torch.Tensor, class_names: Sequence[str], path: Path) -> Path:
    """The Global CAM of every class as one PNG grid (the paper's Fig. 10)."""
    plt = _pyplot()
    maps = global_cam.detach().cpu().numpy()
    n = len(maps)
    cols = min(5, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name, m in zip(axes.flat, class_names, maps):
        ax.imshow(m, cmap="jet", vmin=0.0, vmax=max(float(m.max()), 1e-6))
        ax.set_title(name, fontsize=9)
    fig.suptitle("Global CAM per class (C2AM Fig. 10)")
    fig.tight_layout()
    return _save(fig, path)


def plot_constants(constants: torch.Tensor, class_names: Sequence[str], path: Path) -> Path:
    """M_z per class as a bar chart (the paper's Fig. 7)."""
    plt = _pyplot()
    values = constants.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(values) + 1.5), 3.4))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)), list(class_names), rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("$M_z$ = mean of Global CAM$_z$")
    ax.set_title("$M_z$ per class (C2AM Eq. 6, Fig. 7)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=110)


# --- the adapters -------------------------------------------------------------------------------


def _train_samples(ctx) -> list:
    """The base classifier's training images (the harness's split)."""
    from wsssbench.stages.common import train_split

    return ctx.dataset.samples(train_split(ctx.dataset))


def _fg_class_names(dataset) -> list[str]:
    names = list(dataset.class_names)
    return names[1:] if dataset.has_background else names


def square_cams(model, images: np.ndarray, scales: Sequence[float], flip: bool, size: int, device: str = "cpu",
                arithmetic: str = "toolkit") -> torch.Tensor:
    """(B, K, size, size): each scale's ReLU CAM (flip added back) resized bilinearly straight to size², summed
    over the scales (c2am make_square_cam.py ``_work``; inputs rescaled as ``cam_arithmetic``)."""
    import torch
    import torch.nn.functional as F

    from wsssbench.stages.infer_cams import _pil_scaled, _scaled, to_tensor

    x = torch.stack([to_tensor(im) for im in images]).to(device)
    n, (h, w) = len(x), x.shape[-2:]
    total = torch.zeros((), device=device)
    with torch.no_grad():
        for s in scales:
            xs = (_pil_scaled(images, s, flip, device) if arithmetic == "irn" else
                  _scaled(x, (h, w) if s == 1.0 else (max(1, round(h * s)), max(1, round(w * s))), flip))
            cams = F.relu(model.cams(xs).float())
            if flip:
                cams = cams[:n] + cams[n:].flip(-1)
            total = total + F.interpolate(cams, (size, size), mode="bilinear", align_corners=False)
    return total


def compute_global_cam(ctx, model, samples, size: int, scales: Sequence[float], resize: str = "image") -> GlobalCAM:
    """The Global CAM of ``model`` over ``samples``: multi-scale + flip CAMs of each image's labelled
    classes, squashed to size² after summing at the image size (``resize="image"``, the harness's CAM
    inference) or each scale straight to size² (``"square"``, c2am's ``make_square_cam.py``)."""
    import torch

    from wsssbench.stages.common import label_vector
    from wsssbench.stages.infer_cams import image_groups, multiscale_cams

    if resize not in GCAM_RESIZE:
        raise UserError(f"--set c2am_gcam_resize={resize}: must be one of {', '.join(GCAM_RESIZE)}")
    acc = GlobalCAM(ctx.num_fg, (size, size))
    model.to(ctx.device).eval()
    for group, images in image_groups(ctx.dataset, samples, 16):     # this rank's share under torchrun
        if resize == "square":
            cams = square_cams(model, np.stack(images), scales, True, size, ctx.device, ctx.cfg.cam_arithmetic)
        else:
            cams, _ = multiscale_cams(model, np.stack(images), scales, True, ctx.device)
        acc.update(cams, torch.stack([label_vector(ctx.dataset, s) for s in group]))
    if distributed.active():        # additive state: the sums over every rank's images
        acc.sum, acc.count = distributed.all_reduce_sum(acc.sum), distributed.all_reduce_sum(acc.count)
        acc.images = distributed.all_reduce_sum(acc.images)
    return acc


def _resnet_depth(backbone) -> int:
    from wsssbench.models.resnet import ResNetBackbone

    depth = {6: 50, 23: 101}.get(len(backbone.layer3)) if isinstance(backbone, ResNetBackbone) else None
    if depth is None:
        raise UserError("--set c2am_output_stride=...: needs a resnet50/resnet101 backbone "
                        "(C2AM's code changes ResNet-50's strides); leave it unset for others")
    return depth


@contextlib.contextmanager
def continued_model(model, cfg):
    """The continued stage's per-stage changes to ``model``, undone on exit (the CAMs come at the base's stride).

    ``c2am_output_stride``: the ResNet convs' strides/dilations/paddings of torchvision's ResNet at that stride
    (train_c2am.py trains torchvision's ResNet-50, stride 32, on the weights of the stride-16 CAM net);
    ``c2am_fixed_bn``: BatchNorm on running statistics or, if False, on the batch's (the code's ``train()``);
    ``c2am_frozen_blocks``: the first blocks take no gradient (``Net.train``: conv1, bn1).
    """
    from torch import nn

    from wsssbench.models.backbones import FixedBatchNorm
    from wsssbench.models.resnet import ResNetBackbone

    undo = []
    if cfg.c2am_output_stride is not None:
        ref = dict(ResNetBackbone(_resnet_depth(model.backbone), cfg.c2am_output_stride).named_modules())
        for name, m in model.backbone.named_modules():
            if isinstance(m, nn.Conv2d):
                undo.append((m, {k: getattr(m, k) for k in ("stride", "dilation", "padding")}))
                for k in ("stride", "dilation", "padding"):
                    setattr(m, k, getattr(ref[name], k))
        undo.append((model.backbone, {"stage_strides": model.backbone.stage_strides}))
        model.backbone.stage_strides = ref[""].stage_strides
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            undo.append((m, {"__class__": type(m)}))
            m.__class__ = FixedBatchNorm if cfg.c2am_fixed_bn else nn.BatchNorm2d
    for block in model.backbone.stages[:cfg.c2am_frozen_blocks]:
        for prm in block.parameters():
            undo.append((prm, {"requires_grad": prm.requires_grad}))
            prm.requires_grad_(False)
    try:
        yield model
    finally:
        for obj, attrs in reversed(undo):
            for k, v in attrs.items():
                setattr(obj, k, v)


def adjusted_step(adjust: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """The continued stage's training step: BCE on ``adjust(logits)`` (train_c2am.py's loop body)."""
    def step(ctx, model, batch):
        return bce_loss(adjust(model(batch["image"]).float()), batch["labels"])
    return step


def _check_choices(cfg) -> None:
    """One UserError line for a c2am_* choice field set to a value it does not take (before any work)."""
    from wsssbench.methods_api import CHOICES, CLS_OPTIMIZERS

    allowed = {"c2am_augment": CHOICES["cls_augment"], "c2am_optimizer": tuple(CLS_OPTIMIZERS.names()),
               "c2am_gcam_resize": GCAM_RESIZE, "c2am_gcam_mean": GCAM_MEAN}
    for name, values in allowed.items():
        value = getattr(cfg, name, values[0])       # cam_constant has no c2am_gcam_* fields
        if value not in values:
            raise UserError(f"--set {name}={value}: must be one of {', '.join(values)}")


def _continue_training(ctx, model, workdir: Path, adjust: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Continue training the base classifier with BCE on ``adjust(logits)`` (Table 2 settings)."""
    from wsssbench.stages.train_classifier import train

    cfg = ctx.cfg
    _check_choices(cfg)
    size = cfg.c2am_size or cfg.cls_size
    for name, value, least in (("c2am_batch_size", cfg.c2am_batch_size, 1), ("c2am_size", size, 1),
                               ("c2am_epochs", cfg.c2am_epochs, 0), ("c2am_frozen_blocks", cfg.c2am_frozen_blocks, 0)):
        if value < least:
            raise UserError(f"--set {name}={value}: must be at least {least}")
    with continued_model(model, cfg):
        losses = train(ctx, model, adjusted_step(adjust), _train_samples(ctx), epochs=cfg.c2am_epochs,
                       batch_size=cfg.c2am_batch_size, lr=cfg.c2am_lr, weight_decay=cfg.c2am_weight_decay, size=size,
                       rescale=cfg.c2am_rescale, workers=cfg.cls_workers, optimizer=cfg.c2am_optimizer,
                       augment=cfg.c2am_augment)
    write_json(workdir / "continued_training.json", {"epoch_loss": losses, "size": size})


def run_c2am(ctx, model, workdir: Path) -> None:
    """C2AM's stage: Global CAM of the base classifier (artifact + Figs. 7, 10), then Eq. 3 training."""
    cfg = ctx.cfg
    _check_choices(cfg)
    acc = compute_global_cam(ctx, model, _train_samples(ctx), cfg.c2am_gcam_size, cfg.c2am_gcam_scales,
                             cfg.c2am_gcam_resize)
    global_cam = acc.compute(cfg.c2am_gcam_mean)
    constants = class_constants(global_cam)
    names = _fg_class_names(ctx.dataset)
    if distributed.is_main():       # under torchrun rank 0 writes the artifacts
        with atomic_path(workdir / "global_cam.npz") as tmp:
            np.savez_compressed(tmp, global_cam=global_cam.numpy(), count=acc.count.numpy(),
                                constants=constants.numpy(), class_names=np.array(names))
        plot_global_cams(global_cam, names, workdir / "global_cam.png")
        plot_constants(constants, names, workdir / "constants.png")
    gcam = global_cam.to(ctx.device)
    _continue_training(ctx, model, workdir, lambda logits: front_door_logits(logits, gcam))


def run_cam_constant(ctx, model, workdir: Path) -> None:
    """CAM+Constant's stage: continue training with the logits times ``c2am_constant``."""
    c = ctx.cfg.c2am_constant
    _continue_training(ctx, model, workdir, lambda logits: constant_logits(logits, c))


#: IRN's classifier as the cam paper recipe, the continued stage as train_c2am.py, then DeepLab-v2 as C2AM's
#: segmentation/ (deeplab-pytorch with configs/voc12.yaml changed and criterion_balance in main.py); docs/recipes.md.
PAPER = Recipe("paper", "IRN's classifier and CAM inference, C2AM's continued training and its segmentation/ "
                        "DeepLab-v2, as its code runs them", (
    *CAM_PAPER.settings,
    ("seg_batch_size", 10),                          # voc12.yaml SOLVER.BATCH_SIZE.TRAIN 10
    ("seg_iterations", 30000),                       # SOLVER.ITER_MAX 30000
    ("seg_scales", (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)),   # DATASET.SCALES
    ("seg_loss", "balanced"),                        # main.py criterion_balance
    # the continued stage as train_c2am.py (docs/recipes.md "C2AM continued training"):
    ("c2am_size", 512),                              # cfg/c2am.yml cam_crop_size 512
    ("c2am_rescale", (0.625, 1.25)),                 # train_c2am.py:53 resize_long=(320, 640) over the crop 512
    ("c2am_augment", "irn"),                         # voc12/dataloader.py: PIL bicubic long side, flip, random crop
    ("c2am_output_stride", 32),                      # net/resnet50_cam.py Net: torchvision resnet50 (train_c2am.py:73)
    ("c2am_fixed_bn", False),                        # nn.BatchNorm2d in train mode (train_c2am.py:85)
    ("c2am_frozen_blocks", 1),                       # Net.train: conv1 / bn1 without gradient (resnet50_cam.py:36-41)
    ("c2am_optimizer", "irn"),                       # torchutils.PolyOptimizer: momentum = wd (train_c2am.py:78)
    ("c2am_gcam_resize", "square"),                  # make_square_cam.py:39-42: each scale straight to 128²
))

METHODS.add("c2am", Method(
    name="c2am",
    config=C2AMConfig,
    summary="Causal CAM: continue training the CAM classifier with logits x Global CAM, mean-pooled "
            "(front-door adjustment; Wang 2022)",
    classifier_stages=(ClassifierStage("c2am", "c2am_", run_c2am),),
    recipes=(PAPER,),
))

METHODS.add("cam_constant", Method(
    name="cam_constant",
    config=CamConstantConfig,
    summary="CAM+Constant (C2AM Table 1): continue training the CAM classifier with logits x 0.2",
    classifier_stages=(ClassifierStage("cam_constant", "c2am_", run_cam_constant),),
))
