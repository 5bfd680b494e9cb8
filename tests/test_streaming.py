"""Streamed training data (affinity and segmenter batches read by DataLoader workers) and the DeepLab stage
as kazuto1011/deeplab-pytorch trains it (optimiser groups, poly every 10, iter_size, augmentation, losses)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wsssbench.methods_api import METHODS, make_config
from wsssbench.stages import train_segmenter as ts
from wsssbench.stages.common import EpochBatches, MaskPairs, loader_workers, stream


class _Images:
    """A dataset stand-in: ``load_image`` of random uint8 images of several sizes."""

    def __init__(self, n: int):
        rng = np.random.default_rng(0)
        self.images = {f"im{i}": rng.integers(0, 255, (int(rng.integers(20, 40)), int(rng.integers(20, 40)), 3),
                                              dtype=np.uint8) for i in range(n)}

    def load_image(self, sample):
        return self.images[sample.id]


class _Sample:
    def __init__(self, id_):
        self.id = id_


@pytest.fixture()
def masks(tmp_path):
    ds = _Images(7)
    samples = [_Sample(k) for k in ds.images]
    rng = np.random.default_rng(1)
    for s in samples:
        h, w = ds.images[s.id].shape[:2]
        Image.fromarray(rng.integers(0, 4, (h, w), dtype=np.uint8)).save(tmp_path / f"{s.id}.png")
    return ds, samples, tmp_path


def _stacked_reference(ds, samples, folder, size, batch_size, epochs, seed):
    """The affinity stage before streaming: every image stacked, then per epoch a permutation and flips."""
    from wsssbench.stages.common import to_tensor
    images = torch.stack([F.interpolate(to_tensor(ds.load_image(s))[None], size=(size, size), mode="bilinear",
                                        align_corners=False)[0] for s in samples])
    pngs = [torch.from_numpy(np.array(Image.open(folder / f"{s.id}.png"))).float() for s in samples]
    labels = torch.stack([F.interpolate(y[None, None], size=(size, size), mode="nearest")[0, 0].long() for y in pngs])
    gen, out = torch.Generator().manual_seed(seed), []
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for k in range(max(1, len(images) // batch_size)):
            sel = order[k * batch_size:(k + 1) * batch_size]
            x, y = images[sel], labels[sel]
            flip = torch.rand(len(sel), generator=gen) < 0.5
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
            out.append((x, y))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_affinity_stream_equals_the_stacked_batches(masks, workers):
    ds, samples, folder = masks
    want = _stacked_reference(ds, samples, folder, 16, 3, 2, seed=5)
    batches = EpochBatches(len(samples), 3, 2, torch.Generator().manual_seed(5))
    got = list(stream(MaskPairs(ds, samples, folder, 16), batches, workers))
    assert len(got) == len(want) == len(batches) == 4
    for (x, y), (wx, wy) in zip(got, want):
        assert torch.equal(x, wx) and torch.equal(y, wy)


def test_segmenter_draws_as_before_and_deeplab_epochs():
    """Toolkit mode: the draws of the old in-loop sampler (randint, then flips); deeplab mode: shuffled
    epochs with the last partial batch kept, every draw from the one generator."""
    gen = torch.Generator().manual_seed(3)
    got = list(ts.SegBatches(10, 4, 3, (), torch.Generator().manual_seed(3)))
    for batch in got:
        sel = torch.randint(10, (4,), generator=gen)
        flip = torch.rand(4, generator=gen) < 0.5
        assert [(i, f) for i, f, *_ in batch] == [(int(i), bool(f)) for i, f in zip(sel, flip)]
    deeplab = list(ts.SegBatches(5, 2, 6, (0.5, 1.5), torch.Generator().manual_seed(0)))
    assert [len(b) for b in deeplab] == [2, 2, 1, 2, 2, 1]
    assert sorted(i for b in deeplab[:3] for i, *_ in b) == list(range(5))
    assert {s for b in deeplab for _, _, s, _, _ in b} <= {0.5, 1.5}


def test_pil_nearest_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w, oh, ow = (int(v) for v in rng.integers(5, 90, 4))
        lab = rng.integers(0, 250, (h, w)).astype(np.uint8)
        want = np.asarray(Image.fromarray(lab).resize((ow, oh), resample=Image.NEAREST))
        assert np.array_equal(ts.nearest(torch.from_numpy(lab), (oh, ow)).numpy(), want)


def test_scaled_crop_pads_the_mask_with_ignore():
    pairs = ts.SegmentationPairs.__new__(ts.SegmentationPairs)
    pairs.size = 24
    image = torch.arange(3 * 20 * 10, dtype=torch.float32).view(3, 20, 10)
    mask = torch.ones(20, 10, dtype=torch.long)
    out = pairs.scaled_crop({"image": image}, mask, 1.5, 0.99, 0.99)
    # 30 x 15 after scaling: rows cropped at the last offset (6), columns padded on the right from 15
    assert out["image"].shape == (3, 24, 24) and out["mask"].shape == (24, 24)
    assert (out["mask"][:, 15:] == 255).all() and (out["mask"][:, :15] == 1).all()
    assert (out["image"][:, :, 15:] == 0).all()
    full = F.interpolate(image[None], size=(30, 15), mode="bilinear", align_corners=False)[0]
    assert torch.equal(out["image"][:, :, :15], full[:, 6:30])


def test_deeplab_optimizer_groups():
    from wsssbench.models import DeepLabV2, build_backbone
    model = DeepLabV2(build_backbone("small", output_stride=8), 4)
    opt = ts.deeplab_optimizer(model, 1e-3, 5e-4)
    body, weights, biases = (g["params"] for g in opt.param_groups)
    convs = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and not n.startswith("aspp")]
    assert {id(p) for p in body} == {id(p) for m in convs for p in m.parameters()}
    assert [p.shape for p in weights] == [b.weight.shape for b in model.aspp.branches]
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(1e-3, 5e-4), (1e-2, 5e-4), (2e-2, 0.0)]
    bn = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert bn and not {id(p) for p in bn} & {id(p) for g in opt.param_groups for p in g["params"]}


def test_poly_every_ten_matches_a_hand_loop():
    base, total = 2.5e-4, 100
    lr = base
    for it in range(total):                  # deeplab-pytorch: lr recomputed after iterations 10, 20, ...
        assert ts.seg_lr(base, it, total, every=10) == pytest.approx(lr, rel=1e-12)
        if (it + 1) % 10 == 0:
            lr = base * (1 - (it + 1) / total) ** 0.9


def test_balanced_cross_entropy_plain_loop():
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(2, 3, 5, 6, generator=gen), torch.randint(0, 3, (2, 5, 6), generator=gen)
    labels[0, 0] = 255
    bg, fg = [], []
    for b in range(2):
        for y in range(5):
            for x in range(6):
                c = int(labels[b, y, x])
                if c != 255:
                    nll = -torch.log_softmax(logits[b, :, y, x], 0)[c]
                    (bg if c == 0 else fg).append(float(nll))
    assert float(ts.balanced_cross_entropy(logits, labels)) == pytest.approx((np.mean(bg) + np.mean(fg)) / 2, rel=1e-5)
    only_bg = torch.zeros(1, 5, 6, dtype=torch.long)     # C2AM's 0/0 would be NaN: that half counts 0
    assert torch.isfinite(ts.balanced_cross_entropy(logits[:1], only_bg))


def test_iter_size_adds_the_halved_gradients():
    """Two batches at iter_size 2 step as their mean gradient (plain SGD)."""
    from types import SimpleNamespace
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    model.outputs = lambda x: [model(x)]
    batches = [{"image": torch.randn(2, 3, 4, 4), "mask": torch.randint(0, 2, (2, 4, 4))} for _ in range(2)]
    ctx = SimpleNamespace(cfg=SimpleNamespace(seg_loss="deeplab"), device="cpu")
    method = SimpleNamespace(seg_step=ts.cross_entropy_step)
    before = model.weight.detach().clone()
    grads = []
    for b in batches:
        model.zero_grad()
        F.cross_entropy(model(b["image"]), b["mask"]).backward()
        grads.append(model.weight.grad.clone())
    ts.train_iteration(ctx, method, model, torch.optim.SGD(model.parameters(), lr=0.1), batches)
    assert torch.allclose(model.weight, before - 0.1 * (grads[0] + grads[1]) / 2, atol=1e-7)


def test_paper_recipe_and_workers():
    cfg = make_config(METHODS.get("irnet"), {"recipe": "paper"})
    assert (cfg.seg_optimizer, cfg.seg_iter_size, cfg.seg_lr_every, cfg.seg_fixed_bn, cfg.seg_loss) == \
        ("deeplab", 2, 10, True, "deeplab")
    assert cfg.seg_scales == (0.5, 0.75, 1.0, 1.25, 1.5) and cfg.expansion == "rw"
    assert loader_workers(make_config(METHODS.get("cam"), {"workers": "3"})) == 3
    assert 0 <= loader_workers(make_config(METHODS.get("cam"))) <= 4


@pytest.fixture()
def coco_micro(tmp_path, monkeypatch):
    import dataclasses

    from wsssbench.data.synthetic import PRESETS, generate
    micro = dataclasses.replace(PRESETS["coco-tiny"], name="coco-micro", num_classes=6, coco=(12, 6),
                                sizes=((40, 48), (48, 40)), size_weights=(0.5, 0.5))
    monkeypatch.setitem(PRESETS, "coco-micro", micro)
    generate(tmp_path, "coco-micro")
    return tmp_path


def test_coco_mask_cache_is_exact_verified_and_skips_the_json(coco_micro, monkeypatch):
    from wsssbench.data import coco, get_dataset
    from wsssbench.errors import UserError
    plain = get_dataset("coco", coco_micro, mask_cache="none")
    cached = get_dataset("coco", coco_micro)
    for split in ("train", "val"):
        want, got = plain.samples(split), cached.samples(split)
        assert [(s.id, s.labels, s.size, s.image) for s in got] == [(s.id, s.labels, s.size, s.image) for s in want]
        for a, b in zip(want, got):
            assert np.array_equal(plain.load_mask(a), cached.load_mask(b))
    folder = coco_micro / "coco" / "wsssbench_masks" / "recam" / "train"
    assert (folder / "manifest.json").is_file() and not cached._coco    # the json's index was dropped

    def no_json(path):
        raise AssertionError(f"{path} parsed although the cache is valid")
    monkeypatch.setattr(coco, "_load_api", no_json)
    again = get_dataset("coco", coco_micro)
    sample = again.samples("train")[0]
    assert np.array_equal(again.load_mask(sample), plain.load_mask(plain.samples("train")[0]))
    (folder / f"{sample.id}.png").write_bytes((folder / f"{again.samples('train')[1].id}.png").read_bytes())
    with pytest.raises(UserError, match="differs from the mask cache's manifest"):
        again.load_mask(sample)


def test_coco_mask_cache_rebuilt_when_the_annotations_change(coco_micro):
    import json

    from wsssbench.data import get_dataset
    ds = get_dataset("coco", coco_micro)
    n = len(ds.samples("val"))
    path = coco_micro / "coco" / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["images"] = data["images"][:-1]
    path.write_text(json.dumps(data))
    assert len(get_dataset("coco", coco_micro).samples("val")) == n - 1


@pytest.mark.parametrize("setting, message", [
    ({"seg_iter_size": "0"}, "seg_iter_size=0: must be at least 1"),
    ({"workers": "-1"}, "workers=-1: must be 0"),
    ({"seg_scales": "0.5,-1"}, "must be positive"),
    ({"seg_loss": "focal"}, "seg_loss=focal: use one of ce, deeplab, balanced")])
def test_bad_settings_are_one_line(setting, message):
    from wsssbench.errors import UserError
    from wsssbench.harness import _check_config
    with pytest.raises(UserError, match=message):
        _check_config(make_config(METHODS.get("cam"), setting), "cpu")
