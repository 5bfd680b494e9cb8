"""The synthetic confounded benchmark: determinism, the confounding knob, and reading it back."""
import hashlib

import numpy as np
import pytest

from wsssbench.data import get_dataset, synthetic
from wsssbench.data.synthetic import PRESETS, Preset, generate
from wsssbench.errors import UserError

MICRO = Preset("micro", num_classes=6, sizes=((48, 48), (40, 56)), size_weights=(0.5, 0.5), objects=(0.6, 0.4),
               scale=(0.16, 0.28), seg=(60, 20, 20), loc=(30, 12), confounding=0.8)


@pytest.fixture(autouse=True)
def micro_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "micro", MICRO)


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_options_give_identical_bytes(tmp_path):
    generate(tmp_path / "a", "micro", seed=3)
    generate(tmp_path / "b", "micro", seed=3)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) > 200
    generate(tmp_path / "c", "micro", seed=4)
    assert _digest(tmp_path / "c") != a
    assert not [p for p in tmp_path.rglob(".*tmp*")]          # no temporary folder left behind


def test_reads_back_through_voc_and_cub_readers(tmp_path):
    seg = get_dataset("synthetic", root=tmp_path, preset="micro", seed=0)
    assert seg.num_classes == 7 and seg.class_names[0] == "background"
    assert {s: len(seg.samples(s)) for s in seg.split_names()} == {"train": 20, "train_aug": 60, "val": 20}
    train_ids = {s.id for s in seg.samples("train")}
    assert train_ids <= {s.id for s in seg.samples("train_aug")}
    assert not train_ids & {s.id for s in seg.samples("val")}
    for sample in seg.samples("val"):
        mask, ctx, img = seg.load_mask(sample), seg.load_context(sample), seg.load_image(sample)
        assert img.shape[:2] == mask.shape == ctx.shape
        # image-level labels (IRN cls_labels.npy) are exactly the classes visible in the mask
        assert sample.labels == tuple(int(c) for c in np.unique(mask) if c)
        assert ctx.max() <= 6
    # the plain VOC reader reads the same folder
    voc = get_dataset("voc", root=seg.root)
    assert [s.labels for s in voc.samples("val")][:5] == [s.labels for s in seg.samples("val")][:5]

    loc = get_dataset("synthetic-loc", root=tmp_path)            # options from the folder's manifest
    assert loc.task == "localization" and loc.num_classes == 6
    test = loc.samples("test")
    assert len(test) == 12 and len(loc.samples("train")) == 30
    for sample in test:
        (cls,) = sample.labels
        (x0, y0, x1, y1), = sample.boxes
        img = loc.load_image(sample)
        assert 0 <= x0 < x1 < img.shape[1] and 0 <= y0 < y1 < img.shape[0]
        assert loc.load_context(sample).shape == img.shape[:2]


def _cooccurrence(ds, split):
    """From the files: how often a class's context is visible in images with and without the class.

    Classes that serve as another class's partner are left out: a partner instance is that class
    placed as a context, without its own context.
    """
    partners = {c.partner for c in ds.classes}
    with_c = without_c = ctx_with = ctx_without = 0
    for sample in ds.samples(split):
        present, ctx = set(sample.labels), set(np.unique(ds.load_context(sample))) - {0}
        for c in set(range(1, ds.num_classes)) - partners:
            if c in present:
                with_c += 1
                ctx_with += c in ctx
            else:
                without_c += 1
                ctx_without += c in ctx
    return ctx_with / with_c, ctx_without / without_c


def test_confounding_knob(tmp_path):
    tied = get_dataset("synthetic", root=tmp_path / "p1", preset="micro", confounding=1.0)
    free = get_dataset("synthetic", root=tmp_path / "p0", preset="micro", confounding=0.0)
    # As generated: p = 1 places every class's context with it and never without it.
    for stats in tied.manifest["context_stats"].values():
        assert stats["context_given_class"] == stats["images_with_class"]
        assert stats["context_given_no_class"] == 0
    given, not_given = _cooccurrence(tied, "train_aug")
    assert given > 0.85 and not_given < 0.05      # as seen in the files (occlusion may hide a context)
    # p = 0: the context is independent of its class (same rate with and without it, up to sampling noise).
    given, not_given = _cooccurrence(free, "train_aug")
    assert abs(given - not_given) < 0.15 and not_given > 0.1


def test_bad_options_and_mismatched_folder(tmp_path):
    with pytest.raises(UserError, match="unknown synthetic preset"):
        get_dataset("synthetic", root=tmp_path, preset="huge")
    with pytest.raises(UserError, match="confounding"):
        generate(tmp_path, "micro", confounding=1.5)
    get_dataset("synthetic", root=tmp_path, preset="micro", seed=1)
    with pytest.raises(UserError, match="seed"):
        get_dataset("synthetic", root=tmp_path, preset="micro", seed=2)


def test_default_cache_folder_and_tiny_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSSBENCH_DATA", str(tmp_path))
    ds = get_dataset("synthetic", root=None, preset="tiny", seed=0, confounding=None)
    assert ds.root == tmp_path / "synthetic" / "tiny-seed0-c0.8" / "seg"
    assert {s: len(ds.samples(s)) for s in ds.split_names()} == {"train": 200, "train_aug": 800, "val": 200}
    assert ds.load_image(ds.samples("val")[0]).shape == (64, 64, 3)
    assert synthetic.PRESETS["tiny"].loc == (600, 300)
