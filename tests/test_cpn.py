"""CPN: CP pairs, PRCM, L_tcp and L_cpcr(+OHEM) against plain loops on hand-made tensors; the classifier; a short run."""
from __future__ import annotations

import math
import random
import types

import numpy as np
import pytest
import torch

from wsssbench import harness
from wsssbench.errors import UserError
from wsssbench.methods import cpn
from wsssbench.methods_api import METHODS, make_config
from wsssbench.models import build_backbone
from wsssbench.models.cpn import CPNClassifier, grid_pair, prcm, region_keys, slic_labels, superpixel_pair
from wsssbench.models.seam import max_norm

from harness_standins import SquaresDataset

torch.set_num_threads(1)
FAST = {"cls_epochs": "1", "cls_size": "40", "cam_scales": "1.0", "cam_flip": "false", "seg_iterations": "4",
        "seg_size": "40", "seg_batch_size": "4", "cpn_segments": "20"}


def planes(t):
    """(C, h, w) tensor → C lists of h·w floats (row-major)."""
    return [p.flatten().tolist() for p in t]


def softmax(values):
    top = max(values)
    e = [math.exp(v - top) for v in values]
    return [v / sum(e) for v in e]


def conv1x1(weight, vector):
    """A bias-free 1×1 conv of one D-vector: (out, in, 1, 1) weight."""
    w = weight[:, :, 0, 0].tolist()
    return [sum(a * b for a, b in zip(row, vector)) for row in w]


def prcm_loop(f9, f10, norm, f):
    """resnet38_CPN.py PRCM for one image, by hand: class-softmax regions, f10 keys laid out (C, K) and read
    back as the code's ``view(K, C)``, relu(f9) pixels, scaled products, a softmax over the pixels."""
    k, feats = len(norm), list(zip(*planes(f)))                       # feats: per pixel its C1 features
    regions = []
    for plane in planes(norm):
        p = softmax(plane)
        regions.append([sum(p[i] * feats[i][d] for i in range(len(p))) for d in range(len(feats[0]))])
    keys = [[max(0.0, v) for v in conv1x1(f10, r)] for r in regions]    # keys[class][channel]
    flat = [keys[c][ch] for ch in range(len(keys[0])) for c in range(k)]  # the (C, K, 1) memory order
    keys = [flat[c * len(keys[0]):(c + 1) * len(keys[0])] for c in range(k)]
    pixels = [[max(0.0, v) for v in conv1x1(f9, p)] for p in feats]
    return [softmax([sum(a * b for a, b in zip(key, px)) / math.sqrt(k) for px in pixels]) for key in keys]


def test_prcm_is_the_loop():
    g = torch.Generator().manual_seed(0)
    f9, f10 = torch.nn.Conv2d(5, 4, 1, bias=False), torch.nn.Conv2d(5, 4, 1, bias=False)
    norm, f = torch.rand(1, 3, 3, 4, generator=g), torch.randn(1, 5, 3, 4, generator=g)
    got = prcm(f9, f10, norm, f)[0]
    want = prcm_loop(f9.weight.detach(), f10.weight.detach(), norm[0], f[0])
    torch.testing.assert_close(got.flatten(1).double(), torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.allclose(got.flatten(1).sum(1), torch.ones(3))       # a softmax over the pixels of each class


def test_region_keys_are_reshaped_not_transposed():
    """The code's ``view(n, 21, -1)`` of a (n, C, 21, 1) tensor: key row 0 holds channel 0's first K values."""
    f10 = torch.nn.Conv2d(2, 4, 1, bias=False)
    with torch.no_grad():
        f10.weight.copy_(torch.eye(4, 2).view(4, 2, 1, 1))
    norm, f = torch.zeros(1, 2, 1, 2), torch.tensor([[[[1.0, 3.0]], [[2.0, 4.0]]]])   # regions = pixel means
    keys = region_keys(f10, norm, f)[0]
    # regions (per class): [2, 3] and [2, 3]; f10 → channels [2, 3, 0, 0] per class; (C=4, K=2) read as (2, 4)
    assert keys.tolist() == [[2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]]


def small_model(k=2, **kw):
    torch.manual_seed(0)
    return CPNClassifier(build_backbone("small", output_stride=8), k, **kw)


def test_refined_cam_is_pcm_plus_prcm_times_y():
    from wsssbench.models.seam import captured, pcm_input
    model = small_model(3).eval()
    x = torch.randn(1, 3, 40, 40)
    _, ref = model.seam_outputs(x)
    with captured(model.taps) as low:
        cam = model.classifier(model.backbone(x))
    norm, f = pcm_input(cam), model.classifier_pcm.features(x, *[torch.relu(t) for t in low])
    want = model.classifier_pcm(norm, f) + prcm(model.classifier_pcm.f9, model.classifier_prcm, norm, f) * norm
    want = torch.nn.functional.interpolate(want, (40, 40), mode="bilinear", align_corners=True)
    torch.testing.assert_close(ref, want)
    assert small_model(3, pcm=False, prcm=False).eval().seam_outputs(x)[1] is None


def test_grid_pair_is_complementary_and_counts_patches():
    random.seed(3)
    shown, lam = grid_pair(10, 7, (4,), 0.5)
    random.seed(3)
    random.randint(0, 0)
    coins = [random.random() <= 0.5 for _ in range(3 * 2)]      # 3 x 2 patches, rows first
    want = torch.ones(10, 7)
    for i, hide in enumerate(coins):
        if hide:
            y, x = 4 * (i // 2), 4 * (i % 2)
            want[y:y + 4, x:x + 4] = 0
    assert torch.equal(shown, want) and lam == pytest.approx(1 - sum(coins) / 6)


def test_superpixel_pair_code_and_paper_sampling():
    labels = np.array([[1, 1, 2, 2], [3, 3, 2, 4], [3, 3, 4, 4]])
    np.random.seed(5)
    shown, lam = superpixel_pair(labels, 0.5, "code")
    np.random.seed(5)
    drawn = set(np.random.randint(0, 5, 2).tolist())             # ⌊(4 + 1)·0.5⌋ labels from 0..4
    want = [[0.0 if v in drawn else 1.0 for v in row] for row in labels.tolist()]
    assert shown.tolist() == want and lam == pytest.approx(np.mean(want))
    np.random.seed(1)
    shown, lam = superpixel_pair(labels, 0.5, "paper")
    np.random.seed(1)
    hidden = {v for v, u in zip([1, 2, 3, 4], np.random.random(4)) if u < 0.5}
    assert shown.tolist() == [[0.0 if v in hidden else 1.0 for v in row] for row in labels.tolist()]
    assert lam == pytest.approx(1 - len(hidden) / 4)


def test_slic_labels_start_at_one():
    img = np.zeros((3, 16, 16), np.float32)
    img[:, :, 8:] = 2.0
    lab = slic_labels(img, 4, 10.0)
    assert lab.shape == (16, 16) and lab.min() == 1 and not np.intersect1d(lab[:, :8], lab[:, 8:]).size


def l1(a, b):
    return [abs(x - y) for x, y in zip(a, b)]


def test_losses_are_the_loops():
    """L_tcp and L_cpcr(+OHEM) on one image, by hand from the branches' maps (train_cpn.py)."""
    model = small_model(2).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 24, 24, generator=g)
    shown = (torch.rand(1, 1, 24, 24, generator=g) > 0.5).float()
    lam, labels = torch.tensor([0.4]), torch.tensor([[1.0, 0.0]])
    terms = cpn.cpn_losses(model, x, labels, shown, lam, top=0.2)
    outs = [model.seam_outputs(v) for v in (x, x * shown, x * (1 - shown))]
    w = [1.0, 0.4, 0.6]
    fg = labels[0, :, None, None]
    cams = [[[w[b] * v for v in p] for p in planes(max_norm(c)[0] * fg)] for b, (c, _) in enumerate(outs)]
    lab = [1.0, 1.0, 0.0]
    refs = [[[w[b] * v * lab[i] for v in p] for i, p in enumerate(planes(max_norm(r)[0]))]
            for b, (_, r) in enumerate(outs)]
    n = 24 * 24
    tcp = sum(sum(l1([a + b for a, b in zip(cams[1][c], cams[2][c])], cams[0][c])) for c in range(2)) / (2 * n)
    tcp += sum(sum(abs(a - b - d) for a, b, d in zip(refs[0][c], refs[1][c], refs[2][c])) for c in (1, 2)) / (2 * n)
    assert terms["tcp"].item() == pytest.approx(tcp, abs=1e-6)

    def full(fg):                                   # background 1 - max as channel 0
        return [[1 - max(v) for v in zip(*fg)]] + fg

    def cpcr(diff, ref):
        best = [max(v) for v in zip(*diff)]
        one = [[v if v == m else 0.0 for v, m in zip(p, best)] for p in diff]
        loss = sorted((abs(a - b) for p, q in zip(one, ref) for a, b in zip(p, q)), reverse=True)
        k = int(3 * n * 0.2)
        return sum(loss[:k]) / k

    c, r = [full(m) for m in cams], [full(m[1:]) for m in refs]
    diff = [[[a - b for a, b in zip(p, q)] for p, q in zip(c[0], c[j])] for j in (1, 2)]
    want = cpcr(diff[0], r[2]) + cpcr(diff[1], r[1])
    assert terms["cpcr"].item() == pytest.approx(want, abs=1e-5)
    plain = cpn.cpn_losses(model, x, labels, shown, lam, top=None)["cpcr"]
    assert plain.item() < terms["cpcr"].item()                      # OHEM keeps the largest losses


def test_table2_ablations_and_gradients():
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    shown, lam = (torch.rand(2, 1, 32, 32) > 0.5).float(), torch.tensor([0.5, 0.3])
    model = small_model()
    terms = cpn.cpn_losses(model, x, labels, shown, lam)
    assert set(terms) == {"cls", "tcp", "cpcr"}
    sum(terms.values()).backward()
    for module in (model.classifier, model.classifier_prcm, model.classifier_pcm.f9, model.classifier_pcm.f8_3):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    base = cpn.cpn_losses(small_model(pcm=False, prcm=False), x, labels, None, None, tcp=False, cpcr=False)
    assert set(base) == {"cls"}
    want = torch.nn.functional.multilabel_soft_margin_loss(small_model(pcm=False, prcm=False)(x), labels)
    assert base["cls"].item() == pytest.approx(want.item(), abs=1e-6)   # L_cls(s_o) alone (Table 2, row 1)
    ctx = types.SimpleNamespace(cfg=make_config(METHODS.get("cpn"), {"cpn_tcp": "false", "cpn_cpcr": "false"}))
    assert cpn.extra_inputs(ctx, None) == {}                              # no pair: no superpixels either
    loss = cpn.train_step(ctx, small_model(), {"image": x, "labels": labels})
    assert torch.isfinite(loss)


@pytest.mark.parametrize("key, value", [("cpn_patch", "square"), ("cpn_hide", "1"), ("cpn_segments", "1"),
                                        ("cpn_sampling", "x"), ("cpn_grid", "0,4"), ("cpn_pcm", "false")])
def test_bad_settings_are_user_errors(key, value):
    over = {key: value, **({"cpn_prcm": "false"} if key == "cpn_pcm" else {})}
    with pytest.raises(UserError, match="cpn_"):
        make_config(METHODS.get("cpn"), over)


def test_grid_sizes_scale_with_the_crop():
    cfg = make_config(METHODS.get("cpn"))
    assert cpn.grid_sizes(cfg) == (8, 16)                              # K = {56, 112} at 448 -> 64 px
    assert cpn.grid_sizes(make_config(METHODS.get("cpn"), {"cpn_grid": "4,7"})) == (1, 1)
    assert cpn.grid_sizes(make_config(METHODS.get("cpn"), {"cls_size": "448", "cpn_grid": "4,7"})) == (4, 7)


def test_seam_prcm_is_seams_losses_on_cpns_network():
    m = METHODS.get("seam_prcm")
    assert m.train_step is METHODS.get("seam").train_step and m.config is METHODS.get("seam").config


def test_defaults_and_paper_recipe():
    cfg = make_config(METHODS.get("cpn"))
    got = (cfg.cpn_patch, cfg.cpn_segments, cfg.cpn_hide, cfg.seam_ohem, cfg.seed_alpha)
    assert got == ("superpixel", 300, 0.5, 0.2, 16.0)
    paper = make_config(METHODS.get("cpn"), {"recipe": "paper"})
    assert (paper.cpn_segments, paper.cpn_sampling, paper.expansion, paper.rw_beta) == (200, "paper", "rw", 10.0)
    # SEAM's code around it (CPN's training is SEAM's with the CP branches), at CPN's batch 4
    assert (paper.backbone, paper.cls_size, paper.cls_batch_size, paper.cls_optimizer, paper.cls_augment,
            paper.seam_frozen, paper.rw_epochs) == ("resnet38", 448, 4, "psa", "seam", True, 3)


@pytest.mark.parametrize("patch", ["superpixel", pytest.param("grid", marks=pytest.mark.slow)])
def test_end_to_end_on_squares(tmp_path, monkeypatch, patch):
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    rec = harness.run_method("cpn", overrides={**FAST, "cpn_patch": patch}, out=tmp_path / "runs")
    assert all(0 <= rec.metrics[k] <= 100 for k in ("seed_miou", "pseudo_miou", "seg_miou"))
    assert rec.protocols["seed_miou"] == "seam"


def test_figure_reads_records_and_marks_the_text_values(tmp_path):
    import json

    from typer.testing import CliRunner

    from wsssbench.cli import app
    cfg = make_config(METHODS.get("cpn"), {"cpn_segments": "200"})
    folder = tmp_path / "records" / "cpn" / "synthetic"
    folder.mkdir(parents=True)
    for seed, value in ((0, 30.0), (1, 34.0)):
        rec = {"method": "cpn", "dataset": "synthetic", "seed": seed, "metrics": {"seed_miou": value},
               "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()}}
        (folder / f"r{seed}.json").write_text(json.dumps(rec))
    res = CliRunner().invoke(app, ["figure", "cpn:6", "--points", "200;300", "--seeds", "0,1", "--out", str(tmp_path),
                                   "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert [p["mean"] for p in got["points"]] == [32.0, None] and got["text"]["S_N = 200"] == 57.43
    other = CliRunner().invoke(app, ["figure", "cpn:6", "--points", "200", "--set", "cls_epochs=1", "--out",
                                     str(tmp_path), "--json"])
    assert json.loads(other.output)["points"][0]["mean"] is None          # those records ran 5 epochs
    assert (tmp_path / "figures" / "cpn-6.png").stat().st_size > 0
    bad = CliRunner().invoke(app, ["figure", "cpn:7", "--points", "0,4", "--out", str(tmp_path)])
    assert bad.exit_code == 2


def test_superpixels_are_cached_by_content():
    img = (np.arange(24 * 24 * 3) % 251).astype(np.uint8).reshape(24, 24, 3)
    first = cpn.superpixels(img, 10, 10.0)
    assert first.dtype == np.int16 and cpn.superpixels(img.copy(), 10, 10.0) is first
    assert cpn.superpixels(img, 12, 10.0) is not first
