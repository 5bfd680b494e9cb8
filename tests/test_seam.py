"""SEAM: PCM, ER and ECR against plain loops on hand-made tensors; the classifier; a short run."""
from __future__ import annotations

import math

import pytest
import torch

from wsssbench import harness
from wsssbench.errors import UserError
from wsssbench.methods import seam
from wsssbench.methods_api import METHODS, make_config
from wsssbench.models import build_backbone
from wsssbench.models.seam import SEAMClassifier, feature_taps, max_norm, pcm_input, pcm_propagate

from harness_standins import SquaresDataset

torch.set_num_threads(1)
FAST = {"cls_epochs": "2", "cls_size": "40", "cam_scales": "1.0", "cam_flip": "false", "seg_iterations": "6",
        "seg_size": "40", "seg_batch_size": "4"}


def close(got: torch.Tensor, want, atol: float) -> None:
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64).view_as(got), atol=atol, rtol=0)


def planes(t):
    """(C, h, w) tensor → C lists of h·w floats (row-major)."""
    return [p.flatten().tolist() for p in t]


def pcm_loop(cam, f, eps=1e-5):
    """resnet38_SEAM.py PCM for one image, by hand: cosine similarities, ReLU, column sums, weighted sums."""
    feats = list(zip(*planes(f)))                                   # per pixel, its D features
    unit = [[v / (math.sqrt(sum(x * x for x in p)) + eps) for v in p] for p in feats]
    n = len(unit)
    aff = [[max(0.0, sum(a * b for a, b in zip(unit[i], unit[j]))) for j in range(n)] for i in range(n)]
    col = [sum(aff[i][j] for i in range(n)) + eps for j in range(n)]
    return [[sum(c[i] * aff[i][j] for i in range(n)) / col[j] for j in range(n)] for c in planes(cam)]


def test_pcm_propagation_is_the_loop():
    g = torch.Generator().manual_seed(0)
    cam, f = torch.rand(1, 3, 3, 4, generator=g), torch.randn(1, 5, 3, 4, generator=g)
    got = pcm_propagate(cam, f)[0]
    close(got, pcm_loop(cam[0], f[0]), 1e-6)


def test_pcm_input_is_seams_cam_d_norm():
    cam = torch.tensor([[[[2.0, -1.0], [0.5, 1.0]], [[1.0, 3.0], [0.0, 1.0]]]])
    got = pcm_input(cam)[0]
    fg = [[max(v - 1e-5, 0) / (max(max(p), 0) + 1e-5) for v in p] for p in planes(cam[0].clamp(min=0))]
    top = [max(a, b) for a, b in zip(*fg)]
    want = [[1 - t for t in top]] + [[v if v == t else 0.0 for v, t in zip(p, top)] for p in fg]
    close(got, want, 1e-7)
    assert not got.requires_grad


def test_max_norm_is_the_loop():
    p = torch.tensor([[[[0.2, -0.3], [0.8, 0.5]]]])
    vals = [max(v, 0.0) for v in p.flatten().tolist()]
    lo, hi = min(vals), max(vals)
    want = [max(v - lo - 1e-5, 0) / (hi - lo + 1e-5) for v in vals]
    close(max_norm(p), want, 1e-7)


def test_er_loss_is_the_mean_absolute_difference():
    a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    loop = sum(abs(x - y) for x, y in zip(a.flatten().tolist(), b.flatten().tolist())) / a.numel()
    assert seam.er_loss(a, b).item() == pytest.approx(loop, abs=1e-6)


def test_ecr_loss_keeps_the_top_fraction_of_each_image():
    g = torch.Generator().manual_seed(1)
    rv, other = torch.rand(2, 3, 4, 5, generator=g), torch.rand(2, 2, 4, 5, generator=g)
    top = 0.2
    per_image = []
    for r, o in zip(rv, other):
        fg = planes(o)
        mx = [max(v) for v in zip(*fg)]
        target = [[1 - m for m in mx]] + [[v if v == m else 0.0 for v, m in zip(p, mx)] for p in fg]
        losses = sorted((abs(t - x) for tp, rp in zip(target, planes(r)) for t, x in zip(tp, rp)), reverse=True)
        k = int(3 * 4 * 5 * top)
        per_image.append(sum(losses[:k]) / k)
    assert seam.ecr_loss(rv, other, top).item() == pytest.approx(sum(per_image) / 2, abs=1e-6)


def test_min_pooling_loss_is_the_loop():
    x = torch.tensor([[[[0.1, -0.2], [0.4, 0.3]], [[0.2, 0.1], [-0.5, 0.0]]]])
    mx = sorted(max(a, b) for a, b in zip(*planes(x[0])))
    assert seam.min_pooling_loss(x).item() == pytest.approx(max(mx[0], 0) / 1, abs=1e-7)


def small_model(k=2):
    torch.manual_seed(0)
    return SEAMClassifier(build_backbone("small", output_stride=8), k)


def test_classifier_shapes_and_gradients_reach_the_pcm_projections():
    model = small_model(3)
    x = torch.randn(2, 3, 40, 40)
    cam, rv = model.seam_outputs(x)
    assert cam.shape == (2, 3, 40, 40) and rv.shape == (2, 4, 40, 40)
    assert model(x).shape == (2, 3) and model.cams(x).shape == (2, 3, 40, 40)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    terms = seam.seam_losses(model, x, labels, 0.3, 0.2)
    assert set(terms) == {"cls", "rvmin", "er", "ecr"}
    sum(terms.values()).backward()
    for name in ("f8_3", "f8_4", "f9"):
        grad = getattr(model.classifier_pcm, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_pcm_gradient_stops_at_the_lower_features():
    """The PCM reads detached CAMs and detached backbone features: its output trains only its projections."""
    model = small_model()
    model.eval()
    _, rv = model.seam_outputs(torch.randn(1, 3, 40, 40))
    rv.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.classifier.weight.grad is None and model.classifier_pcm.f9.weight.grad is not None


def test_resnet38_taps_are_seams_conv4_conv5():
    backbone = build_backbone("resnet38", output_stride=8)
    taps, channels = feature_taps(backbone)
    assert taps == [backbone.b5.bn_branch2a, backbone.b6.bn_branch2a] and channels == (512, 1024)


def test_frozen_is_seams_train_mode():
    model = SEAMClassifier(build_backbone("small", output_stride=8), 2, frozen=True).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and not any(p.requires_grad for m in bns for p in m.parameters())
    assert not any(p.requires_grad for b in model.backbone.stages[:2] for p in b.parameters())
    assert all(p.requires_grad for p in model.backbone.stages[2][0][0].parameters())
    assert model.classifier_pcm.training


def test_refine_is_seams_min_max_normalisation():
    cams = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    got = seam.refine_cams(None, None, None, cams)
    norm = got / got.max()                         # the CAM stage's max-normalisation, without its 1e-5
    want = (cams - 1 - 1e-5).clamp(min=0) / (5 - 1 + 1e-5)
    close(norm, want.tolist(), 1e-5)


@pytest.mark.parametrize("key, value", [("seam_scale", "1.5"), ("seam_ohem", "0"), ("seam_dropout", "1")])
def test_bad_settings_are_user_errors(key, value):
    with pytest.raises(UserError, match=key):
        make_config(METHODS.get("seam"), {key: value})


def test_seam_defaults_and_conta_base():
    cfg = make_config(METHODS.get("seam"))
    assert (cfg.seed_alpha, cfg.seed_protocol, cfg.seam_scale, cfg.seam_ohem) == (16.0, "seam", 0.3, 0.2)
    assert make_config(METHODS.get("conta"), {"base": "seam"}).expansion == cfg.expansion


def test_end_to_end_on_squares(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    rec = harness.run_method("seam", overrides=FAST, out=tmp_path / "runs")
    assert {"seed_miou", "pseudo_miou", "seg_miou"} <= set(rec.metrics)
    assert all(0 <= rec.metrics[k] <= 100 for k in ("seed_miou", "pseudo_miou", "seg_miou"))
    assert rec.protocols["seed_miou"] == "seam"


def test_conta_runs_on_seam(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    over = {**FAST, "cls_epochs": "1", "conta_size": "8", "base": "seam", "rounds": "1"}
    rec = harness.run_method("conta", overrides=over, out=tmp_path / "runs")
    assert [r["round"] for r in rec.rounds] == [0, 1]
