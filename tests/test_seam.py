"""SEAM: PCM, ER and ECR against plain loops on hand-made tensors; the classifier; a short run."""
from __future__ import annotations

import math

import numpy as np
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


@pytest.mark.parametrize("key, value", [("seam_scale", "1.5"), ("seam_ohem", "0"), ("seam_dropout", "1"),
                                        ("rw_psa_alpha", "0"), ("rw_psa_weight_decay", "-1")])
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


def test_psa_optimizer_is_seams_four_groups():
    """cls_optimizer=psa: backbone conv weights at lr, new layers (fc8, PCM) at 10 lr, BatchNorm in no group,
    momentum = weight decay (PolyOptimizer's positional slip)."""
    from wsssbench.methods_api import CLS_OPTIMIZERS
    model = small_model(3)
    opt = CLS_OPTIMIZERS.get("psa")(model, 0.01, 5e-4)
    groups = [{id(p) for p in g["params"]} for g in opt.param_groups]
    new = {id(model.classifier.weight), *(id(getattr(model.classifier_pcm, n).weight) for n in ("f8_3", "f8_4", "f9"))}
    convs = {id(m.weight) for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)}
    biases = {id(m.bias) for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None}
    assert groups == [convs, biases, new, set()]
    assert [g["base_lr"] for g in opt.param_groups] == [0.01, 0.02, 0.1, 0.2]
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0, 5e-4, 0.0]
    assert all(g["momentum"] == 5e-4 for g in opt.param_groups)


def test_psa_optimizer_step_is_the_sgd_formula():
    """One step: p − lr·(g + wd·p) (the momentum buffer starts as the first gradient), BatchNorm untouched."""
    from wsssbench.methods_api import CLS_OPTIMIZERS
    model = small_model(2)
    opt = CLS_OPTIMIZERS.get("psa")(model, 0.01, 5e-4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = sum(seam.seam_losses(model, torch.randn(2, 3, 40, 40), torch.tensor([[1.0, 0], [0, 1]]), 0.3, 0.2).values())
    loss.backward()
    opt.step()
    params = dict(model.named_parameters())
    w = "classifier_pcm.f9.weight"
    want = before[w] - 0.1 * (params[w].grad + 5e-4 * before[w])
    torch.testing.assert_close(params[w].detach(), want, atol=1e-7, rtol=0)
    bn = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(torch.equal(params[f"{n}.weight"], before[f"{n}.weight"]) for n in bn)


def test_seam_augment_jitters_colours():
    from wsssbench.stages.common import ImageLabels, seam_jitter
    image = (np.random.default_rng(0).random((32, 40, 3)) * 255).astype(np.uint8)
    torch.manual_seed(0)
    a = seam_jitter(image)
    torch.manual_seed(0)
    assert a.shape == image.shape and a.dtype == np.uint8 and np.array_equal(a, seam_jitter(image))
    assert not np.array_equal(a, image)
    data = ImageLabels.__new__(ImageLabels)
    data.size, data.rescale, data.augment = 40, (1.0, 1.0), "seam"
    torch.manual_seed(1)
    got = data.rescaled(image)
    torch.manual_seed(1)
    from wsssbench.stages.common import irn_resize_long, to_tensor
    want = to_tensor(seam_jitter(irn_resize_long(image, 40, 40)))
    assert torch.equal(got, want)


def test_paper_recipe_is_seams_code():
    cfg = make_config(METHODS.get("seam"), {"recipe": "paper"})
    assert (cfg.backbone, cfg.cls_size, cfg.cls_epochs, cfg.cls_batch_size, cfg.cls_lr) == ("resnet38", 448, 8, 8, 0.01)
    assert (cfg.cls_optimizer, cfg.cls_augment, cfg.seam_frozen, cfg.expansion) == ("psa", "seam", True, "psa")
    assert round(448 * cfg.cls_rescale[1]) == 768 and cfg.cam_scales == (0.5, 1.0, 1.5, 2.0)
    assert (cfg.rw_beta, cfg.rw_exp_times, cfg.rw_radius, cfg.rw_psa_low, cfg.rw_psa_high) == (8.0, 8, 5, 4.0, 24.0)


def test_psa_defaults_agree_with_the_stage():
    from wsssbench.stages.psa import DEFAULTS
    cfg = make_config(METHODS.get("seam"))
    assert {k: getattr(cfg, k) for k in DEFAULTS} == DEFAULTS
