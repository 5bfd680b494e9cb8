"""SEC: the seed, expand and constrain losses and GWRP against plain loops of kolesman/SEC's pylayers.py
formulas on hand-made tensors; the cues, the CRF layer, the network, the solver; a short run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from wsssbench import harness
from wsssbench.errors import UserError
from wsssbench.methods import sec
from wsssbench.methods_api import METHODS, make_config
from wsssbench.models import build_backbone
from wsssbench.models.sec import SECNet

from harness_standins import SquaresDataset

torch.set_num_threads(1)
FAST = {"cls_epochs": "2", "cls_size": "40", "cam_scales": "1.0", "cam_flip": "false", "seg_iterations": "4",
        "seg_size": "40", "seg_batch_size": "3", "seg_sec_channels": "16"}


def scores(seed=0, b=2, c=4, h=3, w=5):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def softmax_loop(s):
    """pylayers.py SoftmaxLayer per pixel: exp(x - max) / sum + min_prob, renormalised."""
    out = torch.empty_like(s)
    b, c, h, w = s.shape
    for i in range(b):
        for y in range(h):
            for x in range(w):
                v = [float(s[i, k, y, x]) for k in range(c)]
                e = [math.exp(t - max(v)) for t in v]
                p = [t / sum(e) + 1e-4 for t in e]
                for k in range(c):
                    out[i, k, y, x] = p[k] / sum(p)
    return out


def gwrp_loop(values, q):
    """GWRP of one map as the SEC paper writes it: Σ_j q^(j) x_(j) / Σ_j q^j, x sorted largest first."""
    xs = sorted(values, reverse=True)
    return sum(q ** j * x for j, x in enumerate(xs)) / sum(q ** j for j in range(len(xs)))


def test_smoothed_softmax_is_the_loop():
    s = scores()
    torch.testing.assert_close(sec.smoothed_softmax(s), softmax_loop(s), rtol=0, atol=1e-12)


def test_gwrp_is_the_loop_the_mean_at_one_and_the_max_near_zero():
    m = scores(1)
    got = sec.gwrp(m, 0.7)
    for i in range(m.shape[0]):
        for k in range(m.shape[1]):
            assert got[i, k].item() == pytest.approx(gwrp_loop(m[i, k].flatten().tolist(), 0.7), abs=1e-12)
    torch.testing.assert_close(sec.gwrp(m, 1.0), m.mean((2, 3)))
    torch.testing.assert_close(sec.gwrp(m, 1e-9), m.amax((2, 3)))


def test_seed_loss_is_the_loop_and_an_image_without_cues_adds_nothing():
    p = sec.smoothed_softmax(scores(2))
    mask = torch.full((2, 3, 5), 255)
    mask[0, 0, :3], mask[0, 2, 4], mask[1, 1, 1] = 0, 3, 1
    cues = sec.one_hot_cues(mask, 4, (3, 5))
    assert cues.sum().item() == 5 and cues[0, 0, 0, :3].sum().item() == 3
    want0 = -(sum(math.log(p[0, 0, 0, x]) for x in range(3)) + math.log(p[0, 3, 2, 4])) / 4
    want1 = -math.log(p[1, 1, 1, 1])
    assert sec.seed_loss(p, cues).item() == pytest.approx((want0 + want1) / 2, abs=1e-12)
    cues[1] = 0
    assert sec.seed_loss(p, cues).item() == pytest.approx(want0 / 2, abs=1e-12)


def expand_loop(p, labels, q_fg, q_bg):
    """pylayers.py ExpandLossLayer per image: present classes' −log GWRP, absent ones' −log(1 − max), bg's."""
    n = len(p)
    l1 = l2 = l3 = 0.0
    for i in range(n):
        present = [k for k in range(labels.shape[1]) if labels[i, k] > 0.5]
        absent = [k for k in range(labels.shape[1]) if labels[i, k] <= 0.5]
        l1 -= sum(math.log(gwrp_loop(p[i, k + 1].flatten().tolist(), q_fg)) for k in present) / len(present)
        l2 -= sum(math.log(1 - max(p[i, k + 1].flatten().tolist())) for k in absent) / len(absent)
        l3 -= math.log(gwrp_loop(p[i, 0].flatten().tolist(), q_bg))
    return (l1 + l2 + l3) / n


def test_expand_loss_is_the_loop():
    p = sec.smoothed_softmax(scores(3))
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert sec.expand_loss(p, labels, 0.9, 0.97).item() == pytest.approx(expand_loop(p, labels, 0.9, 0.97), abs=1e-12)


def test_constrain_loss_is_the_kl_loop_and_passes_no_gradient_to_the_crf():
    s = scores(4).requires_grad_(True)
    p = sec.smoothed_softmax(s)
    crf = torch.log(sec.smoothed_softmax(scores(5))).requires_grad_(True)
    b, c, h, w = p.shape
    want = sum(sum(math.exp(crf[i, k, y, x].item()) * (crf[i, k, y, x].item() - math.log(p[i, k, y, x].item()))
                   for k in range(c)) for i in range(b) for y in range(h) for x in range(w)) / (b * h * w)
    loss = sec.constrain_loss(p, crf)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    loss.backward()
    assert crf.grad is None and s.grad.abs().sum() > 0


def test_cues_take_the_largest_cam_where_classes_overlap_and_background_ties_count():
    cams = np.array([[[1.0, 0.5, 0.3, 0.0, 0.0]], [[0.0, 0.9, 0.4, 0.0, 0.05]]], np.float32)
    # fg at > 0.2 x max: class 2 at px 0,1,2; class 5 at 1,2; px 1: 0.9 > 0.5, px 2: 0.4 > 0.3
    # bg: max CAM sorted [0, 0.05, 0.4, 0.9, 1]; index int(0.2 * 5) = 1 -> 0.05; <= 0.05: px 3, 4
    assert sec.cues_from_cams(cams, np.array([1, 4]), 0.2, 0.2).tolist() == [[2, 5, 5, 0, 0]]
    assert sec.cues_from_cams(cams, np.array([1, 4]), 0.2, 0.0).tolist() == [[2, 5, 5, 0, 255]]
    assert sec.cues_from_cams(np.zeros((0, 2, 2), np.float32), np.zeros(0, int), 0.2, 0.1).tolist() == [[0, 0], [0, 0]]


def test_crf_layer_is_a_normalised_log_distribution_on_bgr_images():
    s = scores(6, b=1, c=3, h=6, w=6).float()
    img = torch.zeros(1, 3, 12, 12)
    img[:, 0] = 2.0                      # normalised red high, blue low
    bgr = sec.images_at(img, (6, 6))
    assert bgr.shape == (1, 6, 6, 3) and bgr[0, 0, 0, 2] == 240 and bgr[0, 0, 0, 0] < 110   # (2 x .229 + .485) x 255
    log_q = sec.crf_log_probs(s, bgr, min_prob=1e-4)
    torch.testing.assert_close(log_q.exp().sum(1), torch.ones(1, 6, 6), rtol=0, atol=1e-5)
    assert log_q.min().item() >= math.log(1e-4 / (1 + 3e-4)) - 1e-6     # clipped, then renormalised


def test_network_is_largefov_at_stride_8():
    net = SECNet(build_backbone("vgg16", output_stride=8), 21)
    # Caffe's pools round up: 97 -> 49 -> 25 -> 13 (and 321 -> 161 -> 81 -> 41, train.prototxt's 41 x 41)
    assert net(torch.zeros(1, 3, 97, 97)).shape == (1, 21, 13, 13)
    assert (net.fc6.dilation, net.fc6.out_channels, net.fc7.out_channels) == ((12, 12), 1024, 1024)
    assert 0.008 < net.fc8.weight.std().item() < 0.012 and net.fc8.bias.abs().sum() == 0


def test_solver_has_caffes_lr_and_decay_multipliers():
    net = SECNet(build_backbone("small", output_stride=8), 3, channels=8)
    opt = sec.sec_optimizer(net, 1e-3, 5e-4)
    got = {(g["base_lr"], g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in opt.param_groups}
    assert got[(1e-3 * 20, 0.0)] == 3 and got[(1e-3 * 10, 5e-4)] == 3 * 8
    assert sum(got.values()) == sum(p.numel() for p in net.parameters())
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


@pytest.mark.parametrize("key,value", [("expansion_fg_ratio", "1.5"), ("seg_sec_q_fg", "0"),
                                       ("seg_sec_min_prob", "0.7"), ("seg_sec_dropout", "1"),
                                       ("seg_sec_crf_iterations", "0"), ("seg_sec_crf_scale", "0")])
def test_bad_settings_are_user_errors(key, value):
    with pytest.raises(UserError, match=f"--set {key}="):
        make_config(METHODS.get("sec"), {key: value})


def test_paper_recipe_is_the_appendix():
    cfg = make_config(METHODS.get("sec"), {"recipe": "paper"})
    assert (cfg.seg_backbone, cfg.seg_iterations, cfg.seg_batch_size, cfg.seg_lr, cfg.seg_lr_step, cfg.seg_size,
            cfg.seg_weight_decay, cfg.seg_sec_dropout, cfg.seg_sec_q_fg, cfg.seg_sec_q_bg) == (
        "vgg16", 8000, 15, 1e-3, 2000, 321, 5e-4, 0.5, 0.996, 0.999)


def test_end_to_end_on_squares(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    rec = harness.run_method("sec", overrides=FAST, out=tmp_path / "runs")
    assert all(0 <= rec.metrics[k] <= 100 for k in ("seed_miou", "pseudo_miou", "seg_miou"))
    cues = np.stack([np.array(Image.open(p)) for p in (tmp_path / "runs" / "cache").glob("expand-*/masks/*.png")])
    assert len(cues) >= len(ds.samples("train")) and set(np.unique(cues)) <= {*range(ds.num_classes), 255}


@pytest.mark.slow
def test_conta_runs_on_sec(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    over = {**{k: v for k, v in FAST.items() if not k.startswith("seg_sec_")}, "cls_epochs": "1", "conta_size": "8",
            "base": "sec", "rounds": "1"}
    rec = harness.run_method("conta", overrides=over, out=tmp_path / "runs")
    assert [r["round"] for r in rec.rounds] == [0, 1]


@pytest.mark.slow
def test_table_a3_runs_every_row_on_the_stand_in(tmp_path, monkeypatch):
    """`table A3 --run` (SEC+CONTA's ablations): the SEC baseline, the Round rows from one multi-round run,
    the block, Q1 and Q4 rows, each reproduced once."""
    import json

    from typer.testing import CliRunner

    from wsssbench.cli import app
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    fast = {**{k: v for k, v in FAST.items() if not k.startswith("seg_sec_")}, "cls_epochs": "1", "seg_iterations": "2"}
    sets = [a for k, v in fast.items() for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, ["table", "A3", "--run", "--dataset", "synthetic", *sets, "--runs",
                                   str(tmp_path / "runs"), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in json.loads(res.stdout)["rows"]}
    ours = {label: r["cells"]["CAM"].get("reproduced") for label, r in rows.items() if r["runnable"]}
    assert set(ours) >= {"Baseline∗ [10]", "Round = 1", "Round = 4", "Block-2", "Dense", "CPseudo-Mask"}
    assert all(v is not None and v["n"] == 1 for v in ours.values()), ours
    assert ours["Block-5"]["mean"] == ours["Round = 3"]["mean"]      # round 3: SEC+CONTA's default


@pytest.mark.slow
def test_conta_two_rounds_on_tiny(tmp_path):
    """`run conta --set base=sec rounds=2` on the embedded tiny benchmark: three rounds, SEC's cues each round."""
    rec = harness.run_method("conta", overrides={"base": "sec", "rounds": "2"}, out=tmp_path / "runs")
    assert [r["round"] for r in rec.rounds] == [0, 1, 2]
    assert all(0 < r[k] <= 100 for r in rec.rounds for k in ("seed_miou", "pseudo_miou", "seg_miou"))
