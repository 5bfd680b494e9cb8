"""DSRG: region growing, losses and seeds against plain loops and hand-worked cases; saliency; a short run."""
from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness_standins import SquaresDataset
from wsssbench import harness
from wsssbench.data.saliency import load_saliency, read_saliency, synthetic_saliency
from wsssbench.errors import UserError
from wsssbench.methods.dsrg import (DSRGConfig, balanced_seed_loss, boundary_loss, crf_refine, dsrg_optimizer,
                                    foreground_seeds, grow_seeds, seed_mask, seg_step, softmax_probs)
from wsssbench.methods_api import METHODS, Context, make_config, stage_fields

FAST = {"cls_epochs": "1", "cls_size": "40", "cam_scales": "1.0", "cam_flip": "false", "seg_iterations": "4",
        "seg_size": "40", "seg_batch_size": "4"}


# ------------------------------------------------------------------------------------------ region growing

def grow_loop(labels, seeds, probs, th_fg, th_bg):
    """generate_seed_step written out: label each pixel, flood-fill each class's 8-connected regions from
    its seeds, skip pixels that are exactly one other class's seed (they still connect)."""
    seeds = seeds.copy()
    c_all, h, w = seeds.shape
    present = [c for c in range(c_all) if labels[c] == 1]
    label_map = np.zeros((h, w), int)
    for c in range(c_all):
        for y in range(h):
            for x in range(w):
                if seeds[c, y, x] > 0:
                    label_map[y, x] = c + 1
    for y in range(h):
        for x in range(w):
            best = max(present, key=lambda c: (probs[c, y, x], -c))
            value = probs[best, y, x]
            if value > th_fg and (best != 0 or value > th_bg):
                label_map[y, x] = best + 1
    for c in present:
        seen = np.zeros((h, w), bool)
        for y0 in range(h):
            for x0 in range(w):
                if label_map[y0, x0] != c + 1 or seen[y0, x0]:
                    continue
                region, queue = [], deque([(y0, x0)])
                seen[y0, x0] = True
                while queue:
                    y, x = queue.popleft()
                    region.append((y, x))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            v, u = y + dy, x + dx
                            if 0 <= v < h and 0 <= u < w and not seen[v, u] and label_map[v, u] == c + 1:
                                seen[v, u] = True
                                queue.append((v, u))
                if any(seeds[c, y, x] == 1 for y, x in region):
                    for y, x in region:
                        if not (seeds[c, y, x] != 1 and seeds[:, y, x].sum() == 1):
                            seeds[c, y, x] = 1
    return seeds


def test_growing_hand_worked():
    """5 x 6, background + one class: the class grows over its confident block around its seed, not over a
    confident pixel apart from it nor over a background seed; background grows only above 0.99."""
    labels = np.array([1, 1], np.float32)
    seeds = np.zeros((2, 5, 6), np.float32)
    seeds[1, 2, 2] = 1                        # the class's seed
    seeds[0, 1, 1] = 1                        # a background seed inside the class's confident block
    seeds[0, 4, 0] = 1                        # a background seed in a corner
    p1 = np.full((5, 6), 0.5, np.float32)
    p1[1:4, 1:4] = 0.9                        # the confident block, touching the seed
    p1[0, 5] = 0.9                            # confident but apart
    p1[4, 1] = 0.02                           # background 0.98 there: below 0.99, not grown
    p1[3, 0] = 0.005                          # background 0.995 beside the corner seed: grown
    probs = np.stack([1 - p1, p1])
    grown = grow_seeds(labels, seeds, probs)
    want1 = np.zeros((5, 6))
    want1[1:4, 1:4] = 1
    want1[1, 1] = 0                           # another class's seed: skipped, yet it connected the block
    assert (grown[1] == want1).all()
    want0 = seeds[0].copy()
    want0[3, 0] = 1
    assert (grown[0] == want0).all()
    assert (seeds[1].sum(), seeds[0].sum()) == (1, 2)       # the input is left as it was
    assert (grow_loop(labels, seeds, probs, 0.85, 0.99) == grown).all()


@pytest.mark.parametrize("seed", range(6))
def test_growing_matches_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    c, h, w = 5, 12, 13
    labels = (rng.random(c) < 0.6).astype(np.float32)
    labels[0] = 1
    seeds = (rng.random((c, h, w)) < 0.08).astype(np.float32)       # overlapping seeds included
    logits = 6 * rng.standard_normal((c, h, w)) + 4 * seeds
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    got = grow_seeds(labels, seeds, probs, 0.85, 0.99)
    want = grow_loop(labels, seeds, probs, 0.85, 0.99)
    assert (got == want).all() and (got != seeds).sum() > 0


# ------------------------------------------------------------------------------------------ losses

def test_softmax_adds_the_floor_and_clamps():
    logits = torch.tensor([[[[0.0]], [[30.0]], [[-30.0]]]], requires_grad=True)
    p = softmax_probs(logits)
    e = torch.softmax(logits, 1) + 1e-4
    e = e / e.sum(1, keepdim=True)
    assert torch.allclose(p, e.clamp(min=1e-4)) and p[0, 2, 0, 0].item() == pytest.approx(1e-4)
    p.sum().backward()                               # the floor passes the gradient through
    assert logits.grad is not None


def test_seed_loss_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.from_numpy(rng.standard_normal((3, 4, 5, 6))), 1)
    seeds = torch.from_numpy((rng.random((3, 4, 5, 6)) < 0.3).astype(np.float64))
    seeds[2, 0] = 0                                    # no background seeds: that image adds 0 there
    got = balanced_seed_loss(probs, seeds).item()
    probs, seeds = probs.numpy(), seeds.numpy()
    bg = fg = 0.0
    for b in range(3):
        s = [0.0, 0.0]
        n = [0.0, 0.0]
        for c in range(4):
            for y in range(5):
                for x in range(6):
                    if seeds[b, c, y, x]:
                        s[c > 0] -= float(np.log(probs[b, c, y, x]))
                        n[c > 0] += 1
        bg += s[0] / max(n[0], 1e-4) / 3
        fg += s[1] / max(n[1], 1e-4) / 3
    assert got == pytest.approx(bg + fg, rel=1e-12)


def test_boundary_loss_and_its_caffe_gradient_against_loops():
    rng = np.random.default_rng(1)
    probs = torch.softmax(torch.from_numpy(3 * rng.standard_normal((2, 3, 4, 4))), 1).requires_grad_(True)
    q = torch.softmax(torch.from_numpy(3 * rng.standard_normal((2, 3, 4, 4))), 1)
    loss = boundary_loss(probs, q, "caffe")
    want, n = 0.0, 2 * 4 * 4
    grad_p = np.zeros((2, 3, 4, 4))
    grad_logq = np.zeros((2, 3, 4, 4))
    for idx in np.ndindex(2, 3, 4, 4):
        pv, qv = probs[idx].item(), q[idx].item()
        ratio = qv / pv
        inside = 0.05 <= ratio <= 20
        want += qv * np.log(min(max(ratio, 0.05), 20)) / n
        grad_p[idx] = -qv / pv / n if inside else 0.0
        grad_logq[idx] = qv * (np.log(min(max(ratio, 0.05), 20)) + inside) / n
    assert loss.item() == pytest.approx(want, rel=1e-12)
    clipped = ((q / probs.detach()) < 0.05) | ((q / probs.detach()) > 20)
    assert clipped.any()                                # the clip is exercised
    g, = torch.autograd.grad(loss, probs)
    assert np.allclose(g.numpy(), grad_p + (1 - q.numpy()) * grad_logq)
    g_none, = torch.autograd.grad(boundary_loss(probs, q, "none"), probs)
    assert np.allclose(g_none.numpy(), grad_p) and not np.allclose(g_none.numpy(), g.numpy())


def test_crf_refine_is_a_distribution_that_keeps_a_confident_labelling():
    probs = np.full((1, 2, 6, 6), 0.1, np.float32)
    probs[0, 1, :, 3:] = probs[0, 0, :, :3] = 0.9
    image = np.zeros((1, 6, 6, 3), np.uint8)
    image[0, :, 3:] = 255
    out = crf_refine(image, probs)
    assert np.allclose(out.sum(1), 1) and out.min() >= 1e-4 / (1 + 1e-4)
    assert (out[0].argmax(0) == (np.arange(6) >= 3)[None].repeat(6, 0)).all()


# ------------------------------------------------------------------------------------------ seeds

def test_seed_mask_fg_over_saliency_background_and_overlaps():
    cams = np.zeros((2, 1, 10), np.float32)
    cams[0, 0] = np.linspace(0, 1, 10)                 # class 0: its top 2 of 10 pixels (8, 9)
    cams[1, 0, 7:] = [0.2, 0.95, 0.9]                  # class 4: pixels 7-9 lead, ties at the top fought by value
    sal = np.full((1, 10), 0.5, np.float32)
    sal[0, :3] = 0.01
    sal[0, 9] = 0.0                                    # a foreground seed wins over low saliency
    mask = seed_mask(cams, np.array([0, 4]), sal, top=0.2)
    assert mask.tolist() == [[0, 0, 0, 255, 255, 255, 255, 255, 5, 1]]
    assert foreground_seeds(np.zeros((1, 2, 2)), np.array([0]), 0.2).sum() == 0    # no CAM, no seed


# ------------------------------------------------------------------------------------------ optimiser, settings

def test_optimizer_follows_caffe_lr_mult():
    from wsssbench.models import DeepLabV2, build_backbone
    model = DeepLabV2(build_backbone("small", output_stride=8), 3, msc_scales=())
    opt = dsrg_optimizer(model, 0.01, 5e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        head = {names[id(p)].startswith("aspp.") for p in g["params"]}
        bias = {names[id(p)].endswith("bias") for p in g["params"]}
        assert len(head) == len(bias) == 1
        head, bias = head.pop(), bias.pop()
        mult = {(False, False): 1, (False, True): 2, (True, False): 10, (True, True): 20}[(head, bias)]
        assert g["base_lr"] == pytest.approx(0.01 * mult) and g["weight_decay"] == (0 if bias else 5e-4)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_settings_and_paper_recipe():
    m = METHODS.get("dsrg")
    cfg = make_config(m, {})
    assert (cfg.seg_grow_fg, cfg.seg_grow_bg, cfg.seed_fg_top, cfg.seed_saliency) == (0.85, 0.99, 0.2, 0.06)
    paper = make_config(m, {"recipe": "paper"})
    assert (paper.seg_backbone, paper.seg_output_stride, paper.seg_size, paper.seg_batch_size, paper.seg_iterations,
            paper.seg_lr, paper.seg_lr_step, paper.seg_weight_decay) == ("resnet101", 16, 321, 20, 10000, 5e-4,
                                                                        2000, 5e-4)
    cam_paper = make_config(METHODS.get("cam"), {"recipe": "paper"})
    assert paper.seg_scales == (1.0,) and paper.backbone == cam_paper.backbone
    # DSRG's own settings stay out of the classifier's and CAMs' keys: it shares them with `cam`
    cam = make_config(METHODS.get("cam"), {})
    assert stage_fields(cfg, "cams", m) == stage_fields(cam, "cams", METHODS.get("cam"))
    assert "saliency_dir" in stage_fields(cfg, "expand", m) and "seg_grow_fg" not in stage_fields(cfg, "expand", m)
    assert make_config(METHODS.get("conta"), {"base": "dsrg", "saliency_dir": "x"}).saliency_dir == "x"
    for key, value in (("seed_fg_top", "0"), ("seed_fg_rule", "x"), ("seg_grow_fg", "2"), ("seg_output_stride", "4"),
                       ("seg_boundary_gradient", "x")):
        with pytest.raises(UserError, match=f"--set {key}={value}"):
            make_config(m, {key: value})


# ------------------------------------------------------------------------------------------ saliency

def test_synthetic_saliency_is_deterministic_imperfect_and_confounded():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 1
    context = np.zeros_like(mask)
    context[25:35, 25:35] = 1
    sal = synthetic_saliency(mask, context, "img")
    assert (sal == synthetic_saliency(mask, context, "img")).all()
    assert not (sal == synthetic_saliency(mask, context, "other")).all()
    assert sal[15, 15] > 150 and sal[30, 30] > 0.06 * 255       # the context is a false positive
    background = (mask == 0) & (context == 0)
    low = sal[background] < 0.06 * 255
    assert 0.2 < low.mean() < 0.95                              # part of the true background is a cue, not all


def test_saliency_dir_reads_pngs_and_a_missing_one_is_one_line(tmp_path):
    ds = SquaresDataset(tmp_path / "data", n=2)
    sample = ds.samples("train")[0]
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(tmp_path / f"{sample.id}.png")
    sal = load_saliency(ds, sample, str(tmp_path))
    assert sal.shape == (40, 40) and sal.dtype == np.float32 and np.allclose(sal, 1.0)   # resized to the image
    with pytest.raises(UserError, match=r"saliency map .*train_001\.png is missing"):
        load_saliency(ds, ds.samples("train")[1], str(tmp_path))
    with pytest.raises(UserError, match="no saliency maps; give --set saliency_dir=DIR"):
        load_saliency(ds, sample)
    with pytest.raises(UserError, match="is missing"):
        read_saliency(tmp_path / "nope.png", (4, 4))


# ------------------------------------------------------------------------------------------ training step, run

def test_seg_step_gives_a_finite_loss_with_gradients(tmp_path):
    ds = SquaresDataset(tmp_path / "data", n=2)
    ctx = Context(cfg=DSRGConfig(), dataset=ds)
    model = METHODS.get("dsrg").build_segmenter(ctx)
    torch.manual_seed(0)
    mask = torch.full((2, 32, 32), 255)
    mask[:, :8] = 0
    mask[0, 12:20, 12:20] = 1
    batch = {"image": torch.randn(2, 3, 32, 32), "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "mask": mask}
    loss = seg_step(ctx, model, batch)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert model.aspp.branches[0].weight.grad.abs().sum() > 0


@pytest.fixture
def squares_with_saliency(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data")
    sal = tmp_path / "saliency"
    sal.mkdir()
    for split in ds.split_names():
        for s in ds.samples(split):
            fg = (np.array(Image.open(s.mask)) > 0).astype(np.uint8) * 255
            Image.fromarray(fg).save(sal / f"{s.id}.png")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    return ds, sal


def test_run_writes_seeds_as_pseudo_masks(squares_with_saliency, tmp_path):
    ds, sal = squares_with_saliency
    rec = harness.run_method("dsrg", overrides={**FAST, "saliency_dir": str(sal)}, out=tmp_path / "runs")
    masks = Path(rec.artifacts["masks"])
    sample = ds.samples("train")[0]
    seeds = np.array(Image.open(masks / f"{sample.id}.png"))
    gt = np.array(Image.open(sample.mask))
    assert set(np.unique(seeds)) <= {0, 255, *(c for c in sample.labels)}
    # the saliency here is the GT mask: every background pixel is a cue unless a CAM seed claims it
    assert ((seeds == 0) <= (gt == 0)).all() and not ((gt == 0) & (seeds == 255)).any()
    assert 0 < rec.metrics["seg_miou"] <= 100 and rec.config["seg_optimizer"] == "dsrg"
    with pytest.raises(UserError, match="saliency map .* is missing"):
        harness.run_method("dsrg", overrides={**FAST, "saliency_dir": str(tmp_path)}, out=tmp_path / "runs2")


@pytest.mark.slow
def test_conta_on_dsrg_two_rounds_on_tiny(tmp_path):
    """`run conta --set base=dsrg rounds=2` on tiny: three rounds recorded, the DSRG seeds as pseudo-masks."""
    rec = harness.run_method("conta", overrides={"base": "dsrg", "rounds": "2"}, out=tmp_path / "runs")
    assert [r["round"] for r in rec.rounds] == [0, 1, 2]
    saved = json.loads(Path(rec.artifacts["record"]).read_text())
    assert saved["rounds"] == rec.rounds and saved["config"]["seg_optimizer"] == "dsrg"
    for r in rec.rounds:
        masks = Path(r["artifacts"]["masks"])
        assert any(255 in np.unique(np.array(Image.open(p))) for p in list(masks.glob("*.png"))[:20])
        assert 0 < r["seg_miou"] <= 100
