"""NL-CCAM and CI-CAM: the non-local block, the combinational map, the context pool (Eqs. 7-8), the
``nlccam`` box protocol, each against a plain restatement; a short WSOL run of each method."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsssbench import harness
from wsssbench.data import Dataset, Sample
from wsssbench.errors import UserError
from wsssbench.methods_api import METHODS, make_config
from wsssbench.metrics.localization import BOX_PROTOCOLS, THETA_GRID, nlccam_box, nlccam_boxes
from wsssbench.models import build_backbone
from wsssbench.models.nonlocal_vgg import (CICAMClassifier, NonLocalBlock, NonLocalCAM, combination_weights,
                                           combinational_map)

torch.set_num_threads(1)


def loop_nonlocal(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """model_cub.py Self_Attn with explicit sums over positions."""
    b, c, h, w = x.shape
    q, k, v = (m(x).flatten(2) for m in (block.query, block.key, block.value))
    out = torch.zeros(b, c, h * w)
    for n in range(b):
        for i in range(h * w):
            energy = torch.stack([(q[n, :, i] * k[n, :, j]).sum() for j in range(h * w)])
            weights = torch.exp(energy - energy.max()) / torch.exp(energy - energy.max()).sum()
            out[n, :, i] = sum(weights[j] * v[n, :, j] for j in range(h * w))
    return block.bn(block.mix(out.view(b, c, h, w))) + x


def test_nonlocal_block_is_the_identity_at_init_and_matches_a_loop():
    torch.manual_seed(0)
    block = NonLocalBlock(16).eval()
    x = torch.randn(2, 16, 3, 4)
    assert torch.equal(block(x), x)                                  # BN weight and bias 0
    torch.nn.init.normal_(block.bn.weight)
    torch.nn.init.normal_(block.bn.bias)
    torch.nn.init.uniform_(block.bn.running_var, 0.5, 2)
    assert torch.allclose(block(x), loop_nonlocal(block, x), atol=1e-5)


def test_network_places_nonlocal_blocks_after_blocks_2_to_5_and_cams_average_to_logits():
    torch.manual_seed(0)
    net = NonLocalCAM(build_backbone("small", output_stride=8), 3).eval()
    assert sorted(net.nonlocal_blocks) == ["2", "3", "4", "5"]
    assert [net.nonlocal_blocks[k].value.in_channels for k in "2345"] == [32, 64, 128, 192]
    x = torch.randn(2, 3, 32, 32)
    logits, cams = net.logits_and_cams(x)
    assert torch.allclose(logits, cams.mean((2, 3)) + net.classifier.bias, atol=1e-5)
    assert torch.allclose(logits, net.classifier(net.backbone(x).mean((2, 3))), atol=1e-5)   # blocks start as identity


def loop_weights(n: int, positive: int) -> list[float]:
    """IoU_check_cub_5.py returnCAM_ 'quadratic' with numpy."""
    return list(np.concatenate([np.linspace(1, 0, positive) ** 2, -(np.linspace(0, -1, n - positive) ** 2)]))


@pytest.mark.parametrize("n, positive", [(200, 100), (7, 3), (2, 1), (4, 0), (4, 4)])
def test_combination_weights_are_nlccams(n, positive):
    assert np.allclose(combination_weights(n, positive).numpy(), loop_weights(n, positive))


def test_combinational_map_against_a_loop():
    rng = np.random.default_rng(1)
    cams, scores = rng.normal(size=(5, 3, 4)), np.array([0.1, 2.0, -1.0, 0.5, 1.0])
    order = sorted(range(5), key=lambda i: -scores[i])              # ranked by score, highest first
    gamma = loop_weights(5, 2)
    expected = sum(gamma[r] * cams[c] for r, c in enumerate(order))
    expected = expected - expected.min()
    got = combinational_map(torch.tensor(cams), torch.tensor(scores), 2).numpy()
    assert np.allclose(got, expected) and got.min() == 0


def loop_hook_maps(model, image: np.ndarray, scales, flip: bool, positive: int):
    """The combinational map over scales restated: per scale and flip, the raw CAMs of the bilinearly
    rescaled image, un-flipped, bilinearly upsampled to the image, summed; ranked by the image's own
    logits (no ReLU: NL-CCAM combines signed maps)."""
    import torch.nn.functional as F

    from wsssbench.stages.common import to_tensor
    x = to_tensor(image)[None]
    h, w = image.shape[:2]
    with torch.no_grad():
        logits = model.logits_and_cams(x)[0][0]
        total = torch.zeros(logits.shape[0], h, w)
        for s in scales:
            xs = x if s == 1 else F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear",
                                                align_corners=False)
            for flipped in ([False, True] if flip else [False]):
                cams = model.logits_and_cams(xs.flip(-1) if flipped else xs)[1]
                cams = cams.flip(-1) if flipped else cams
                total += F.interpolate(cams, size=(h, w), mode="bilinear", align_corners=False)[0]
    scores = logits.numpy()
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    gamma = loop_weights(len(scores), positive)
    combined = sum(gamma[r] * total[c].double().numpy() for r, c in enumerate(order))
    return torch.softmax(logits, 0).numpy(), combined - combined.min()


@pytest.mark.parametrize("scales, flip", [((2.0, 3.0), True), ((1.0,), False), ((1.0, 0.5), True)])
def test_wsol_hook_follows_cam_scales_and_flip_at_the_image_size(scales, flip):
    """The hook used to combine the 1x CAMs only, at the feature resolution (8 x 8 on a 64-px image),
    ignoring cam_scales/cam_flip that the CAM baseline's maps use: such maps localised almost nothing."""
    from types import SimpleNamespace

    from wsssbench.methods.nlccam import multiscale_combinational_maps as combinational_maps
    torch.manual_seed(0)
    model = NonLocalCAM(build_backbone("small", pretrained=None, output_stride=8), 4).eval()
    for block in model.nonlocal_blocks.values():                    # non-identity attention
        torch.nn.init.normal_(block.bn.weight)
    cfg = make_config(METHODS.get("nlccam"),
                      {"cam_scales": ",".join(map(str, scales)), "cam_flip": str(flip).lower()})
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3)).astype(np.uint8)
    scores, maps = combinational_maps(SimpleNamespace(cfg=cfg, device="cpu"), model, image)
    want_scores, want = loop_hook_maps(model, image, scales, flip, positive=2)
    assert maps.shape == (4, 40, 56)                                # the image's size, (H, W) order
    assert np.allclose(scores.numpy(), want_scores, atol=1e-6)
    assert all(np.allclose(m, want, atol=1e-4 * np.abs(want).max()) for m in maps.numpy())


def test_nlccam_trains_at_a_stable_rate():
    assert make_config(METHODS.get("nlccam"), {}).cls_lr == 0.01


def plain_bn(q: np.ndarray) -> np.ndarray:
    mean = q.mean(axis=(1, 2), keepdims=True)
    var = ((q - mean) ** 2).mean(axis=(1, 2), keepdims=True)
    return (q - mean) / np.sqrt(var + 1e-5)


def test_context_pool_follows_eq7_over_two_steps_and_is_saved():
    torch.manual_seed(0)
    net = CICAMClassifier(build_backbone("small", output_stride=8), 3, (4, 4), update_rate=0.01)
    q = np.zeros((3, 4, 4))
    rng = np.random.default_rng(0)
    for _ in range(2):
        cams = rng.normal(size=(4, 3, 4, 4)).astype(np.float32)
        logits = rng.normal(size=(4, 3)).astype(np.float32)
        labels = np.eye(3, dtype=np.float32)[[logits[0].argmax(), logits[1].argmax(), 0, 1]]
        fresh = np.zeros((3, 4, 4))
        for b in range(4):                                           # old_create_attention: right top-1 only
            pi = logits[b].argmax()
            if labels[b, pi] > 0:
                fresh[pi] += cams[b, pi]
        q = plain_bn(q + 0.01 * plain_bn(fresh))
        net.update_pool(torch.tensor(cams), torch.tensor(logits), torch.tensor(labels))
        assert np.allclose(net.context_pool.numpy(), q, atol=1e-5)
    assert np.abs(q).sum() > 0
    assert torch.equal(net.state_dict()["context_pool"], net.context_pool)
    other = CICAMClassifier(build_backbone("small", output_stride=8), 3, (4, 4), update_rate=0.01)
    other.load_state_dict(net.state_dict())
    assert torch.equal(other.context_pool, net.context_pool)


def test_enhanced_features_eq8_shape_and_gradients():
    torch.manual_seed(0)
    net = CICAMClassifier(build_backbone("small", output_stride=8), 3, (4, 4), update_rate=0.01)
    net.context_pool.normal_()
    feats = torch.randn(2, 192, 4, 4, requires_grad=True)
    top = torch.tensor([2, 0])
    enhanced = net.enhance(feats, top)
    assert enhanced.shape == feats.shape
    conv = net.context_attention
    for b in range(2):                                               # Conv1x1 of the one-hot context = W[:, π] Q_π + bias
        att = conv.weight[:, top[b], 0, 0, None, None] * net.context_pool[top[b]] + conv.bias[:, None, None]
        assert torch.allclose(enhanced[b], feats[b] + feats[b] * att, atol=1e-5)
    enhanced.sum().backward()
    assert feats.grad.abs().sum() > 0 and conv.weight.grad[:, top].abs().sum() > 0
    assert conv.weight.grad[:, 1].abs().sum() == 0                   # no image's top class is 1
    logits, cams, logits_e, cams_e = net.branches(torch.randn(2, 3, 32, 32))
    assert logits.shape == logits_e.shape == (2, 3) and cams.shape == cams_e.shape == (2, 3, 4, 4)
    assert net.cams(torch.randn(1, 3, 48, 48)).shape == (1, 3, 6, 6)  # the pool follows another input size


def test_nlccam_box_rule_on_a_hand_made_map():
    s = np.zeros((20, 20))
    s[2:6, 3:9] = 1.0                                               # big block: box area 24
    s[10:18, 12:14] = 0.9                                           # tall block: box area 16
    s[15, 1] = 0.05                                                 # below θ·max at 0.12: cut
    assert nlccam_box(s, 0.12).tolist() == [3, 2, 9, 6]            # largest box area, exclusive stops
    assert nlccam_box(s, 0.95).tolist() == [3, 2, 9, 6]
    ring = np.zeros((9, 9)); ring[1:8, 1:8] = 1.0; ring[4, 4] = 0.0
    assert nlccam_box(ring, 0.0).tolist() == [1, 1, 8, 8]
    assert nlccam_box(np.zeros((5, 5)), 0.2).tolist() == [0, 0, 0, 0]
    lb = nlccam_boxes(s, THETA_GRID)
    assert all((lb.largest[lb.level_of[k]] == nlccam_box(s, THETA_GRID[k])).all() for k in range(len(THETA_GRID)))
    proto = BOX_PROTOCOLS.get("nlccam")
    assert proto.frame_size == (224, 224) and BOX_PROTOCOLS.get("wsolevaluation").name == "wsolevaluation"


def test_settings_are_checked():
    with pytest.raises(UserError, match="cam_combination_split"):
        make_config(METHODS.get("nlccam"), {"cam_combination_split": "1.5"})
    with pytest.raises(UserError, match="cicam_update_rate"):
        make_config(METHODS.get("cicam"), {"cicam_update_rate": "-0.1"})
    with pytest.raises(UserError, match="cicam_test_size"):
        make_config(METHODS.get("cicam"), {"cicam_test_size": "100"})
    cfg = make_config(METHODS.get("cicam"), {})
    assert (cfg.wsol_protocol, cfg.wsol_threshold, cfg.cicam_update_rate) == ("cicam", 0.0, 0.01)
    assert cfg.cam_combination_split == 0.0                         # CI-CAM's γ = −(k/(C−1))²


def reference_epoch_lr(base, e, epochs, decay_epoch, rate):
    """CI-CAM utils.py poly_lr_scheduler (NL-CCAM Metric.py's without the step decay), epoch e."""
    lr = base * (1 - e / epochs) ** 0.9
    for _ in range(e // decay_epoch if decay_epoch else 0):
        lr *= rate
    return lr


@pytest.mark.parametrize("method,rates", [("nlccam", {"classifier": 1.0, "rest": 0.1}),
                                          ("cicam", {"classifier": 1.0, "context_attention": 0.1, "rest": 0.1})])
def test_optimisers_are_the_codes_adam_groups_on_the_per_epoch_schedule(method, rates):
    """train_cub.py / train2.py: Adam (torch's β), groups at lr × rate, and the harness's per-step poly
    replaced by the reference's per-epoch schedule (epochs 7, 3 steps each; CI-CAM: ×0.5 every 2)."""
    from types import SimpleNamespace

    from wsssbench.methods_api import CLS_OPTIMIZERS
    from wsssbench.stages.common import poly_lr
    cfg = make_config(METHODS.get(method), {"cls_epochs": "7", "cicam_decay_epoch": "2"} if method == "cicam"
                      else {"cls_epochs": "7"})
    ctx = SimpleNamespace(cfg=cfg, num_fg=3)
    model = METHODS.get(method).build_classifier(ctx)
    opt = CLS_OPTIMIZERS.get(method)(model, 1e-3, 0.0)
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.9, 0.999)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        kinds = {next((k for k in rates if names[id(p)].startswith(k)), "rest") for p in group["params"]}
        assert len(kinds) == 1 and group["base_lr"] == pytest.approx(1e-3 * rates[kinds.pop()])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    if method == "cicam":                                           # the paper's β2 as an option
        paper = make_config(METHODS.get(method), {"cicam_beta2": "0.99"})
        model_b = METHODS.get(method).build_classifier(SimpleNamespace(cfg=paper, num_fg=3))
        assert CLS_OPTIMIZERS.get(method)(model_b, 1e-3, 0.0).defaults["betas"] == (0.9, 0.99)
    steps, epochs = 3, 7
    for it in range(steps * epochs):
        e = it // steps
        for group in opt.param_groups:
            poly = poly_lr(group["base_lr"], it, steps * epochs)
            want = reference_epoch_lr(group["base_lr"], e, epochs, 2 if method == "cicam" else 0, 0.5)
            assert opt.epoch_lr(group["base_lr"], poly) == pytest.approx(want, rel=1e-9), (it, e)


def test_ranking_pass_is_torchvisions_resize_and_centre_crop():
    from torchvision import transforms

    from wsssbench.methods.cicam import centre_crop
    rng = np.random.default_rng(0)
    for h, w in ((50, 70), (90, 61), (64, 64)):
        image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        want = transforms.Compose([transforms.Resize(87), transforms.CenterCrop(64)])(Image.fromarray(image))
        assert np.array_equal(centre_crop(image, 87, 64), np.asarray(want))


def test_paper_recipes_use_the_codes_optimisers():
    for method, opt, batch in (("nlccam", "nlccam", 16), ("cicam", "cicam", 6)):
        settings = dict(METHODS.get(method).recipe("paper").settings)
        assert (settings["cls_optimizer"], settings["cls_batch_size"], settings["cls_size"]) == (opt, batch, 224)


class BoxSquares(Dataset):
    """A localization stand-in: one red or blue square per image on grey noise, its box; train/test."""

    name, task, has_background = "box-squares", "localization", False

    def __init__(self, root: Path, n: int = 24, size: int = 40):
        super().__init__(root, ("red", "blue"))
        rng = np.random.default_rng(0)
        (root / "img").mkdir(parents=True, exist_ok=True)
        self._splits = {split: [self._draw(rng, f"{split}_{i:03d}", size) for i in range(count)]
                        for split, count in (("train", n), ("test", n // 2))}

    def _draw(self, rng, sid: str, size: int) -> Sample:
        img = rng.integers(90, 130, (size, size, 3)).astype(np.uint8)
        c, s = int(rng.integers(0, 2)), int(rng.integers(10, 20))
        y, x = rng.integers(0, size - s, 2)
        img[y:y + s, x:x + s] = (220, 30, 30) if c == 0 else (30, 30, 220)
        path = self.root / "img" / f"{sid}.png"
        Image.fromarray(img).save(path)
        return Sample(sid, path, (c,), boxes=((float(x), float(y), float(x + s), float(y + s)),), size=(size, size))

    def split_names(self):
        return tuple(self._splits)

    def samples(self, split):
        self._check_split(split)
        return list(self._splits[split])


FAST = {"cls_epochs": "3", "cls_size": "40", "cls_batch_size": "8"}


@pytest.mark.parametrize("method", ["nlccam", "cicam"])
def test_short_wsol_run(method, tmp_path, monkeypatch):
    """Classifier, combinational maps and the method's box protocol end to end on the stand-in."""
    ds = BoxSquares(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    sizes = {"cicam_test_size": "40", "cicam_rank_resize": "54"} if method == "cicam" else {}
    result = harness.run_method(method, dataset="box-squares", overrides={**FAST, **sizes}, out=tmp_path / "runs")
    assert set(result.metrics) == {"top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known", "maxboxacc_v2"}
    assert all(0 <= v <= 100 for v in result.metrics.values())
    assert set(result.protocols.values()) == {f"{method}/224", f"{method}/224, best θ per δ"}


def ilsvrc_fixture(root: Path) -> Path:
    """The Kaggle ILSVRC localization layout: two synsets, six training images each (class folders),
    four validation JPEGs of other sizes with their boxes (one image with two)."""
    import csv
    synsets = ("n01440764", "n01443537")
    root.mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n")
    images = root / "ILSVRC" / "Data" / "CLS-LOC"
    rng = np.random.default_rng(0)

    def draw(path: Path, cls: int, h: int, w: int) -> list[tuple[int, int, int, int]]:
        img = rng.integers(90, 130, (h, w, 3)).astype(np.uint8)
        s = int(rng.integers(10, min(h, w) // 2))
        y, x = (int(v) for v in rng.integers(0, (h - s, w - s)))
        img[y:y + s, x:x + s] = (220, 30, 30) if cls == 0 else (30, 30, 220)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, quality=95)
        return [(x, y, x + s, y + s)]

    for cls, synset in enumerate(synsets):
        for i in range(6):
            draw(images / "train" / synset / f"{synset}_{i}.JPEG", cls, 40, 48)
    with open(root / "LOC_val_solution.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        for i, (cls, h, wd) in enumerate(((0, 40, 60), (1, 52, 40), (0, 44, 44), (1, 36, 50)), start=1):
            name = f"ILSVRC2012_val_{i:08d}"
            boxes = draw(images / "val" / f"{name}.JPEG", cls, h, wd) + ([(0, 0, 5, 5)] if i == 2 else [])
            w.writerow([name, " ".join(f"{synsets[cls]} {' '.join(map(str, b))}" for b in boxes)])
    return root


def test_run_cicam_on_ilsvrc_in_its_official_layout(tmp_path):
    import json

    from typer.testing import CliRunner

    from wsssbench.cli.app import app
    root = ilsvrc_fixture(tmp_path / "ilsvrc")
    sets = ["cls_epochs=1", "cls_size=32", "cls_batch_size=4", "cam_scales=1.0", "cam_flip=false",
            "cicam_test_size=32", "cicam_rank_resize=44"]
    res = CliRunner().invoke(app, ["run", "cicam", "--dataset", "ilsvrc", "--root", str(root), "--out",
                                   str(tmp_path / "runs"), "--json", *(a for s in sets for a in ("--set", s))])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["dataset"] == "ilsvrc" and set(rec["protocols"].values()) == {"cicam/224", "cicam/224, best θ per δ"}
    assert {"top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known"} <= set(rec)
    maps = sorted((tmp_path / "runs").glob("cache/wsol-maps-*/val/*.npz"))
    assert len(maps) == 4                                              # the val split, one map per image


def test_without_the_pool_both_branches_are_the_plain_cam_and_q_stays():
    """Table 3's TwoC (train2.py --attention 0): X^e = X and the pool is never updated."""
    torch.manual_seed(0)
    net = CICAMClassifier(build_backbone("small", output_stride=8), 3, (4, 4), update_rate=0.5,
                          context_pool=False).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, cams, logits_e, cams_e = net.branches(x)
    assert torch.equal(logits, logits_e) and torch.equal(cams, cams_e)
    net.update_pool(cams, logits, torch.eye(3)[logits.argmax(1)])
    assert not net.context_pool.any()
