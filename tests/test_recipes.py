"""Recipes (``run --recipe``) and the IRN behaviours ``--recipe paper`` switches on, against hand-worked
cases and plain re-statements (the side-by-side check against IRN's code is benchmarks/irn_side_by_side.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from wsssbench.cli.app import app
from wsssbench.errors import UserError
from wsssbench.methods_api import METHODS, CamConfig, make_config, stage_fields
from wsssbench.models import CAMClassifier, build_backbone
from wsssbench.stages.common import irn_resize_long, pil_rescale, random_crop
from wsssbench.stages.infer_cams import multiscale_cams
from wsssbench.stages.train_classifier import freeze, irn_optimizer, param_groups, sgd_optimizer


def test_tiny_is_the_default_and_paper_sets_irn():
    assert make_config(METHODS.get("cam")) == CamConfig()
    cfg = make_config(METHODS.get("irnet"), {"recipe": "paper"})
    assert (cfg.recipe, cfg.backbone, cfg.cls_size, cfg.cls_optimizer, cfg.cls_frozen_blocks, cfg.cls_fixed_bn,
            cfg.cam_scales, cfg.cam_arithmetic, cfg.expansion) == \
        ("paper", "resnet50_irn", 512, "irn", 3, True, (1.0, 0.5, 1.5, 2.0), "irn", "rw")


def test_set_wins_over_the_recipe():
    cfg = make_config(METHODS.get("cam"), {"recipe": "paper", "cls_optimizer": "sgd", "cam_scales": "1"})
    assert (cfg.cls_optimizer, cfg.cam_scales, cfg.cls_fixed_bn) == ("sgd", (1.0,), True)


def test_unknown_recipe_and_choice_are_user_errors():
    with pytest.raises(UserError, match="no recipe 'nope'; recipes: tiny, paper"):
        make_config(METHODS.get("cam"), {"recipe": "nope"})
    with pytest.raises(UserError, match="cls_optimizer=nope: use one of .*irn.*sgd"):
        make_config(METHODS.get("cam"), {"cls_optimizer": "nope"})
    result = CliRunner().invoke(app, ["run", "cam", "--recipe", "nope"])
    assert result.exit_code == 2 and "no recipe 'nope'" in result.output


def test_recipe_label_keys_no_artifact_and_new_fields_key_their_stage():
    cfg = CamConfig()
    assert "recipe" not in stage_fields(cfg, "segmenter")
    for name in ("cls_optimizer", "cls_augment", "cls_frozen_blocks", "cls_fixed_bn"):
        assert name in stage_fields(cfg, "classifier")
    assert "cam_arithmetic" in stage_fields(cfg, "cams") and "cam_arithmetic" not in stage_fields(cfg, "classifier")


def test_irn_optimiser_puts_weight_decay_in_the_momentum_slot():
    # IRN misc/torchutils.py PolyOptimizer: SGD(params, lr, weight_decay) -> momentum = 1e-4; the groups of
    # step/train_cam.py keep weight_decay 1e-4 each, the head at 10x lr
    model = CAMClassifier(build_backbone("small", output_stride=8), 3)
    opt = irn_optimizer(model, 0.1, 1e-4)
    assert [(g["momentum"], g["weight_decay"], g["lr"], g["base_lr"]) for g in opt.param_groups] == [
        (1e-4, 1e-4, 0.1, 0.1), (1e-4, 1e-4, 1.0, 1.0)]
    assert [g["momentum"] for g in sgd_optimizer(model, 0.1, 1e-4).param_groups] == [0.9, 0.9]


class _One(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor([1.0]))


def test_irn_optimiser_two_steps_by_hand():
    # momentum buffer b1 = g1 + wd p0; b2 = mu b1 + (g2 + wd p1), mu = 1e-4: the plain SGD update re-stated
    model = _One()
    p = model.p
    opt = irn_optimizer(model, 0.1, 1e-4)
    expected, buf = 1.0, 0.0
    for g in (0.5, -0.25):
        p.grad = torch.tensor([g])
        opt.step()
        buf = 1e-4 * buf + g + 1e-4 * expected
        expected -= 0.1 * buf
    assert p.item() == pytest.approx(expected, abs=1e-7)


def test_segmenter_step_schedule_and_optimiser_choice():
    from wsssbench.stages.train_segmenter import seg_lr
    assert [seg_lr(1e-3, it, 8000, 2000) for it in (0, 1999, 2000, 7999)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-6])
    assert seg_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)
    with pytest.raises(UserError, match="seg_optimizer=adam: use one of"):
        make_config(METHODS.get("cam"), {"seg_optimizer": "adam"})


def _frozen_classifier() -> CAMClassifier:
    torch.manual_seed(0)
    model = CAMClassifier(build_backbone("small", output_stride=8), 3)
    freeze(model, 3, True)
    return model.train()


def test_frozen_blocks_take_no_gradient_and_fixed_bn_keeps_its_statistics():
    model = _frozen_classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = irn_optimizer(model, 0.1, 1e-4)
    torch.nn.functional.multilabel_soft_margin_loss(model(torch.randn(2, 3, 32, 32)),
                                                    torch.tensor([[1.0, 0, 0], [0, 1, 1]])).backward()
    opt.step()
    stages = model.backbone.stages
    assert all(p.grad is None for block in stages[:3] for p in block.parameters())
    assert all(p.grad is not None for block in stages[3:] for p in block.parameters())
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if "running_" in k or k.startswith("backbone.block")
               and int(k.split(".")[1][-1]) <= 3)
    assert not torch.equal(after["backbone.block4.0.1.weight"], before["backbone.block4.0.1.weight"])


def test_fixed_bn_normalises_with_running_statistics_in_training():
    model = _frozen_classifier()
    bn = model.backbone.block1[1]
    bn.running_mean.fill_(2.0)
    bn.running_var.fill_(4.0)
    x = torch.randn(2, bn.num_features, 4, 4)
    assert torch.allclose(bn(x), (x - 2.0) / torch.sqrt(torch.tensor(4.0 + bn.eps)), atol=1e-6)


def test_irn_resize_long_and_pil_rescale():
    # IRN misc/imutils.py: random_resize_long scales the long side to randint(lo, hi); pil_rescale rounds
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    torch.manual_seed(0)
    for _ in range(5):
        out = irn_resize_long(image, 20, 60)
        assert 20 <= out.shape[1] <= 60 and out.shape[0] == int(np.round(30 * out.shape[1] / 40))
    half = np.asarray(Image.fromarray(image).resize((20, 15), Image.BICUBIC))
    assert np.array_equal(pil_rescale(image, 0.5), half) and pil_rescale(image, 1.0) is image


def test_crop_pads_with_zero_to_the_crop_size():
    # IRN imutils.random_crop(img, 512, 0): a smaller image lies whole in a zero container
    x = torch.ones(3, 320, 427)
    crop = random_crop(x, 512)
    assert crop.shape == (3, 512, 512) and crop.sum() == 3 * 320 * 427
    big = random_crop(torch.ones(3, 640, 480), 512)
    assert big.shape == (3, 512, 512) and big.sum() == 3 * 512 * 480


class _Identity(torch.nn.Module):
    """A 'classifier' whose one CAM is the first input channel, pooled by 16 (IRN's output stride)."""

    def cams(self, x):
        return torch.nn.functional.avg_pool2d(x[:, :1], 16, ceil_mode=True)

    def forward(self, x):
        return self.cams(x).mean((2, 3))


def test_irn_arithmetic_upsamples_to_the_strided_up_size_then_crops():
    # make_cam.py: each map to strided_up_size (ceil(H/16)*16) then [:H, :W]; a 40x50 image -> 48x64
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    cams, _ = multiscale_cams(_Identity(), image, (1.0,), False, arithmetic="irn")
    from wsssbench.stages.common import to_tensor
    pooled = torch.relu(_Identity().cams(to_tensor(image)[None]))
    expected = torch.nn.functional.interpolate(pooled, size=(48, 64), mode="bilinear", align_corners=False)
    assert cams.shape == (1, 40, 50) and torch.allclose(cams, expected[0, :, :40, :50])
    direct, _ = multiscale_cams(_Identity(), image, (1.0,), False)
    assert not torch.allclose(direct, cams)


def test_stride4_cams_sum_each_scale_resized_to_the_stride4_grid():
    # make_cam.py strided_cam: each scale's (flip-summed, ReLU) map resized to get_strided_size(size, 4), summed
    from wsssbench.stages.common import to_tensor
    image = np.random.default_rng(3).integers(0, 256, (41, 50, 3), dtype=np.uint8)
    _, _, strided = multiscale_cams(_Identity(), image, (1.0, 0.5), True, arithmetic="irn", stride4=True)
    expected = torch.zeros(1, 11, 13)                       # (41 - 1) // 4 + 1, (50 - 1) // 4 + 1
    for scale in (1.0, 0.5):
        x = to_tensor(image if scale == 1 else pil_rescale(image, scale))[None]
        pair = torch.relu(_Identity().cams(torch.cat([x, x.flip(-1)])))
        one = pair[:1] + pair[1:].flip(-1)
        expected += torch.nn.functional.interpolate(one, size=(11, 13), mode="bilinear", align_corners=False)[0]
    assert strided.shape == (1, 11, 13) and torch.allclose(strided, expected, atol=1e-6)


def test_the_walk_starts_from_the_stride4_cams_where_they_fit(tmp_path):
    import types

    from wsssbench.cams import load_cams, save_cams
    from wsssbench.stages import expand
    rng = np.random.default_rng(4)
    full, small = rng.random((1, 40, 48), dtype=np.float32), rng.random((1, 10, 12), dtype=np.float32)
    loaded = load_cams(save_cams(tmp_path / "a.npz", [2], full, stride4=small))
    assert np.array_equal(loaded.stride4, small) and load_cams(save_cams(tmp_path / "b.npz", [2], full)).stride4 is None
    seen = []

    def walk_up(s, edge, size, cfg, stride):
        seen.append(s.clone())
        return torch.zeros((1, *size))
    cfg = types.SimpleNamespace(rw_infer="toolkit", rw_bg_threshold=0.25)
    net = types.SimpleNamespace(edge=lambda x: torch.zeros(1, 10, 12))
    ctx = types.SimpleNamespace(cfg=cfg, device="cpu")
    image = np.zeros((40, 48, 3), np.uint8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(expand, "walk_up", walk_up)
        expand.random_walk_mask(ctx, net, image, full, np.array([2]), small)
        expand.random_walk_mask(ctx, net, image, full, np.array([2]), None)
        expand.random_walk_mask(ctx, net, image, full, np.array([2]), small[:, :9])   # another grid: resized
    assert np.array_equal(seen[0].numpy(), small) and not torch.allclose(seen[1], seen[0])
    assert torch.equal(seen[1], seen[2])


def test_irn_arithmetic_rescales_with_pil_bicubic_before_normalising():
    image = np.random.default_rng(2).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    seen = []

    class Spy(_Identity):
        def cams(self, x):
            seen.append(x)
            return super().cams(x)

    multiscale_cams(Spy(), image, (0.5,), True, arithmetic="irn")
    from wsssbench.stages.common import to_tensor
    half = to_tensor(pil_rescale(image, 0.5))
    assert torch.equal(seen[0], torch.stack([half, half.flip(-1)]))
