"""Segmentation evaluation against independent computations: plain loops, hand-worked cases, properties."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wsssbench.cams import save_cams
from wsssbench.data.base import Dataset, Sample
from wsssbench.errors import UserError
from wsssbench.metrics.segmentation import (ConfusionMatrix, SeedRule, evaluate_masks, evaluate_seeds,
                                            power_threshold, seeds_from_cams)
from wsssbench.metrics.seg_protocols import PROTOCOLS

torch.set_num_threads(1)
C = 5
NAMES = ("background", "a", "b", "c", "d")


class ArrayDataset(Dataset):
    """A segmentation dataset held in memory, with optional context maps (as the synthetic one has)."""

    name = "arrays"

    def __init__(self, masks: dict, contexts: dict | None = None, labels: dict | None = None):
        super().__init__(".", NAMES)
        self.masks, self.contexts = masks, contexts
        self._labels = labels or {k: tuple(int(c) for c in np.unique(m) if 0 < c < C) for k, m in masks.items()}

    def split_names(self):
        return ("train",)

    def samples(self, split):
        self._check_split(split)
        return [Sample(id=k, image=None, labels=self._labels[k]) for k in self.masks]

    def load_mask(self, sample):
        return self.masks[sample.id]

    def load_context(self, sample):
        return None if self.contexts is None else self.contexts[sample.id]


def random_case(tmp_path, n_images=6, seed=0, dtype=np.float32, ties=True):
    """Masks with ignore pixels and CAMs quantised to the sweep's own thresholds: exact ties everywhere."""
    rng = np.random.default_rng(seed)
    masks, cams = {}, {}
    grid = np.float32(np.arange(100) / 100) if ties else None
    for i in range(n_images):
        h, w = rng.integers(5, 20, size=2)
        mask = rng.integers(0, C, size=(h, w)).astype(np.uint8)
        mask[rng.random((h, w)) < 0.1] = 255
        labels = sorted(set(np.unique(mask).tolist()) - {0, 255})
        masks[f"im{i}"] = mask
        keys = np.array([c - 1 for c in labels], np.int64)
        planes = rng.choice(grid, size=(len(keys), h, w)) if ties else rng.random((len(keys), h, w))
        planes = planes.astype(dtype)
        cams[f"im{i}"] = (keys, planes)
        save_cams(tmp_path / f"im{i}.npz", keys, planes)
    return ArrayDataset(masks), cams


def plain_confusion(preds, gts, n=C):
    m = np.zeros((n, n), np.int64)
    for p, g in zip(preds, gts):
        for pv, gv in zip(p.ravel(), g.ravel()):
            if gv != 255:
                m[gv, pv] += 1
    return m


def irn_miou(m):
    """IRN's eval_cam arithmetic, verbatim in meaning."""
    gtj, resj, tp = m.sum(1), m.sum(0), np.diag(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100 * np.nanmean(tp / (gtj + resj - tp))


def seam_miou(preds, gts, n=C):
    """SEAM's do_python_eval counters, one class at a time."""
    ious = []
    for i in range(n):
        T = P = TP = 0
        for p, g in zip(preds, gts):
            cal = g < 255
            P += np.sum((p == i) * cal)
            T += np.sum((g == i) * cal)
            TP += np.sum((g == i) * (p == g) * cal)
        ious.append(TP / (T + P - TP + 1e-10))
    return 100 * np.mean(ious)


def deeplab_miou(m):
    iu = np.diag(m) / (m.sum(1) + m.sum(0) - np.diag(m))
    return 100 * np.nanmean(iu[m.sum(1) > 0])


def literal_seeds(cams, keys, t):
    """IRN's eval_cam lines: np.pad with the threshold, argmax, keys lookup."""
    padded = np.pad(cams, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=t)
    return np.pad(keys + 1, (1, 0), mode="constant")[np.argmax(padded, axis=0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_sweep_equals_per_threshold_loop(tmp_path, dtype):
    ds, cams = random_case(tmp_path, dtype=dtype)
    res = evaluate_seeds(ds, "train", tmp_path, sweep=True, protocol="all", workers=1)
    gts = [ds.masks[k] for k in cams]
    for point_irn, point_seam, point_dl in zip(*(res["by_protocol"][p]["curve"] for p in ("irn", "seam", "deeplab"))):
        t = point_irn["threshold"]
        preds = [literal_seeds(c, k, t) for k, c in cams.values()]
        m = plain_confusion(preds, gts)
        assert point_irn["miou"] == pytest.approx(irn_miou(m), abs=1e-9)
        assert point_seam["miou"] == pytest.approx(seam_miou(preds, gts), abs=1e-9)
        assert point_dl["miou"] == pytest.approx(deeplab_miou(m), abs=1e-9)
    # and a single threshold run is exactly that curve point
    one = evaluate_seeds(ds, "train", tmp_path, threshold=0.37, workers=1)
    assert one["miou"] == res["by_protocol"]["irn"]["curve"][37]["miou"]


def test_exact_tie_is_background_and_lowest_class_wins():
    t = 0.15
    cams = np.array([[[np.float32(t), 0.5]], [[0.1, 0.5]]], np.float32)   # pixel 0: tie with bg; pixel 1: tied classes
    assert seeds_from_cams(cams, np.array([2, 6]), threshold=t).tolist() == [[0, 3]]
    # just above float32(t) is foreground
    cams[0, 0, 0] = np.nextafter(np.float32(t), np.float32(1))
    assert seeds_from_cams(cams, np.array([2, 6]), threshold=t).tolist() == [[3, 3]]


def test_power_background_sweep_equals_direct(tmp_path):
    ds, cams = random_case(tmp_path, ties=False, seed=3)
    alphas = [1, 2, 4, 24]
    res = evaluate_seeds(ds, "train", tmp_path, alpha=alphas, workers=1)
    gts = [ds.masks[k] for k in cams]
    for point in res["curve"]:
        preds = [seeds_from_cams(c, k, alpha=point["alpha"]) for k, c in cams.values()]
        assert point["miou"] == pytest.approx(irn_miou(plain_confusion(preds, gts)), abs=1e-9)
    assert res["best_alpha"] in alphas and res["threshold_selected_on_gt"] is True


@pytest.mark.parametrize("alpha", [0.5, 1, 4, 24])
def test_power_threshold_is_exact(alpha):
    tau = np.float32(power_threshold(alpha))
    m = np.array([tau, np.nextafter(tau, np.float32(2))], np.float32)
    fg = m > np.power(np.float32(1) - m, np.float32(alpha))
    assert fg.tolist() == [False, True]


def test_parallel_workers_equal_serial(tmp_path):
    ds, _ = random_case(tmp_path, n_images=40, seed=5)
    a = evaluate_seeds(ds, "train", tmp_path, sweep=True, workers=1)
    b = evaluate_seeds(ds, "train", tmp_path, sweep=True, workers=2)
    assert a == b


def test_hand_worked_masks_each_protocol(tmp_path):
    from PIL import Image
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 255], [2, 3, 4, 1]], np.uint8)
    Image.fromarray(pred).save(tmp_path / "x.png")
    ds = ArrayDataset({"x": gt})
    res = evaluate_masks(ds, "train", tmp_path, protocol="all", workers=1)["by_protocol"]
    # irn: 255 -> bg. class0: tp1 gt2 pred2 -> 1/3; class1: tp2 gt3 pred3 -> 2/4; class2: tp1 gt2 pred1 -> 1/2;
    # class3: FP only -> 0; class4 only on an ignore pixel: not counted -> NaN
    assert res["irn"]["miou"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 2 + 0) / 4)
    assert res["irn"]["iou"]["d"] is None
    # seam: 255 is a miss of class 1: class0 tp1 T2 P1 -> 1/2; class1 tp2 T3 P3 -> 2/4; class2 1/2; 3: 0; 4: 0
    assert res["seam"]["miou"] == pytest.approx(100 * (1 / 2 + 1 / 2 + 1 / 2) / 5)
    assert res["deeplab"]["miou"] is None and "255" in res["deeplab"]["error"]
    Image.fromarray(np.where(pred == 255, 0, pred).astype(np.uint8)).save(tmp_path / "x.png")
    dl = evaluate_masks(ds, "train", tmp_path, protocol="deeplab", workers=1)
    # classes present in GT: 0, 1, 2 (class 3 is FP only and leaves the mean)
    assert dl["miou"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 2) / 3)


def test_context_confusion(tmp_path):
    from PIL import Image
    gt = np.array([[0, 0, 0, 1]], np.uint8)
    pred = np.array([[1, 1, 2, 1]], np.uint8)       # FPs: class 1 at x=0,1; class 2 at x=2
    ctx = np.array([[1, 0, 1, 0]], np.uint8)        # class 1's context covers x=0 (and x=2, class 1's, not 2's)
    Image.fromarray(pred).save(tmp_path / "x.png")
    res = evaluate_masks(ArrayDataset({"x": gt}, contexts={"x": ctx}), "train", tmp_path, workers=1)
    assert res["context_confusion"]["per_class"]["a"] == 50.0
    assert res["context_confusion"]["per_class"]["b"] == 0.0
    assert res["context_confusion"]["per_class"]["c"] is None
    assert res["context_confusion"]["mean"] == 25.0
    assert evaluate_masks(ArrayDataset({"x": gt}), "train", tmp_path, workers=1)["context_confusion"] is None


def test_seed_context_confusion_matches_masks(tmp_path):
    ds, cams = random_case(tmp_path, seed=2)
    rng = np.random.default_rng(9)
    ds.contexts = {k: rng.integers(0, C, size=m.shape).astype(np.uint8) for k, m in ds.masks.items()}
    res = evaluate_seeds(ds, "train", tmp_path, threshold=0.3, workers=1)
    from PIL import Image
    out = tmp_path / "masks"
    out.mkdir()
    for k, (keys, c) in cams.items():
        Image.fromarray(literal_seeds(c, keys, 0.3).astype(np.uint8)).save(out / f"{k}.png")
    masks = evaluate_masks(ds, "train", out, workers=1)
    assert res["context_confusion"] == masks["context_confusion"]
    assert res["miou"] == masks["miou"]


# --- properties of the accumulator -----------------------------------------------------------------

labels = st.lists(st.sampled_from(list(range(C)) + [255]), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(labels, st.randoms())
def test_properties(gt_list, rnd):
    gt = np.array(gt_list, np.uint8)
    pred = np.array([rnd.randrange(C) for _ in gt_list], np.uint8)
    perm = np.array(rnd.sample(range(C), C))
    lut = np.append(perm, np.zeros(256 - C, np.int64)).astype(np.uint8)
    lut[255] = 255
    a, b = ConfusionMatrix(C), ConfusionMatrix(C)
    a.update(pred, gt)
    b.update(lut[pred], lut[gt])
    for name in PROTOCOLS.names():
        assert a.compute(name)[0] == pytest.approx(b.compute(name)[0], nan_ok=True)
    same = ConfusionMatrix(C)
    same.update(gt, gt)
    if (gt != 255).any():
        assert same.compute("irn")[0] == pytest.approx(100.0)
    # ignore pixels never count, whatever is predicted there
    other = pred.copy()
    other[gt == 255] = rnd.randrange(C)
    c = ConfusionMatrix(C)
    c.update(other, gt)
    assert (c.matrix == a.matrix).all()
    # shards merged == whole; numpy == torch
    k = rnd.randrange(len(gt) + 1)
    s1, s2 = ConfusionMatrix(C), ConfusionMatrix(C)
    s1.update(pred[:k], gt[:k])
    s2.update(pred[k:], gt[k:])
    assert (s1.merge(s2).matrix == a.matrix).all()
    t = ConfusionMatrix(C)
    t.update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert (t.matrix == a.matrix).all() and (t.void == a.void).all()


def test_confusion_rejects_out_of_range_and_shape():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="value 3"):
        cm.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match="ground truth has value 7"):
        cm.update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    big = ConfusionMatrix(81)   # COCO-sized: int64 throughout
    big.update(np.full(10, 80), np.full(10, 80))
    assert big.matrix.dtype == np.int64 and big.matrix[80, 80] == 10


def test_seed_rule_orders_alphas_by_threshold():
    rule = SeedRule(alphas=(1.0, 24.0, 4.0))
    taus = rule.taus(np.float32)
    assert (np.diff(taus) >= 0).all()


def test_exactly_one_background_rule(tmp_path):
    ds, _ = random_case(tmp_path, n_images=1)
    with pytest.raises(UserError, match="exactly one"):
        evaluate_seeds(ds, "train", tmp_path, threshold=0.1, sweep=True)
    with pytest.raises(UserError, match="exactly one"):
        evaluate_seeds(ds, "train", tmp_path)
