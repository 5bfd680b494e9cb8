"""Stage: expand CAMs into pseudo-masks — the AffinityNet/IRN random walk, or dense CRF on CAMs.

Random walk (IRN step/cam_to_ir_label.py, train_irn.py, make_sem_seg_labels.py): confident labels
come from dense CRF on the CAMs at ``rw_conf_fg`` / ``rw_conf_bg`` (unsure pixels ignored); IRN's
boundary net learns class boundaries from them; affinities within ``rw_radius`` are 1 − the max
boundary on the path; the walk multiplies the stride-4 CAMs by the transition matrix ``T = A^β``
(column-normalised) raised to ``2^rw_exp_times``; the walked maps are divided by their global max,
a constant background plane ``rw_bg_threshold`` is put first, argmax.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import distributed
from ..cams import load_cams
from ..data.base import mask_png
from ..io import atomic_path
from ..metrics.segmentation import seeds_from_cams
from .common import EpochBatches, MaskPairs, loader_workers, pil_rescale, poly_lr, stream, to_tensor


# ---------------------------------------------------------------- dense CRF (pydensecrf)
def crf_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, t: int = 10, gt_prob: float = 0.7) -> np.ndarray:
    """IRN imutils.crf_inference_label: unary from labels (gt_prob 0.7), Gaussian sxy 3 compat 3,
    bilateral sxy 50 srgb 5 compat 10."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels
    h, w = labels.shape
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.require(image, np.uint8, ["C", "W"]), compat=10)
    q = d.inference(t)
    return np.argmax(np.array(q).reshape(n_labels, h, w), axis=0)


def dense_crf(image: np.ndarray, probs: np.ndarray, *, gaussian: tuple[float, float],
              bilateral: tuple[float, float, float], t: int = 10) -> np.ndarray:
    """Dense CRF with a softmax unary (−log p): ``gaussian`` = (sxy, compat), ``bilateral`` = (sxy, srgb, compat)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax
    n, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(unary_from_softmax(np.ascontiguousarray(probs, dtype=np.float32)))
    d.addPairwiseGaussian(sxy=gaussian[0], compat=gaussian[1])
    d.addPairwiseBilateral(sxy=bilateral[0], srgb=bilateral[1], rgbim=np.require(image, np.uint8, ["C", "W"]),
                           compat=bilateral[2])
    return np.array(d.inference(t)).reshape(n, h, w)


def crf_probs(image: np.ndarray, probs: np.ndarray, t: int = 10) -> np.ndarray:
    """SEAM imutils.crf_inference: Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13 compat 10."""
    return dense_crf(image, probs, gaussian=(3, 3), bilateral=(80, 13, 10), t=t)


def confident_labels(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, conf_fg: float, conf_bg: float) -> np.ndarray:
    """IRN cam_to_ir_label: class-index map (0 background, c+1 class c), 255 where unsure."""
    lut = np.concatenate([[0], keys + 1]).astype(np.uint8)

    def at(threshold):
        planes = np.concatenate([np.full((1,) + cams.shape[1:], threshold, cams.dtype), cams])
        return crf_labels(image, np.argmax(planes, 0), planes.shape[0])

    fg, bg = at(conf_fg), at(conf_bg)
    conf = lut[fg]
    conf[fg == 0] = 255
    conf[(fg + bg) == 0] = 0
    return conf


def crf_mask(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, alpha: float) -> np.ndarray:
    """Dense CRF on CAMs with background (1 − max cam)^α (SEAM infer_SEAM.py ``_crf_with_alpha``)."""
    bg = np.power(1 - cams.max(0, keepdims=True), alpha) if len(cams) else np.ones((1,) + image.shape[:2])
    probs = crf_probs(image, np.concatenate([bg, cams]).astype(np.float32))
    return np.concatenate([[0], keys + 1]).astype(np.uint8)[probs.argmax(0)]


# ---------------------------------------------------------------- affinity network and random walk
def train_affinity(ctx, samples, conf_dir: Path, workdir: Path, progress=None):
    """Train IRN's boundary net (:class:`wsssbench.models.AffinityNet`) on the confident labels in
    ``conf_dir`` (IRN step/train_irn.py: affinity loss at radius 10, SGD, poly); save ``affinity.pt``."""
    from ..models import AffinityNet, build_backbone
    from .train_classifier import pretrained_source
    cfg = ctx.cfg
    pretrained = pretrained_source(cfg)
    # IRN keeps its ImageNet backbone frozen; a randomly initialised one has nothing worth freezing.
    net = AffinityNet(build_backbone(cfg.backbone, pretrained=pretrained, output_stride=16),
                      freeze_backbone=pretrained is not None).to(ctx.device)
    gen = torch.Generator().manual_seed(ctx.seed)
    batches = EpochBatches(len(samples), cfg.rw_batch_size, cfg.rw_epochs, gen)
    if cfg.rw_augment == "irn":
        batches = IrnCropDraws(batches, gen)
        data = IrnAffinityCrops(ctx.dataset, samples, conf_dir, cfg.cls_size)
    else:
        data = MaskPairs(ctx.dataset, samples, conf_dir, cfg.cls_size)
    batches = distributed.rank_slices(batches, cfg.rw_batch_size, "rw_batch_size")     # torchrun: a slice each
    total = len(batches)
    opt = affinity_optimizer([p for p in net.parameters() if p.requires_grad], cfg.rw_lr, cfg.rw_optimizer)
    task = progress.add_task("train affinity", total=total) if progress else None
    net.train()
    step = distributed.ddp_step(ctx, net, lambda ctx, net, xy: AffinityNet.loss(net(xy[0]), xy[1], radius=10,
                                                                                pairs=cfg.rw_pairs))
    loader = stream(data, batches, loader_workers(cfg), ctx.device)
    for it, (x, y) in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = poly_lr(cfg.rw_lr, it, total)
        loss = step(ctx, net, (x.to(ctx.device), y.to(ctx.device)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress.advance(task)
    net.eval()
    if distributed.is_main():
        torch.save(net.state_dict(), workdir / "affinity.pt")
    return net


def affinity_optimizer(params, lr: float, kind: str, weight_decay: float = 1e-4) -> torch.optim.SGD:
    """``rw_optimizer``: "sgd" momentum 0.9; "irn" as step/train_irn.py's ``torchutils.PolyOptimizer``, whose
    ``SGD(params, lr, weight_decay)`` puts the weight decay in the momentum slot (momentum 1e-4)."""
    return torch.optim.SGD(params, lr=lr, momentum=weight_decay if kind == "irn" else 0.9, weight_decay=weight_decay)


class IrnCropDraws:
    """:class:`EpochBatches` with each item's augmentation draws appended, ``(index, flip, u_scale, u_top,
    u_left)``, three uniforms in [0, 1) from ``generator`` (IRN draws them from Python's ``random``:
    same distribution, other stream)."""

    def __init__(self, batches: EpochBatches, generator: torch.Generator):
        self.batches, self.generator = batches, generator

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            draws = torch.rand(len(batch), 3, generator=self.generator, dtype=torch.float64).tolist()
            yield [(i, flip, *u) for (i, flip), u in zip(batch, draws)]


def irn_crop_box(h: int, w: int, size: int, u_top: float, u_left: float) -> tuple[int, int, int, int]:
    """IRN imutils.get_random_crop_box from uniforms: ``(out_top, img_top, out_left, img_left)`` of the
    min(size, h) × min(size, w) window; ``randrange(n)`` is ``floor(u · n)``."""
    def axis(n, u):
        space = n - size
        return (0, int(u * (space + 1))) if space > 0 else (int(u * (1 - space)), 0)
    (out_top, img_top), (out_left, img_left) = axis(h, u_top), axis(w, u_left)
    return out_top, img_top, out_left, img_left


def irn_affinity_item(image: np.ndarray, label: np.ndarray, size: int, u_scale: float, flip: bool,
                      u_top: float, u_left: float) -> tuple[torch.Tensor, torch.Tensor]:
    """IRN's VOC12AffinityDataset item (voc12/dataloader.py, rescale (0.5, 1.5), ``random_crop``) from given
    draws: image PIL-bicubic and label PIL-nearest scaled by 0.5 + u_scale, flipped, cropped to ``size``²
    (the normalised image padded with 0, the label with 255). The stride-4 label reduction is the loss's."""
    scale = 0.5 + u_scale
    h, w = (int(np.round(n * scale)) for n in label.shape)
    image = pil_rescale(image, scale)
    if (h, w) != label.shape:
        label = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
    x, y = to_tensor(image), torch.from_numpy(np.array(label, np.int64))
    if flip:
        x, y = x.flip(-1), y.flip(-1)
    ch, cw = min(size, h), min(size, w)
    out_top, img_top, out_left, img_left = irn_crop_box(h, w, size, u_top, u_left)
    x_out, y_out = x.new_zeros(3, size, size), y.new_full((size, size), 255)
    x_out[:, out_top:out_top + ch, out_left:out_left + cw] = x[:, img_top:img_top + ch, img_left:img_left + cw]
    y_out[out_top:out_top + ch, out_left:out_left + cw] = y[img_top:img_top + ch, img_left:img_left + cw]
    return x_out, y_out


class IrnAffinityCrops(MaskPairs):
    """``rw_augment=irn``: item ``(i, flip, u_scale, u_top, u_left)`` (:class:`IrnCropDraws`) →
    :func:`irn_affinity_item` of image ``i`` and its confident label."""

    def __getitem__(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        i, flip, u_scale, u_top, u_left = item
        sample = self.samples[i]
        label = np.array(Image.open(self.masks_dir / f"{sample.id}.png"))
        return irn_affinity_item(self.dataset.load_image(sample), label, self.size, u_scale, flip, u_top, u_left)


#: how the walk x·T^(2^k) is computed: "sparse" multiplies x by the sparse T 2^k times (O(hw·r²)
#: memory, seconds per VOC-sized image on a CPU); "dense" squares the dense (hw × hw) T k times, IRN's
#: arithmetic (``to_transition_matrix`` in misc/indexing.py; O((hw)²) memory, minutes per VOC image)
RW_METHODS = ("sparse", "dense")


def transition_matrix(edge: torch.Tensor, radius: int, beta: float, exp_times: int) -> torch.Tensor:
    """Dense ``T^(2^exp_times)``, ``T = A^β`` column-normalised (IRN indexing.to_transition_matrix)."""
    from ..models import affinity_matrix
    return dense_transition(affinity_matrix(edge, radius), beta, exp_times)


def sparse_transition_matrix(edge: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """``T = A^β`` column-normalised as :func:`transition_matrix`, kept sparse: (hw, hw) COO in float64
    (the walk multiplies by T 256 times: float32 entries, 2e-6 off, drift 4e-4 of the walked max)."""
    from ..models import affinity_matrix
    return sparse_transition(affinity_matrix(edge, radius), beta)


def random_walk(x: torch.Tensor, edge: torch.Tensor, radius: int, beta: float, exp_times: int,
                method: str = "sparse") -> torch.Tensor:
    """``x · T^(2^exp_times)`` for ``x`` (k, hw): the class maps walked over the boundary map ``edge``.

    "dense" is IRN's arithmetic (``exp_times`` squarings of the dense matrix, then one product);
    "sparse" the same walk as 2^exp_times products of x with the sparse T, never forming T's powers,
    in float64: closer to the exact walk than IRN's float32 squarings (benchmarks/bench_random_walk.py).
    """
    from ..models import affinity_matrix
    return walk(x, affinity_matrix(edge, radius), beta, exp_times, method)


def dense_transition(aff: torch.Tensor, beta: float, exp_times: int) -> torch.Tensor:
    """Dense ``T^(2^exp_times)`` of a sparse affinity matrix ``aff``: ``T = aff^β`` column-normalised, squared
    ``exp_times`` times in ``aff``'s dtype (IRN's and PSA's ``infer_aff.py`` arithmetic)."""
    trans = aff.to_dense().pow(beta)
    trans = trans / trans.sum(0, keepdim=True)
    for _ in range(exp_times):
        trans = trans @ trans
    return trans


def sparse_transition(aff: torch.Tensor, beta: float) -> torch.Tensor:
    """``T = aff^β`` column-normalised, ``aff`` a coalesced sparse affinity matrix: (hw, hw) COO in float64."""
    idx, vals = aff.indices(), aff.values().double().pow(beta)
    colsum = torch.zeros(aff.shape[1], dtype=vals.dtype, device=vals.device).index_add_(0, idx[1], vals)
    return torch.sparse_coo_tensor(idx, vals / colsum[idx[1]], aff.shape, is_coalesced=True, check_invariants=False)


def walk(x: torch.Tensor, aff: torch.Tensor, beta: float, exp_times: int, method: str = "sparse") -> torch.Tensor:
    """``x · T^(2^exp_times)`` for ``x`` (k, hw) and the sparse affinity matrix ``aff`` (IRN's boundary
    affinities, PSA's feature affinities); ``method`` as :func:`random_walk`."""
    if method == "dense":
        return x @ dense_transition(aff, beta, exp_times)
    # x · T = (Tᵀ · xᵀ)ᵀ: one sparse-dense product per step, Tᵀ in CSR for fast row access
    with warnings.catch_warnings():      # torch calls its CSR support "beta" on every conversion
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        trans_t = sparse_transition(aff, beta).t().coalesce().to_sparse_csr()
    y = x.t().double().contiguous()
    for _ in range(2 ** exp_times):
        y = trans_t @ y
    return y.t().to(x.dtype)


@torch.no_grad()
def random_walk_mask(ctx, net, image: np.ndarray, cams: np.ndarray, keys: np.ndarray,
                     stride4: np.ndarray | None = None) -> np.ndarray:
    """IRN make_sem_seg_labels: walk the stride-4 CAMs (times 1 − boundary), global-max normalise,
    put the ``rw_bg_threshold`` plane first, argmax. The stride-4 CAMs are ``stride4`` (make_cam.py's
    ``cam``, written with ``cam_arithmetic=irn``) where it fits the boundary map's grid, else ``cams``
    resized to that grid."""
    cfg = ctx.cfg
    h, w = image.shape[:2]
    if len(keys) == 0:
        return np.zeros((h, w), np.uint8)
    x = to_tensor(image).to(ctx.device)
    edge = irn_edge(net, x, cfg.cls_size) if cfg.rw_infer == "irn" else net.edge(x[None])[0]
    hs, ws = edge.shape
    if stride4 is not None and stride4.shape[1:] == (hs, ws):
        small = torch.from_numpy(np.asarray(stride4, dtype=np.float32)).to(ctx.device)
    else:
        small = F.interpolate(torch.from_numpy(cams)[None].to(ctx.device), size=(hs, ws), mode="bilinear",
                              align_corners=False)[0]
    walked = walk_up(small, edge, (h, w), cfg, net.stride if cfg.rw_infer == "irn" else None)
    return walked_labels(walked, keys, cfg.rw_bg_threshold)


def walked_labels(walked: torch.Tensor, keys: np.ndarray, bg_threshold: float) -> np.ndarray:
    """Class-index map of max-normalised walked maps (k, H, W): the constant ``bg_threshold`` plane first, argmax."""
    planes = torch.cat([torch.full((1,) + walked.shape[1:], bg_threshold, device=walked.device), walked])
    return np.concatenate([[0], keys + 1]).astype(np.uint8)[planes.argmax(0).cpu().numpy()]


def irn_edge(net, x: torch.Tensor, size: int) -> torch.Tensor:
    """``rw_infer=irn``: IRN net/resnet50_irn.py EdgeDisplacement.forward — the (3, H, W) image and its
    flip, each zero-padded right and bottom to ``size``² (larger images: to their own side; IRN's negative
    padding would crop them), boundary logits cut to ⌈H/stride⌉ × ⌈W/stride⌉, the flip's flipped back,
    sigmoid of the mean of the logits. Returns (h, w) boundary probabilities."""
    h, w = x.shape[-2:]
    pair = F.pad(torch.stack([x, x.flip(-1)]), (0, max(size, w) - w, 0, max(size, h) - h))
    logits = net(pair)[:, 0, :(h - 1) // net.stride + 1, :(w - 1) // net.stride + 1]
    return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)


def walk_up(small: torch.Tensor, edge: torch.Tensor, size: tuple[int, int], cfg, stride: int | None) -> torch.Tensor:
    """The walk of IRN make_sem_seg_labels.py: ``small`` (k, h, w) CAMs at the boundary map's grid, times
    1 − ``edge``, walked, brought to ``size`` — upsampled ×``stride`` and cropped (IRN's; ``stride`` given)
    or resized straight to it (``None``) — and divided by their max."""
    k, hs, ws = small.shape
    walked = random_walk((small * (1 - edge)).reshape(k, -1), edge, cfg.rw_radius, cfg.rw_beta, cfg.rw_exp_times,
                         cfg.rw_method).view(1, k, hs, ws)
    if stride is None:
        walked = F.interpolate(walked, size=size, mode="bilinear", align_corners=False)[0]
    else:
        walked = F.interpolate(walked, scale_factor=stride, mode="bilinear", align_corners=False)[0]
        walked = walked[:, :size[0], :size[1]]
    return walked / walked.max()


def save_mask(path: Path, mask: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(mask_png(mask))


def run(ctx, cams_dir: Path, samples, out_dir: Path, progress=None, seed_rule: dict | None = None) -> None:
    """Write ``<id>.png`` pseudo-masks (class indices) for ``samples`` by ``ctx.cfg.expansion``;
    ``seed_rule`` (``threshold=`` or ``alpha=``) makes the seeds of expansion "none"."""
    cfg = ctx.cfg
    if cfg.expansion == "psa":      # PSA's AffinityNet (SEAM's random-walk step): wsssbench/stages/psa.py
        from .psa import run as run_psa
        return run_psa(ctx, cams_dir, samples, out_dir, progress)
    masks = out_dir / "masks"
    if cfg.expansion == "rw":
        conf = out_dir / "confident"
        train = samples[:cfg.rw_train_images] if cfg.rw_train_images else samples
        task = progress.add_task("confident labels (CRF)", total=len(train)) if progress else None
        for sample in distributed.shard(train):         # by image under torchrun
            cam = load_cams(cams_dir / f"{sample.id}.npz")
            save_mask(conf / f"{sample.id}.png", confident_labels(ctx.dataset.load_image(sample), cam.cams, cam.keys,
                                                                 cfg.rw_conf_fg, cfg.rw_conf_bg))
            if progress:
                progress.advance(task)
        distributed.barrier()                           # every rank's confident labels written
        net = train_affinity(ctx, train, conf, out_dir, progress)
    task = progress.add_task(f"pseudo-masks ({cfg.expansion})", total=len(samples)) if progress else None
    for sample in distributed.shard(samples):
        cam = load_cams(cams_dir / f"{sample.id}.npz")
        image = ctx.dataset.load_image(sample)
        if cfg.expansion == "rw":
            mask = random_walk_mask(ctx, net, image, cam.cams, cam.keys, cam.stride4)
        elif cfg.expansion == "crf":
            mask = crf_mask(image, cam.cams, cam.keys, cfg.crf_alpha)
        else:   # "none": the seeds themselves
            mask = seeds_from_cams(cam.cams, cam.keys, **(seed_rule or {"threshold": cfg.seed_threshold}))
        save_mask(masks / f"{sample.id}.png", mask)
        if progress:
            progress.advance(task)


EXPANSIONS = ("rw", "crf", "none", "psa")
