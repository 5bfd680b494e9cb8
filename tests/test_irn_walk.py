"""IRN's boundary net and walk settings (rw_pairs / rw_augment / rw_optimizer / rw_infer = irn) against plain
loops and hand-worked cases; benchmarks/irn_walk_side_by_side.py checks them against IRN's code itself."""
import math
import types

import numpy as np
import pytest
import torch
from torch import nn

from wsssbench.methods_api import METHODS, make_config
from wsssbench.models import AffinityNet
from wsssbench.models.affinity import edge_to_affinity, irn_sources, pair_labels, search_paths
from wsssbench.stages.common import to_tensor
from wsssbench.stages.common import EpochBatches
from wsssbench.stages.expand import (IrnCropDraws, affinity_optimizer, irn_affinity_item, irn_crop_box, irn_edge,
                                     random_walk, walk_up, walked_labels)


def test_irn_sources_are_the_pixels_with_every_destination_inside():
    h, w, r = 7, 9, 3
    dests = [p[0] for p in search_paths(r)]
    loop = [[all(0 <= y + dy < h and 0 <= x + dx < w for dy, dx in dests) for x in range(w)] for y in range(h)]
    assert irn_sources(h, w, r).tolist() == loop
    assert int(irn_sources(128, 128, 10).sum()) == (128 - 9) * (128 - 18)     # PathIndex's cropped grid


def test_irn_pairs_loss_is_the_plain_loop_over_interior_sources():
    torch.manual_seed(0)
    r, h, w = 3, 6, 8
    logits = torch.randn(1, 1, h, w)
    labels = torch.tensor([[0, 0, 1, 1, 255, 0, 2, 2]] * 3 + [[1, 1, 1, 0, 0, 255, 2, 0]] * 3)[None]
    edge = torch.sigmoid(logits)[0, 0]
    sums = {"bg": [0.0, 0], "fg": [0.0, 0], "neg": [0.0, 0]}
    for y in range(h - (r - 1)):
        for x in range(r - 1, w - (r - 1)):
            for path in search_paths(r):
                (dy, dx) = path[0]
                a, b = int(labels[0, y, x]), int(labels[0, y + dy, x + dx])
                if 255 in (a, b):
                    continue
                aff = 1 - max(float(edge[y + py, x + px]) for py, px in path)
                kind = "neg" if a != b else "bg" if a == 0 else "fg"
                loss = -math.log(1 + 1e-5 - aff) if kind == "neg" else -math.log(aff + 1e-5)
                sums[kind][0] += loss
                sums[kind][1] += 1
    mean = {k: s / (n + 1e-5) for k, (s, n) in sums.items()}
    expected = ((mean["bg"] / 2 + mean["fg"] / 2) + mean["neg"]) / 2
    got = AffinityNet.loss(logits, labels, radius=r, pairs="irn")
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(AffinityNet.loss(logits, labels, radius=r)) != pytest.approx(expected, rel=1e-3)   # more pairs


def test_irn_optimizer_puts_the_weight_decay_in_the_momentum_slot():
    p = [nn.Parameter(torch.zeros(2))]
    assert affinity_optimizer(p, 0.1, "irn").param_groups[0]["momentum"] == 1e-4
    assert affinity_optimizer(p, 0.1, "sgd").param_groups[0]["momentum"] == 0.9
    assert affinity_optimizer(p, 0.1, "irn").param_groups[0]["weight_decay"] == 1e-4


def test_crop_box_is_randrange_of_the_free_space():
    # image larger than the crop: the image window moves; smaller: the place in the output moves
    assert irn_crop_box(600, 700, 512, 0.0, 0.0) == (0, 0, 0, 0)
    assert irn_crop_box(600, 700, 512, 0.999, 0.999) == (0, 88, 0, 188)           # randrange(89), randrange(189)
    assert irn_crop_box(300, 512, 512, 0.5, 0.5) == (106, 0, 0, 0)                # randrange(213) -> 106; no space
    assert irn_crop_box(300, 700, 512, 0.999, 0.25) == (212, 0, 0, 47)


def test_affinity_item_scales_flips_and_pads_labels_with_255():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    label = np.zeros((40, 60), np.uint8)
    label[:, :30] = 5
    x, y = irn_affinity_item(image, label, 64, 0.5, False, 0.0, 0.0)    # scale 1.0: the image itself
    assert x.shape == (3, 64, 64) and y.shape == (64, 64)
    assert torch.equal(x[:, :40, :60], to_tensor(image)) and float(x[:, 40:].abs().max()) == 0
    assert (y[40:] == 255).all() and (y[:, 60:] == 255).all() and (y[:40, :30] == 5).all()
    _, yf = irn_affinity_item(image, label, 64, 0.5, True, 0.0, 0.0)
    assert (yf[:40, 30:60] == 5).all() and (yf[:40, :30] == 0).all()
    _, ys = irn_affinity_item(image, label, 64, 0.0, False, 0.0, 0.0)    # scale 0.5, nearest labels
    assert (ys[:20, :15] == 5).all() and (ys[:20, 15:30] == 0).all() and (ys[20:] == 255).all()


def test_crop_draws_come_with_each_item_and_are_reproducible():
    def items(seed):
        gen = torch.Generator().manual_seed(seed)
        return list(IrnCropDraws(EpochBatches(5, 2, 2, gen), gen))
    a, b = items(0), items(0)
    assert a == b and len(a) == 4 and all(len(it) == 5 for batch in a for it in batch)
    assert all(0 <= u < 1 for batch in a for it in batch for u in it[2:])


class _Stride2(nn.Module):
    """A boundary 'net' at stride 2 whose logit is the mean colour of each 2x2 cell: position-dependent, so
    padding and flipping show."""
    stride = 2

    def forward(self, x):
        return nn.functional.avg_pool2d(x.mean(1, keepdim=True), 2, ceil_mode=True)


def test_irn_edge_pads_flips_and_averages_logits():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 7)
    net = _Stride2()
    got = irn_edge(net, x, 8)
    padded = nn.functional.pad(x, (0, 1, 0, 3))
    a = net(padded[None])[0, 0, :3, :4]
    flipped = nn.functional.pad(x.flip(-1), (0, 1, 0, 3))
    b = net(flipped[None])[0, 0, :3, :4].flip(-1)
    assert torch.allclose(got, torch.sigmoid((a + b) / 2))
    assert got.shape == (3, 4)


def test_walk_up_upsamples_by_the_stride_and_crops():
    cfg = types.SimpleNamespace(rw_radius=2, rw_beta=10.0, rw_exp_times=1, rw_method="sparse")
    small = torch.rand(2, 3, 4)
    edge = torch.zeros(3, 4)
    up = walk_up(small, edge, (10, 15), cfg, 4)
    assert up.shape == (2, 10, 15) and float(up.max()) == pytest.approx(1.0)
    walked = random_walk((small * (1 - edge)).reshape(2, -1), edge, 2, 10.0, 1, "sparse").view(1, 2, 3, 4)
    expected = nn.functional.interpolate(walked, size=(12, 16), mode="bilinear", align_corners=False)[0, :, :10, :15]
    assert torch.allclose(up, expected / expected.max())
    straight = walk_up(small, edge, (10, 15), cfg, None)                   # the toolkit's resize: other values
    assert not torch.allclose(up, straight)
    labels = walked_labels(up, np.array([4, 9]), 0.25)
    assert set(np.unique(labels)) <= {0, 5, 10}


def test_paper_recipe_sets_irns_walk_and_tiny_keeps_the_toolkits():
    paper = make_config(METHODS.get("irnet"), {"recipe": "paper"})
    assert (paper.rw_pairs, paper.rw_augment, paper.rw_optimizer, paper.rw_infer) == ("irn",) * 4
    tiny = make_config(METHODS.get("cam"), {})
    assert (tiny.rw_pairs, tiny.rw_augment, tiny.rw_optimizer, tiny.rw_infer) == ("toolkit", "toolkit", "sgd",
                                                                                     "toolkit")


def test_pair_labels_match_a_loop():
    labels = torch.tensor([[0, 1, 255], [1, 1, 0]])[None]
    bg, fg, neg = pair_labels(labels, 2)
    for d, path in enumerate(search_paths(2)):
        dy, dx = path[0]
        for y in range(2):
            for x in range(3):
                inside = 0 <= y + dy < 2 and 0 <= x + dx < 3
                a = int(labels[0, y, x])
                b = int(labels[0, y + dy, x + dx]) if inside else 255
                ok = 255 not in (a, b)
                assert bool(bg[0, d, y, x]) == (ok and a == b == 0)
                assert bool(fg[0, d, y, x]) == (ok and a == b != 0)
                assert bool(neg[0, d, y, x]) == (ok and a != b)
    aff, valid = edge_to_affinity(torch.zeros(1, 2, 3), 2)
    assert valid.shape == aff.shape[1:]


def test_irnet_runs_end_to_end_with_irns_walk_settings(tmp_path, monkeypatch):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from harness_standins import SquaresDataset
    from wsssbench import harness
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    over = {"cls_epochs": "2", "cls_size": "40", "cam_scales": "1.0", "rw_epochs": "1", "seg_enabled": "false",
            "rw_pairs": "irn", "rw_augment": "irn", "rw_optimizer": "irn", "rw_infer": "irn", "rw_train_images": "8",
            "cam_arithmetic": "irn"}
    rec = harness.run_method("irnet", overrides=over, out=tmp_path / "runs")
    assert 0 <= rec.metrics["pseudo_miou"] <= 100
    # make_cam.py's stride-4 maps are in every CAM file, on IRN's grid, for the walk to start from
    from wsssbench.cams import load_cams
    cam = load_cams(next(Path(rec.artifacts["cams"]).rglob("*.npz")))
    h, w = cam.cams.shape[1:]
    assert cam.stride4.shape == (len(cam.keys), (h - 1) // 4 + 1, (w - 1) // 4 + 1)
