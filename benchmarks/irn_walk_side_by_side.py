"""IRN's boundary net and random walk (``--recipe paper``'s ``rw_*`` settings) beside jiwoon-ahn/irn's own code.

    git --git-dir=<irn mirror> archive HEAD | tar -x -C /tmp/irn
    python benchmarks/irn_walk_side_by_side.py /tmp/irn [--json]

Compares, with the same weights and inputs: the loss pairs and their labels (``PathIndex`` +
``GetAffinityLabelFromIndices``), the affinities, the affinity loss and the parameters after two
optimiser steps (``train_irn.py``'s loop, ``AffinityDisplacementLoss``, ``PolyOptimizer``); the augmented
crop of ``VOC12AffinityDataset`` given the same random draws; the boundary map of ``EdgeDisplacement``,
the walk of ``propagate_to_edge`` and the label map of ``make_sem_seg_labels._work`` on the same
stride-4 CAMs. IRN's code runs unchanged from the checkout (stubs as benchmarks/irn_side_by_side.py:
no ImageNet download — both sides get the same randomly initialised ResNet-50 —, no CUDA, no imageio).
Prints the largest absolute difference of each comparison (docs/recipes.md records them).
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from irn_side_by_side import import_irn  # noqa: E402

from wsssbench.methods_api import METHODS, make_config  # noqa: E402
from wsssbench.models import AffinityNet, build_backbone  # noqa: E402
from wsssbench.models.affinity import edge_to_affinity, irn_sources, pair_labels, search_paths  # noqa: E402
from wsssbench.stages.common import poly_lr  # noqa: E402
from wsssbench.stages.expand import (affinity_optimizer, irn_affinity_item, irn_edge, random_walk,  # noqa: E402
                                     walk_up, walked_labels)

CFG = make_config(METHODS.get("irnet"), {"recipe": "paper"})
RADIUS = 10                                           # train_irn.py PathIndex(radius=10, ...)


def load_irn(root: Path) -> types.SimpleNamespace:
    irn = import_irn(root)
    for name in ("net.resnet50_irn", "misc.indexing", "step.make_sem_seg_labels"):
        setattr(irn, name.split(".")[-1], importlib.import_module(name))
    return irn


def toolkit_net(seed: int = 0) -> AffinityNet:
    """The recipe's boundary net on a randomly initialised ResNet-50 (BatchNorm statistics calibrated on noise)."""
    torch.manual_seed(seed)
    backbone = build_backbone(CFG.backbone, output_stride=16)
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        backbone.train().forward_stages(torch.randn(4, 3, 128, 128))
    net = AffinityNet(backbone, freeze_backbone=True)
    for p in net.fuse.parameters():                   # a boundary map away from 0.5: non-trivial affinities
        torch.nn.init.normal_(p, std=0.3)
    return net


def irn_copy(irn, net: AffinityNet, cls: str, *args) -> torch.nn.Module:
    """IRN's ``cls`` (resnet50_irn) holding ``net``'s backbone and boundary-branch weights."""
    state = {**net.backbone.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    with mock.patch.object(irn.resnet50.model_zoo, "load_url", lambda url: dict(state)):
        theirs = getattr(irn.resnet50_irn, cls)(*args)
    for i, branch in enumerate(net.branches):
        getattr(theirs, f"fc_edge{i + 1}")[0].load_state_dict(branch[0].state_dict())
        getattr(theirs, f"fc_edge{i + 1}")[1].load_state_dict(branch[1].state_dict())
    theirs.fc_edge6.load_state_dict(net.fuse.state_dict())
    return theirs


def edge_difference(net: AffinityNet, theirs: torch.nn.Module) -> float:
    pairs = [(b[k], getattr(theirs, f"fc_edge{i + 1}")[k]) for i, b in enumerate(net.branches) for k in (0, 1)]
    pairs.append((net.fuse, theirs.fc_edge6))
    return max(float((a - b).detach().abs().max()) for m, n in pairs for a, b in zip(m.parameters(), n.parameters()))


def random_labels(gen: torch.Generator, batch: int, size: int) -> torch.Tensor:
    """Blocky confident-label maps: background 0, classes 1-20, unsure 255."""
    coarse = torch.randint(0, 4, (batch, size // 32, size // 32), generator=gen)
    lut = torch.tensor([0, 7, 15, 255])
    return F.interpolate(lut[coarse][:, None].float(), size=(size, size), mode="nearest")[:, 0].long()


def irn_direction_order(path_index) -> list[int]:
    """For each of IRN's directions (grouped by path length), the index of the same direction in search_paths."""
    ours = {path[0]: d for d, path in enumerate(search_paths(RADIUS))}
    return [ours[(int(dy), int(dx))] for dy, dx in path_index.search_dst]


def compare_training(irn, size: int = 256, batch: int = 4, steps: int = 2, total: int = 10) -> dict:
    """Pairs, labels, affinities, loss and the boundary branch after ``steps`` steps, same weights and batches."""
    net = toolkit_net()
    path_index = irn.indexing.PathIndex(radius=RADIUS, default_size=(size // 4, size // 4))
    theirs = irn_copy(irn, net, "AffinityDisplacementLoss", path_index)
    groups = theirs.trainable_parameters()
    lr, wd = CFG.rw_lr, 1e-4                          # run_sample.py irn_learning_rate, irn_weight_decay
    opt_theirs = irn.torchutils.PolyOptimizer([
        {"params": groups[0], "lr": lr, "weight_decay": wd},
        {"params": groups[1], "lr": 10 * lr, "weight_decay": wd}], lr=lr, weight_decay=wd, max_step=total)
    opt_ours = affinity_optimizer([p for p in net.parameters() if p.requires_grad], lr, CFG.rw_optimizer)
    theirs.train()
    net.train()
    extract = irn.dataloader.GetAffinityLabelFromIndices(path_index.src_indices, path_index.dst_indices)
    order = irn_direction_order(path_index)
    gen = torch.Generator().manual_seed(1)
    out = {"pair_labels": 0.0, "affinity": 0.0, "pairs_irn": 0, "pairs_toolkit_default": 0}
    for it in range(steps):
        x = torch.randn(batch, 3, size, size, generator=gen)
        y = random_labels(gen, batch, size)
        small = [irn.imutils.pil_rescale(lab.numpy().astype(np.uint8), 0.25, 0) for lab in y]
        labels_theirs = [torch.stack(t) for t in zip(*(extract(s) for s in small))]   # bg_pos, fg_pos, neg
        # pair masks: ours restricted to IRN's sources, directions in IRN's order
        h = w = size // 4
        keep = irn_sources(h, w, RADIUS)
        reduced = F.interpolate(y[:, None].float(), size=(h, w), mode="nearest-exact")[:, 0]
        ours_masks = pair_labels(reduced, RADIUS)
        for mine, ref in zip(ours_masks, labels_theirs):
            mine = mine[:, order][..., keep].float()
            out["pair_labels"] = max(out["pair_labels"], float((mine - ref).abs().max()))
        out["pairs_irn"] += int(sum(m[..., keep].sum() for m in ours_masks))
        out["pairs_toolkit_default"] += int(sum(m.sum() for m in ours_masks))
        # IRN's loop (train_irn.py) and the toolkit's step
        pos, neg, dp_fg, dp_bg = theirs(x, True)
        bg_pos, fg_pos, neg_label = labels_theirs
        pos_aff = (torch.sum(bg_pos * pos) / (torch.sum(bg_pos) + 1e-5) / 2
                   + torch.sum(fg_pos * pos) / (torch.sum(fg_pos) + 1e-5) / 2)
        neg_aff = torch.sum(neg_label * neg) / (torch.sum(neg_label) + 1e-5)
        dp_fg = torch.sum(dp_fg * fg_pos[:, None]) / (2 * torch.sum(fg_pos) + 1e-5)
        dp_bg = torch.sum(dp_bg * bg_pos[:, None]) / (2 * torch.sum(bg_pos) + 1e-5)
        loss_theirs = (pos_aff + neg_aff) / 2
        opt_theirs.zero_grad()
        (loss_theirs + (dp_fg + dp_bg) / 2).backward()
        opt_theirs.step()
        for g in opt_ours.param_groups:
            g["lr"] = poly_lr(lr, it, total)
        logits = net(x)
        with torch.no_grad():
            aff_theirs = theirs.to_affinity(torch.sigmoid(logits))
            aff_ours, _ = edge_to_affinity(torch.sigmoid(logits)[:, 0], RADIUS)
            out["affinity"] = max(out["affinity"], float((aff_ours[:, order][..., keep] - aff_theirs).abs().max()))
        loss_ours = AffinityNet.loss(logits, y, radius=RADIUS, pairs=CFG.rw_pairs)
        loss_default = AffinityNet.loss(logits, y, radius=RADIUS)
        opt_ours.zero_grad(set_to_none=True)
        loss_ours.backward()
        opt_ours.step()
        out[f"loss_step{it + 1}"] = abs(loss_ours.item() - loss_theirs.item())
        out[f"loss_default_pairs_step{it + 1}"] = abs(loss_default.item() - loss_theirs.item())
        out[f"parameters_step{it + 1}"] = edge_difference(net, theirs)
    out["momentum_theirs"] = opt_theirs.param_groups[0]["momentum"]
    out["momentum_ours"] = opt_ours.param_groups[0]["momentum"]
    return out


def compare_augmentation(irn, count: int = 12) -> dict:
    """``VOC12AffinityDataset`` items (rescale 0.5-1.5, flip, random crop 512) beside irn_affinity_item, same draws."""
    rng = np.random.default_rng(3)
    size = CFG.cls_size
    out = {"image": 0.0, "label": 0.0, "aff_labels": 0.0, "padded_crops": 0}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "list.txt").write_text("2007000032\n2007000033\n")        # loadtxt: a 1-d list
        for k in range(count):
            h, w = (int(v) for v in rng.integers(150, 500, 2))
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            label = np.array([0, 3, 255], np.uint8)[rng.integers(0, 3, (h // 25 + 1, w // 25 + 1))]
            label = np.ascontiguousarray(label.repeat(25, 0).repeat(25, 1)[:h, :w])
            u_scale, u_top, u_left = (0.0, 0.0, 0.0) if k == 0 else (1 - 1e-9, 1 - 1e-9, 1 - 1e-9) if k == 1 \
                else rng.random(3)
            flip = bool(k % 2)
            path_index = irn.indexing.PathIndex(radius=RADIUS, default_size=(size // 4, size // 4))
            data = irn.dataloader.VOC12AffinityDataset(
                str(Path(tmp, "list.txt")), label_dir=tmp, crop_size=size, voc12_root=tmp,
                indices_from=path_index.src_indices, indices_to=path_index.dst_indices,
                hor_flip=True, crop_method="random", rescale=(0.5, 1.5))
            draws = iter([u_left, u_top])
            read = {"jpg": image, "png": label}
            with mock.patch.object(irn.dataloader.imageio, "imread", lambda p: read[str(p)[-3:]], create=True), \
                    mock.patch.object(irn.imutils.random, "random", lambda: u_scale), \
                    mock.patch.object(irn.imutils.random, "getrandbits", lambda n: int(flip)), \
                    mock.patch.object(irn.imutils.random, "randrange", lambda n: int(next(draws) * n)):
                item = data[0]
            x, y = irn_affinity_item(image, label, size, u_scale, flip, u_top, u_left)
            out["image"] = max(out["image"], float(np.abs(x.numpy() - item["img"]).max()))
            out["label"] = max(out["label"], float(np.abs(y.numpy() - item["label"].astype(np.int64)).max()))
            out["padded_crops"] += int(min(h, w) * (0.5 + u_scale) < size)     # the 255 / 0 frame exercised
            reduced = F.interpolate(y[None, None].float(), size=(size // 4,) * 2, mode="nearest-exact")[:, 0]
            keep = irn_sources(size // 4, size // 4, RADIUS)
            order = irn_direction_order(path_index)
            for mine, key in zip(pair_labels(reduced, RADIUS), ("aff_bg_pos_label", "aff_fg_pos_label",
                                                                 "aff_neg_label")):
                diff = (mine[0][order][:, keep].float() - item[key]).abs().max()
                out["aff_labels"] = max(out["aff_labels"], float(diff))
    return out


class _Numpy1Sizes:
    """numpy for make_sem_seg_labels.py: ``np.asarray(pack['size'])`` is (2, 1), whose rows numpy ≥ 2 no
    longer takes as slice bounds (numpy 1 did); flattened here, all else is numpy."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asarray(a, *args, **kwargs):
        return np.asarray(a, *args, **kwargs).reshape(-1)


class _Contiguous(torch.utils.data.Dataset):
    """IRN's dataset with each item's image pair made C-contiguous. IRN's loader stacks transposed (HWC → CHW)
    views, so its input is channels-last in memory, for which torch's CPU convolutions round differently
    (~1e-5 in the boundary map); with the same layout as the toolkit's the two nets agree bit for bit."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        item = self.data[i]
        return {**item, "img": np.ascontiguousarray(item["img"])}


def compare_inference(irn, count: int = 20) -> dict:
    """EdgeDisplacement's boundary map, propagate_to_edge's walk and make_sem_seg_labels._work's labels,
    on the same weights, ``count`` random images (``_work`` needs at least 20) and stride-4 CAMs (keys 3, 11);
    ``_work`` runs twice: on IRN's loader as it is, and with its input in the toolkit's memory layout."""
    net = toolkit_net().eval()
    theirs = irn_copy(irn, net, "EdgeDisplacement")
    theirs.eval()
    cfg = CFG
    rng = np.random.default_rng(4)
    shapes = [tuple(int(v) for v in rng.integers(60, 200, 2)) for _ in range(count)]
    keys = np.array([3, 11])
    out = {"pixels": int(sum(np.prod(s) for s in shapes))}
    with tempfile.TemporaryDirectory() as tmp:
        names = Path("voc12/train.txt").read_text().split()[:count]      # ids with class labels (cwd: the checkout)
        images, cams = {}, {}
        for name, (h, w) in zip(names, shapes):
            images[name] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            hs, ws = (h - 1) // 4 + 1, (w - 1) // 4 + 1
            c = torch.from_numpy(rng.random((len(keys), hs, ws), dtype=np.float32))
            cams[name] = F.avg_pool2d(c[None], 5, 1, 2, count_include_pad=False)[0]     # smooth maps
            np.save(Path(tmp, name + ".npy"), {"cam": cams[name], "keys": keys})
        Path(tmp, "list.txt").write_text("\n".join(n.replace("_", "") for n in names))   # IRN's integer names
        data = irn.dataloader.VOC12ClassificationDatasetMSF(str(Path(tmp, "list.txt")), voc12_root=tmp, scales=(1.0,))
        args = types.SimpleNamespace(num_workers=0, cam_out_dir=tmp, sem_seg_out_dir=tmp, beta=cfg.rw_beta,
                                     exp_times=cfg.rw_exp_times, sem_seg_bg_thres=cfg.rw_bg_threshold)
        propagate = irn.indexing.propagate_to_edge
        for layout, dataset in (("irn_loader", data), ("same_layout", _Contiguous(data))):
            edges, walks, saved = [], [], {}
            hook = theirs.register_forward_hook(lambda m, i, o: edges.append(o[0]))

            def recorded_walk(*a, **k):
                walks.append(propagate(*a, **k))
                return walks[-1]
            with mock.patch.object(irn.dataloader.imageio, "imread", lambda p: images[Path(p).stem], create=True), \
                    mock.patch.object(irn.make_sem_seg_labels.imageio, "imsave",
                                      lambda p, a: saved.__setitem__(Path(p).stem, a), create=True), \
                    mock.patch.object(torch.cuda, "device_count", lambda: 1), \
                    mock.patch.object(irn.make_sem_seg_labels.cuda, "device", lambda i: contextlib.nullcontext()), \
                    mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self), \
                    mock.patch.object(theirs, "cuda", lambda: theirs), \
                    mock.patch.object(irn.indexing, "propagate_to_edge", recorded_walk), \
                    mock.patch.object(irn.make_sem_seg_labels, "np", _Numpy1Sizes()), \
                    contextlib.redirect_stdout(io.StringIO()):
                irn.make_sem_seg_labels._work(0, theirs, [dataset], args)
                inputs = [torch.from_numpy(np.ascontiguousarray(data[k]["img"][0])) for k in range(count)]
            hook.remove()
            part = {"edge": 0.0, "walk_dense": 0.0, "walk_sparse": 0.0, "labels_dense_pixels": 0,
                    "labels_sparse_pixels": 0}
            with torch.no_grad():
                for k, name in enumerate(names):
                    h, w = images[name].shape[:2]
                    edge = irn_edge(net, inputs[k], cfg.cls_size)
                    part["edge"] = max(part["edge"], float((edge - edges[k]).abs().max()))
                    for method in ("dense", "sparse"):
                        run = types.SimpleNamespace(**{**vars(cfg), "rw_method": method})
                        walked = random_walk((cams[name] * (1 - edge)).reshape(len(keys), -1), edge,
                                             run.rw_radius, run.rw_beta, run.rw_exp_times, method)
                        diff = (walked.view(walks[k].shape) - walks[k]).abs().max() / walks[k].max()
                        part[f"walk_{method}"] = max(part[f"walk_{method}"], float(diff))
                        labels = walked_labels(walk_up(cams[name], edge, (h, w), run, net.stride), keys,
                                               run.rw_bg_threshold)
                        part[f"labels_{method}_pixels"] += int((labels != saved[name]).sum())
                    if layout == "same_layout":                 # the toolkit's default inference, for contrast
                        plain = net.edge(inputs[k][None])[0]
                        resized = walk_up(cams[name], plain, (h, w), run, None)
                        out["labels_toolkit_infer_pixels"] = out.get("labels_toolkit_infer_pixels", 0) + int(
                            (walked_labels(resized, keys, run.rw_bg_threshold) != saved[name]).sum())
            out.update({f"{layout}_{key}": value for key, value in part.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("irn", type=Path, help="a checkout of jiwoon-ahn/irn (outside this repository)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", choices=("training", "augmentation", "inference"), action="append")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("WSSSBENCH_THREADS", "1")))
    irn = load_irn(args.irn.resolve())
    parts = {"training": compare_training, "augmentation": compare_augmentation, "inference": compare_inference}
    result = {name: fn(irn) for name, fn in parts.items() if not args.only or name in args.only}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for part, numbers in result.items():
        for name, value in numbers.items():
            print(f"{part:13s} {name:28s} {value:.3g}")


if __name__ == "__main__":
    main()
