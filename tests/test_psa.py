"""PSA's AffinityNet step (expansion=psa): pairs, labels, loss, affinity matrix and walk against plain loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsssbench import harness
from wsssbench.models import build_backbone
from wsssbench.models.psa import (PSAAffinityNet, affinity_labels, affinity_loss, affinity_matrix,
                                  effective_radius, pair_indices, psa_optimizer)
from wsssbench.stages import psa
from wsssbench.stages.expand import walk

from harness_standins import SquaresDataset

torch.set_num_threads(1)


def dirs(radius):
    """pyutils.get_indices_of_pairs's search directions, by hand."""
    out = [(0, x) for x in range(1, radius)]
    return out + [(y, x) for y in range(1, radius) for x in range(-radius + 1, radius)
                  if x * x + y * y < radius * radius]


def pairs_loop(radius, h, w):
    """(src, dst) pixel pairs: sources in rows 0..h-r, columns r-1..w-r (r = radius), every direction."""
    r = radius - 1
    srcs = [(y, x) for y in range(h - r) for x in range(r, w - r)]
    return [[(y * w + x, (y + dy) * w + x + dx) for y, x in srcs] for dy, dx in dirs(radius)]


def test_pairs_are_the_loop():
    src, dst = pair_indices(3, 6, 7)
    want = pairs_loop(3, 6, 7)
    assert [[(int(s), int(d)) for s, d in zip(src, row)] for row in dst] == want


def test_affinity_labels_are_the_loop():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (1, 6, 7), generator=g)
    label[0, 1, 2] = label[0, 4, 5] = 255
    bg, fg, neg = affinity_labels(label, 3)
    flat = label.flatten().tolist()
    for d, row in enumerate(pairs_loop(3, 6, 7)):
        for p, (s, t) in enumerate(row):
            a, b = flat[s], flat[t]
            ok = a != 255 and b != 255
            assert (bg[0, d, p], fg[0, d, p], neg[0, d, p]) == (a == b == 0, ok and a == b != 0, ok and a != b)


def test_affinity_loss_is_the_formula():
    g = torch.Generator().manual_seed(1)
    aff = torch.rand(2, 3, 5, generator=g)
    masks = [(torch.rand(2, 3, 5, generator=g) < 0.4).float() for _ in range(3)]
    a = aff.flatten().tolist()
    bg, fg, neg = ([v for v in m.flatten().tolist()] for m in masks)
    term = lambda m, f: sum(-f(x) for x, k in zip(a, m) if k) / (sum(m) + 1e-5)
    want = (term(bg, lambda x: math.log(x + 1e-5)) / 4 + term(fg, lambda x: math.log(x + 1e-5)) / 4
            + term(neg, lambda x: math.log(1 + 1e-5 - x)) / 2)
    assert affinity_loss(aff, *masks).item() == pytest.approx(want, rel=1e-6)


def test_affinity_matrix_and_walk():
    h, w, r = 5, 6, 3
    src, dst = pair_indices(r, h, w)
    aff = torch.rand(dst.shape, dtype=torch.float64)
    dense = affinity_matrix(aff, r, h, w).to_dense()
    want = torch.eye(h * w, dtype=torch.float64)
    for d in range(dst.shape[0]):
        for p in range(dst.shape[1]):
            want[src[p], dst[d, p]] = want[dst[d, p], src[p]] = aff[d, p]
    assert torch.equal(dense, want)
    trans = want.pow(8)
    trans = trans / trans.sum(0, keepdim=True)
    x = torch.rand(2, h * w, dtype=torch.float64)
    loop = x.clone()
    for _ in range(4):
        loop = loop @ trans
    for method in ("sparse", "dense"):
        torch.testing.assert_close(walk(x, affinity_matrix(aff, r, h, w), 8.0, 2, method), loop, atol=1e-12, rtol=0)


def test_effective_radius_is_seams_rule():
    assert effective_radius(5, 56, 70) == 5 and effective_radius(5, 8, 8) == 3 and effective_radius(5, 10, 20) == 4


def test_net_affinities_are_exp_of_the_mean_l1_distance():
    torch.manual_seed(0)
    net = PSAAffinityNet(build_backbone("small", output_stride=8), radius=3).eval()
    x = torch.randn(1, 3, 56, 64)                 # 7 x 8 features: radius 3 stays 3
    with torch.no_grad():
        f = net.features(x)[0].flatten(1)
        aff = net(x)[0]
    src, dst = pair_indices(3, 7, 8)
    for d, p in [(0, 0), (3, 7), (len(dst) - 1, dst.shape[1] - 1)]:
        want = math.exp(-(f[:, src[p]] - f[:, dst[d, p]]).abs().mean().item())
        assert aff[d, p].item() == pytest.approx(want, rel=1e-5)


def test_training_label_is_voc12_aff_dataset_rule():
    # n = 2 (background + one class); low-α argmax: [bg, fg, fg, fg]; high-α: [bg, bg, fg, fg]; last pixel no score
    low = torch.tensor([[[0.9, 0.2, 0.1, 0.0]], [[0.1, 0.8, 0.9, 0.0]]])
    high = torch.tensor([[[0.9, 0.6, 0.2, 0.0]], [[0.1, 0.4, 0.8, 0.0]]])
    assert psa.training_label(torch.cat([low, high]), 2).tolist() == [[0, 0, 1, 255]]


def test_walk_inputs_pad_and_pool():
    cams = np.random.default_rng(0).random((2, 10, 12)).astype(np.float32)
    got = psa.walk_inputs(cams, 4.0, (16, 16))
    full = np.zeros((3, 16, 16), np.float32)
    full[0, :10, :12] = (1 - cams.max(0)) ** 4
    full[1:, :10, :12] = cams
    want = full.reshape(3, 2, 8, 2, 8).mean((2, 4))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_psa_optimizer_groups():
    torch.manual_seed(0)
    net = PSAAffinityNet(build_backbone("small", output_stride=8))
    opt = psa_optimizer(net, 0.01, 5e-4, new=("f8_", "f9"))
    new = {id(getattr(net, n).weight) for n in ("f8_3", "f8_4", "f8_5", "f9")}
    assert {id(p) for p in opt.param_groups[2]["params"]} == new
    bn = {id(p) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert bn and not bn & {id(p) for g in opt.param_groups for p in g["params"]}
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(0.01, 5e-4), (0.02, 0.0), (0.1, 5e-4),
                                                                        (0.2, 0.0)]
    assert opt.param_groups[0]["momentum"] == 5e-4


class ConstantAffinities:
    """A stand-in AffinityNet: every pair of the stride-8 grid has affinity ``value``."""

    def __init__(self, value: float):
        self.value = value

    def radius_for(self, h, w):
        return 5

    def __call__(self, x):
        src, dst = pair_indices(5, x.shape[-2] // 8, x.shape[-1] // 8)
        return torch.full((1, *dst.shape), self.value)


def test_walked_scores_without_affinities_are_the_pooled_cams():
    """Affinity 0: T is the identity, so infer_aff.py's output is the 8×8-pooled [bg, CAMs], bilinear to
    the padded size, cropped; affinity 1 everywhere mixes the maps (lower contrast)."""
    from types import SimpleNamespace
    cams = np.random.default_rng(0).random((2, 90, 100)).astype(np.float32)
    image = np.zeros((90, 100, 3), np.uint8)
    ctx = SimpleNamespace(cfg=SimpleNamespace(rw_beta=8.0, rw_exp_times=3, rw_method="sparse", rw_psa_alpha=16.0,
                                              backbone="small"), device="cpu")
    got = psa.walked_scores(ctx, ConstantAffinities(0.0), image, cams)
    pooled = psa.walk_inputs(cams, 16.0, (96, 104))
    want = torch.nn.functional.interpolate(pooled[None], (96, 104), mode="bilinear", align_corners=False)
    want = want[0, :, :90, :100]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    mixed = psa.walked_scores(ctx, ConstantAffinities(1.0), image, cams)
    assert (mixed.std((1, 2)) < got.std((1, 2))).all()


def test_psa_stage_writes_masks(tmp_path):
    """The stage end to end on CAMs made from the masks: CRF scores, one AffinityNet epoch, the walk; one
    pseudo-mask per image, of its size, with its labels."""
    from types import SimpleNamespace

    from PIL import Image

    from wsssbench.cams import save_cams
    ds = SquaresDataset(tmp_path / "data", n=8, size=64)
    samples = ds.samples("train")
    for s in samples:
        gt = np.array(Image.open(s.mask))
        keys = np.array(sorted(s.labels)) - 1
        cams = np.stack([(gt == k + 1) * 0.9 for k in keys]).astype(np.float32)
        save_cams(tmp_path / "cams" / f"{s.id}.npz", keys, cams)
    cfg = SimpleNamespace(backbone="small", weights=None, cls_size=64, rw_radius=5, rw_beta=8.0, rw_exp_times=2,
                          rw_method="sparse", rw_epochs=1, rw_batch_size=4, rw_lr=0.01, rw_train_images=4)
    ctx = SimpleNamespace(cfg=cfg, dataset=ds, device="cpu", seed=0)
    torch.manual_seed(0)
    psa.run(ctx, tmp_path / "cams", samples, tmp_path / "out")
    assert sorted(p.stem for p in (tmp_path / "out" / "crf").glob("*.npz")) == [s.id for s in samples[:4]]
    for s in samples:
        got = np.array(Image.open(tmp_path / "out" / "masks" / f"{s.id}.png"))
        assert got.shape == (64, 64) and set(np.unique(got)) <= {0, *s.labels}
    assert (tmp_path / "out" / "affinity.pt").exists()


@pytest.mark.slow
def test_psa_expansion_runs(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    over = {"cls_epochs": "1", "cls_size": "40", "cam_scales": "1.0", "cam_flip": "false", "seg_enabled": "false",
            "expansion": "psa", "rw_epochs": "1", "rw_batch_size": "4", "rw_exp_times": "3"}
    rec = harness.run_method("seam", overrides=over, out=tmp_path / "runs")
    assert 0 <= rec.metrics["pseudo_miou"] <= 100 and rec.extra["expansion"] == "psa"
