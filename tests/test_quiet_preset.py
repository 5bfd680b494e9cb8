"""The ``quiet`` preset: tiny's scenes with more images (docs/statistics.md), generated without training."""
from __future__ import annotations

import dataclasses

from wsssbench.data import get_dataset
from wsssbench.data.synthetic import PRESETS


def test_quiet_is_tiny_with_more_images():
    tiny, quiet = PRESETS["tiny"], PRESETS["quiet"]
    scene = ("num_classes", "sizes", "size_weights", "objects", "scale", "confounding")
    assert [getattr(quiet, f) for f in scene] == [getattr(tiny, f) for f in scene]
    n_aug, n_train, n_val = quiet.seg
    assert n_train <= n_aug and n_aug >= 4 * tiny.seg[0] and n_train >= 4 * tiny.seg[1] and n_val >= 4 * tiny.seg[2]
    assert tiny.seg == (800, 200, 200) and tiny.loc == (600, 300)       # the regression guard's preset unchanged


def test_a_subset_generates_and_its_train_images_are_tinys(tmp_path, monkeypatch):
    """Image i has its own random stream, so quiet's first train images are tiny's (same bytes)."""
    monkeypatch.setitem(PRESETS, "quiet", dataclasses.replace(PRESETS["quiet"], seg=(12, 6, 4), loc=None))
    monkeypatch.setitem(PRESETS, "tiny", dataclasses.replace(PRESETS["tiny"], seg=(8, 3, 2), loc=None))
    quiet = get_dataset("synthetic", root=tmp_path / "q", preset="quiet")
    tiny = get_dataset("synthetic", root=tmp_path / "t", preset="tiny")
    assert [len(quiet.samples(s)) for s in ("train_aug", "train", "val")] == [12, 6, 4]
    assert quiet.manifest["preset"] == "quiet" and quiet.num_classes == 7
    for a, b in zip(tiny.samples("train"), quiet.samples("train")):
        assert a.id == b.id and (quiet.load_image(b) == tiny.load_image(a)).all()
        assert (quiet.load_mask(b) == tiny.load_mask(a)).all()
    assert quiet.load_image(quiet.samples("val")[0]).shape == (64, 64, 3)
