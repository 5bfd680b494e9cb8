"""C2AM's pure parts on hand-made tensors: Global CAM, front-door score, CAM+Constant, figures."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsssbench.methods import c2am

torch.set_num_threads(1)


def _loop_global_cam(cams, labels, size):
    """Independent computation: per image, per labelled class, resize, max-normalise, average."""
    b, c = labels.shape
    total = np.zeros((c, *size))
    count = np.zeros(c)
    for i in range(b):
        for z in range(c):
            if labels[i, z]:
                m = F.interpolate(cams[i : i + 1, z : z + 1].clamp(min=0), size, mode="bilinear",
                                  align_corners=False)[0, 0].numpy().astype(np.float64)
                total[z] += m / (m.max() + 1e-5)
                count[z] += 1
    return np.stack([total[z] / count[z] if count[z] else total[z] for z in range(c)])


def test_global_cam_hand_computed_mean():
    # class 0 in images 0 and 1, class 1 in image 1 only, class 2 in none.
    cams = torch.zeros(2, 3, 2, 2)
    cams[0, 0] = torch.tensor([[4.0, 0.0], [0.0, 2.0]])     # normalised: [[1, 0], [0, .5]]
    cams[1, 0] = torch.tensor([[0.0, 1.0], [-3.0, 0.0]])    # ReLU then normalised: [[0, 1], [0, 0]]
    cams[1, 1] = torch.tensor([[2.0, 2.0], [2.0, 2.0]])     # all ones
    cams[0, 1] = torch.tensor([[9.0, 9.0], [9.0, 9.0]])     # not labelled: ignored
    labels = torch.tensor([[1, 0, 0], [1, 1, 0]])
    g = c2am.GlobalCAM(3, size=(2, 2))
    g.update(cams, labels)
    d = 1 + 1e-5 / 1  # the +1e-5 in the normaliser, relative to a max of 1 after scaling
    want0 = np.array([[4 / 4.00001 + 0, 1 / 1.00001], [0, 2 / 4.00001]]) / 2
    np.testing.assert_allclose(g.compute()[0].numpy(), want0, rtol=1e-6)
    np.testing.assert_allclose(g.compute()[1].numpy(), np.full((2, 2), 2 / 2.00001), rtol=1e-6)
    assert g.compute()[2].abs().sum() == 0
    assert g.count.tolist() == [2, 1, 0]
    assert d > 1


def test_global_cam_matches_loop_with_resize_and_streaming():
    gen = torch.Generator().manual_seed(0)
    cams = torch.randn(7, 4, 9, 13, generator=gen) * 3
    labels = torch.rand(7, 4, generator=gen) > 0.5
    labels[0] = True
    want = _loop_global_cam(cams, labels, (5, 6))
    whole = c2am.GlobalCAM(4, size=(5, 6))
    whole.update(cams, labels)
    np.testing.assert_allclose(whole.compute().numpy(), want, rtol=1e-5, atol=1e-6)
    # streaming in batches, and two shards merged, give the same state
    a, b = c2am.GlobalCAM(4, size=(5, 6)), c2am.GlobalCAM(4, size=(5, 6))
    a.update(cams[:3], labels[:3])
    b.update(cams[3:5], labels[3:5])
    b.update(cams[5:], labels[5:])
    merged = a.merge(b)
    assert torch.equal(merged.count, whole.count)
    np.testing.assert_allclose(merged.compute().numpy(), want, rtol=1e-5, atol=1e-6)


def test_update_keys_equals_dense_update():
    gen = torch.Generator().manual_seed(1)
    maps = torch.rand(2, 6, 6, generator=gen)
    dense = torch.zeros(1, 5, 6, 6)
    dense[0, 1], dense[0, 4] = maps[0], maps[1]
    labels = torch.tensor([[0, 1, 0, 0, 1]])
    a, b = c2am.GlobalCAM(5, size=(4, 4)), c2am.GlobalCAM(5, size=(4, 4))
    a.update(dense, labels)
    b.update_keys(maps, [1, 4])
    assert torch.equal(a.count, b.count)
    torch.testing.assert_close(a.compute(), b.compute())


def test_global_cam_scale_invariant_per_map():
    # max-normalisation: scaling one image's CAM by a positive factor changes nothing
    gen = torch.Generator().manual_seed(2)
    cams = torch.rand(3, 2, 8, 8, generator=gen)
    labels = torch.ones(3, 2, dtype=torch.bool)
    a, b = c2am.GlobalCAM(2, size=(8, 8)), c2am.GlobalCAM(2, size=(8, 8))
    a.update(cams, labels)
    b.update(cams * torch.tensor([10.0, 0.5, 3.0])[:, None, None, None], labels)
    torch.testing.assert_close(a.compute(), b.compute(), rtol=1e-4, atol=1e-5)


def test_front_door_logits_equal_paper_line_and_loop():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    gcam = torch.rand(3, 7, 5, generator=gen, dtype=torch.float64)
    paper = torch.mean(logits.unsqueeze(2).unsqueeze(2) * gcam, dim=(2, 3))  # App. B's line
    loop = torch.tensor([[sum(logits[b, z].item() * gcam[z, i, j].item()
                              for i in range(7) for j in range(5)) / 35
                          for z in range(3)] for b in range(4)], dtype=torch.float64)
    got = c2am.front_door_logits(logits, gcam)
    torch.testing.assert_close(got, paper)
    torch.testing.assert_close(got, loop)
    torch.testing.assert_close(c2am.class_constants(gcam), gcam.mean(dim=(1, 2)))


def test_front_door_gradient_is_scaled_by_mz():
    # Eq. 7/8: d loss / d logit = M_z (sigma(M_z s) - z) / Z
    logits = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    gcam = torch.stack([torch.full((4, 4), v) for v in (0.1, 0.2, 0.05)])
    c2am.bce_loss(c2am.front_door_logits(logits, gcam), labels).backward()
    m = torch.tensor([0.1, 0.2, 0.05])
    want = m * (torch.sigmoid(m * logits.detach()) - labels) / 3
    torch.testing.assert_close(logits.grad, want)


@pytest.mark.parametrize("value", [1.0, 0.2])
def test_constant_global_cam_is_cam_constant(value):
    # A Global CAM equal to c everywhere makes C2AM's score exactly CAM+Constant with constant c;
    # c = 1 is plain CAM.
    logits = torch.randn(5, 4)
    gcam = torch.full((4, 3, 3), value)
    torch.testing.assert_close(c2am.front_door_logits(logits, gcam), c2am.constant_logits(logits, value))
    if value == 1.0:
        torch.testing.assert_close(c2am.front_door_logits(logits, gcam), logits)


def test_bce_loss_is_eq4():
    s = torch.tensor([[0.3, -2.0]])
    z = torch.tensor([[1.0, 0.0]])
    want = -(torch.log(torch.sigmoid(s[0, 0])) + torch.log(1 - torch.sigmoid(s[0, 1]))) / 2
    torch.testing.assert_close(c2am.bce_loss(s, z), want)


def test_hparams_are_the_papers_tables():
    hp = c2am.load_hparams()
    assert hp["classifier"]["lr"] == 0.0005 and hp["classifier"]["epochs"] == 4
    assert hp["classifier"]["batch_size"] == 16 and hp["classifier"]["crop_size"] == 512
    assert hp["classifier"]["weight_decay"] == 0.0001
    assert hp["random_walk"]["sem_seg_bg_thres"] == 0.21 and hp["random_walk"]["conf_fg_thres"] == 0.38
    assert hp["deeplab"]["iterations"] == 30000 and hp["constant"]["value"] == 0.2
    for section in hp.values():
        assert "source" in section


def test_figures_are_pngs(tmp_path):
    gcam = torch.rand(3, 8, 8)
    names = ["a", "b", "c"]
    p1 = c2am.plot_global_cams(gcam, names, tmp_path / "global_cam.png")
    p2 = c2am.plot_constants(c2am.class_constants(gcam), names, tmp_path / "m_z.png")
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adapters_registered_with_paper_defaults():
    from wsssbench.methods_api import METHODS, make_config

    cfg = make_config(METHODS.get("c2am"))
    assert (cfg.c2am_lr, cfg.c2am_epochs, cfg.c2am_batch_size, cfg.c2am_weight_decay) == (0.0005, 4, 16, 1e-4)
    assert (cfg.rw_conf_fg, cfg.rw_conf_bg, cfg.rw_bg_threshold) == (0.38, 0.10, 0.21)
    const = make_config(METHODS.get("cam_constant"), {"c2am_constant": "0.5"})
    assert const.c2am_constant == 0.5
    assert [s.prefix for s in METHODS.get("c2am").classifier_stages] == ["c2am_"]


class _TinyData:
    """An in-memory segmentation dataset: 6 random 24x24 images, 3 foreground classes."""

    name = "tiny-test"
    task = "segmentation"
    has_background = True
    class_names = ("background", "a", "b", "c")
    num_classes = 4

    def __init__(self):
        from wsssbench.data.base import Sample

        rng = np.random.default_rng(0)
        self.images = {f"i{k}": rng.integers(0, 256, (24, 20, 3), dtype=np.uint8) for k in range(6)}
        labels = [(1,), (2,), (1, 3), (3,), (1, 2), (2,)]
        self._samples = [Sample(id=f"i{k}", image=None, labels=labels[k]) for k in range(6)]

    def split_names(self):
        return ("train",)

    def samples(self, split):
        return list(self._samples)

    def load_image(self, sample):
        return self.images[sample.id]


def _tiny_ctx(method, **overrides):
    from wsssbench.methods_api import METHODS, Context, make_config
    from wsssbench.stages.train_classifier import build_cam_classifier

    cfg = make_config(METHODS.get(method), {"c2am_epochs": "1", "c2am_batch_size": "3", "cls_size": "16",
                                            **overrides})
    ctx = Context(cfg, _TinyData())
    torch.manual_seed(0)
    return ctx, build_cam_classifier(ctx)


def test_c2am_stage_writes_global_cam_and_trains(tmp_path):
    from wsssbench.stages.infer_cams import multiscale_cams

    ctx, model = _tiny_ctx("c2am", c2am_gcam_size="8", c2am_gcam_scales="1.0")
    model.eval()
    # independent Global CAM: per class, the mean of its images' normalised, resized maps
    want = np.zeros((3, 8, 8))
    count = np.zeros(3)
    for s in ctx.dataset.samples("train"):
        cams, _ = multiscale_cams(model, ctx.dataset.load_image(s), (1.0,), True)
        for c in s.labels:
            m = F.interpolate(cams[None, c - 1 : c], (8, 8), mode="bilinear", align_corners=False)[0, 0].numpy()
            want[c - 1] += m / (m.max() + 1e-5)
            count[c - 1] += 1
    want /= count[:, None, None]
    before = [p.detach().clone() for p in model.parameters()]
    c2am.run_c2am(ctx, model, tmp_path)
    saved = np.load(tmp_path / "global_cam.npz")
    assert saved["count"].tolist() == count.tolist() == [3, 3, 2]
    np.testing.assert_allclose(saved["global_cam"], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(saved["constants"], want.mean((1, 2)), rtol=1e-4)
    assert saved["class_names"].tolist() == ["a", "b", "c"]
    for name in ("global_cam.png", "constants.png", "continued_training.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cam_constant_stage_trains(tmp_path):
    ctx, model = _tiny_ctx("cam_constant")
    before = [p.detach().clone() for p in model.parameters()]
    c2am.run_cam_constant(ctx, model, tmp_path)
    assert (tmp_path / "continued_training.json").exists()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_c2am_through_the_harness_shares_the_base_classifier(tmp_path, monkeypatch):
    from pathlib import Path

    from harness_standins import SquaresDataset  # the harness's stand-in dataset (tests/)

    from wsssbench import harness

    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    fast = {"cls_epochs": "2", "cls_size": "40", "cam_scales": "1.0", "expansion": "none", "seg_enabled": "false"}
    out = tmp_path / "runs"
    cam = harness.run_method("cam", overrides=fast, out=out)
    rec = harness.run_method("c2am", overrides={**fast, "c2am_epochs": "1", "c2am_gcam_scales": "1.0",
                                                "c2am_gcam_size": "16"}, out=out)
    const = harness.run_method("cam_constant", overrides={**fast, "c2am_epochs": "1"}, out=out)
    assert len(list((out / "cache").glob("classifier-*"))) == 3     # one base + c2am + cam_constant
    assert rec.timings["classifier"] < cam.timings["classifier"]    # the base stage came from the cache
    folder = Path(rec.artifacts["classifier"])
    assert folder.name.startswith("classifier-c2am-")
    assert np.load(folder / "global_cam.npz")["global_cam"].shape[1:] == (16, 16)
    assert (folder / "global_cam.png").exists() and (folder / "constants.png").exists()
    assert Path(const.artifacts["classifier"]).name.startswith("classifier-cam_constant-")
    assert rec.config["c2am_lr"] == 0.0005 and const.config["c2am_constant"] == 0.2
    assert {"seed_miou", "pseudo_miou"} <= set(rec.metrics)


def test_bad_continued_training_settings_are_one_line(tmp_path):
    from wsssbench.errors import UserError

    ctx, model = _tiny_ctx("cam_constant", c2am_batch_size="0")
    with pytest.raises(UserError, match="c2am_batch_size=0: must be at least 1"):
        c2am.run_cam_constant(ctx, model, tmp_path)


# --- the continued stage as train_c2am.py runs it (the paper recipe's c2am_* settings) -------------------


def test_global_cam_all_image_mean_is_a_plain_loop():
    # pyutils.sum_cams: every image's (C, H, W) map, zeros where the class is absent, averaged over all images
    gen = torch.Generator().manual_seed(4)
    cams = torch.rand(5, 3, 6, 6, generator=gen)
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    g = c2am.GlobalCAM(3, size=(4, 4))
    g.update(cams[:2], labels[:2])
    g.update(cams[2:], labels[2:])
    want = np.zeros((3, 4, 4))
    for i in range(5):
        for z in range(3):
            if labels[i, z]:
                m = F.interpolate(cams[i : i + 1, z : z + 1], (4, 4), mode="bilinear",
                                  align_corners=False)[0, 0].double().numpy()
                want[z] += m / (m.max() + 1e-5)
    np.testing.assert_allclose(g.compute("all").numpy(), want / 5, rtol=1e-6)
    np.testing.assert_allclose(g.compute("class").numpy(), want / np.array([3, 2, 1])[:, None, None], rtol=1e-6)
    assert int(g.images) == 5
    from wsssbench.errors import UserError
    with pytest.raises(UserError, match="c2am_gcam_mean=sum: must be one of class, all"):
        g.compute("sum")


class _PoolNet(torch.nn.Module):
    """A stand-in classifier whose CAMs are 4x average pools of two image channels, scaled."""

    def cams(self, x):
        return F.avg_pool2d(x[:, :2], 4) * torch.tensor([1.0, -0.5])[:, None, None]

    def forward(self, x):
        return self.cams(x).mean((2, 3))


def test_square_cams_resize_each_scale_straight_to_the_square():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    from wsssbench.stages.common import to_tensor

    x = to_tensor(image)[None]
    want = torch.zeros(1, 2, 8, 8)
    for s in (1.0, 0.5, 1.5):              # make_square_cam.py:39-42, one scale at a time
        size = (20, 28) if s == 1.0 else (round(20 * s), round(28 * s))
        xs = F.interpolate(x, size, mode="bilinear", align_corners=False) if s != 1.0 else x
        a = F.relu(_PoolNet().cams(xs))
        b = F.relu(_PoolNet().cams(xs.flip(-1))).flip(-1)
        want += F.interpolate(a + b, (8, 8), mode="bilinear", align_corners=False)
    got = c2am.square_cams(_PoolNet(), image[None], (1.0, 0.5, 1.5), True, 8)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    # the toolkit's order (sum at the image size, then squash) differs: the option is not a no-op
    from wsssbench.stages.infer_cams import multiscale_cams
    full, _ = multiscale_cams(_PoolNet(), image, (1.0, 0.5, 1.5), True)
    squashed = F.interpolate(full[None], (8, 8), mode="bilinear", align_corners=False)
    assert (squashed - want).abs().max() > 1e-3


def _resnet_classifier():
    from wsssbench.models import CAMClassifier, build_backbone

    torch.manual_seed(0)
    return CAMClassifier(build_backbone("resnet50_irn", output_stride=16), 4)


def test_continued_model_stride32_is_torchvisions_resnet50_and_is_undone():
    import torchvision

    from wsssbench.methods_api import METHODS, make_config
    from wsssbench.models.backbones import FixedBatchNorm, fix_batchnorm

    model = _resnet_classifier().eval()
    fix_batchnorm(model)                     # as the base stage of the paper recipe leaves it
    cfg = make_config(METHODS.get("c2am"), {"recipe": "paper"})
    ref = torchvision.models.resnet50(weights=None).eval()      # train_c2am.py's Net trunk: stride 32
    ref.load_state_dict({**model.backbone.state_dict(), "fc.weight": ref.fc.weight, "fc.bias": ref.fc.bias})
    x = torch.randn(1, 3, 64, 64)
    trunk = torch.nn.Sequential(*list(ref.children())[:-2])
    with torch.no_grad(), c2am.continued_model(model, cfg):
        bns = [type(m) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert set(bns) == {torch.nn.BatchNorm2d}                # batch statistics in train mode
        assert not any(p.requires_grad for p in model.backbone.stem.parameters())   # conv1, bn1
        assert all(p.requires_grad for p in model.backbone.layer1.parameters())
        feats = model.backbone(x)
        assert feats.shape[-2:] == (2, 2)
        torch.testing.assert_close(feats, trunk(x), rtol=1e-5, atol=1e-5)
        model.train()
        train_out = model.backbone(x)
    assert not torch.allclose(train_out, feats)                     # train mode: the batch's statistics
    assert model.backbone(x).shape[-2:] == (4, 4)                   # stride 16 again for the CAMs
    assert {type(m) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {FixedBatchNorm}
    assert all(p.requires_grad for p in model.parameters())
    assert model.backbone.stage_strides[-1] == 16


def test_tiny_defaults_leave_the_model_alone_and_small_backbones_refuse_a_stride():
    from wsssbench.errors import UserError
    from wsssbench.methods_api import METHODS, make_config

    cfg = make_config(METHODS.get("c2am"))
    assert (cfg.c2am_output_stride, cfg.c2am_fixed_bn, cfg.c2am_frozen_blocks, cfg.c2am_optimizer,
            cfg.c2am_augment, cfg.c2am_rescale, cfg.c2am_gcam_resize, cfg.c2am_gcam_mean) == (
        None, False, 0, "sgd", "toolkit", (1.0, 1.0), "image", "class")
    ctx, model = _tiny_ctx("c2am")
    convs = [(m.stride, m.dilation, m.padding) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with c2am.continued_model(model, cfg):
        assert [(m.stride, m.dilation, m.padding) for m in model.modules()
                if isinstance(m, torch.nn.Conv2d)] == convs
        assert all(p.requires_grad for p in model.parameters())
    ctx, model = _tiny_ctx("c2am", c2am_output_stride="32")
    with pytest.raises(UserError, match="c2am_output_stride=...: needs a resnet50/resnet101 backbone"):
        with c2am.continued_model(model, ctx.cfg):
            pass


def test_paper_recipe_sets_train_c2am_settings_and_keeps_deeplab():
    from wsssbench.methods_api import METHODS, make_config

    cfg = make_config(METHODS.get("c2am"), {"recipe": "paper"})
    assert (cfg.c2am_output_stride, cfg.c2am_fixed_bn, cfg.c2am_frozen_blocks, cfg.c2am_optimizer,
            cfg.c2am_augment, cfg.c2am_rescale, cfg.c2am_size) == (32, False, 1, "irn", "irn", (0.625, 1.25), 512)
    assert (cfg.c2am_gcam_resize, cfg.c2am_gcam_mean, cfg.c2am_gcam_size) == ("square", "class", 128)
    assert (cfg.seg_loss, cfg.seg_batch_size, cfg.backbone, cfg.cls_output_stride) == ("balanced", 10,
                                                                                        "resnet50_irn", 16)


def test_c2am_stage_with_the_codes_options(tmp_path):
    ctx, model = _tiny_ctx("c2am", c2am_gcam_size="8", c2am_gcam_scales="1.0,0.5", c2am_gcam_resize="square",
                           c2am_gcam_mean="all", c2am_frozen_blocks="1", c2am_optimizer="irn",
                           c2am_augment="irn", c2am_rescale="0.75,1.25")
    model.eval()
    want = np.zeros((3, 8, 8))
    for s in ctx.dataset.samples("train"):           # pyutils.sum_cams over make_square_cam.py's maps
        cams = c2am.square_cams(model, ctx.dataset.load_image(s)[None], (1.0, 0.5), True, 8)[0]
        for c in s.labels:
            want[c - 1] += (cams[c - 1] / (cams[c - 1].max() + 1e-5)).numpy()
    stem = [p.detach().clone() for p in model.backbone.stages[0].parameters()]
    rest = [p.detach().clone() for p in model.classifier.parameters()]
    c2am.run_c2am(ctx, model, tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "global_cam.npz")["global_cam"], want / 6, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(stem, model.backbone.stages[0].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(rest, model.classifier.parameters()))
    assert all(p.requires_grad for p in model.parameters())     # the freeze was the stage's only


@pytest.mark.parametrize("name,value", [("c2am_augment", "fancy"), ("c2am_optimizer", "adam"),
                                        ("c2am_gcam_resize", "both"), ("c2am_gcam_mean", "median")])
def test_bad_code_options_are_one_line_before_any_work(tmp_path, name, value):
    from wsssbench.errors import UserError

    ctx, model = _tiny_ctx("c2am", **{name: value})
    with pytest.raises(UserError, match=f"--set {name}={value}: must be one of "):
        c2am.run_c2am(ctx, model, tmp_path)
    assert not (tmp_path / "global_cam.npz").exists()
