"""The COCO-shaped synthetic presets: written in MS-COCO 2014's layout and read by the real `coco` reader."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsssbench.cli import app
from wsssbench.data import get_dataset, synthetic
from wsssbench.data.synthetic import COCO_CATEGORY_IDS, PRESETS, Preset, generate
from wsssbench.errors import UserError

torch.set_num_threads(1)
MICRO = Preset("coco-micro", num_classes=12, sizes=((40, 48), (48, 40)), size_weights=(0.5, 0.5),
               objects=(0.3, 0.4, 0.3), scale=(0.14, 0.26), seg=None, loc=None, confounding=0.8, coco=(40, 20))
FAST = {"cls_epochs": "1", "cls_size": "40", "cam_scales": "1.0", "cam_flip": "false", "seg_iterations": "6",
        "seg_size": "40", "seg_batch_size": "4"}


@pytest.fixture(autouse=True)
def micro_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "coco-micro", MICRO)


@pytest.fixture(scope="module")
def coco_tiny(tmp_path_factory):
    """coco-tiny as `wsssbench data synth` writes it (seconds)."""
    out = tmp_path_factory.mktemp("coco-tiny")
    res = CliRunner().invoke(app, ["data", "synth", "--preset", "coco-tiny", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    return out


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _instances(root, split):
    return json.loads((root / "coco" / "annotations" / f"instances_{split}2014.json").read_text())


def test_official_layout(coco_tiny):
    assert sorted(p.name for p in (coco_tiny / "coco").iterdir()) == [
        "annotations", "synthetic.json", "train2014", "val2014"]
    n_train, n_val = PRESETS["coco-tiny"].coco
    ids = set()
    for split, count in (("train", n_train), ("val", n_val)):
        data = _instances(coco_tiny, split)
        assert list(data) == ["info", "images", "licenses", "annotations", "categories"]
        assert len(data["images"]) == count == len(list((coco_tiny / "coco" / f"{split}2014").iterdir()))
        for image in data["images"]:
            assert image["file_name"] == f"COCO_{split}2014_{image['id']:012d}.jpg"
            assert (coco_tiny / "coco" / f"{split}2014" / image["file_name"]).is_file()
        ids |= {image["id"] for image in data["images"]}
        cats = [c["id"] for c in data["categories"]]
        assert cats == sorted(cats) and set(cats) < set(COCO_CATEGORY_IDS) and cats[-1] - cats[0] >= len(cats)
        anns = data["annotations"]
        assert {"segmentation", "area", "iscrowd", "image_id", "bbox", "category_id", "id"} == set(anns[0])
        polygons = [a for a in anns if isinstance(a["segmentation"], list)]
        compressed = [a for a in anns if isinstance(a["segmentation"], dict)
                      and isinstance(a["segmentation"]["counts"], str)]
        crowd = [a for a in anns if a["iscrowd"]]
        assert polygons and compressed and crowd and len(polygons) + len(compressed) + len(crowd) == len(anns)
        assert all(isinstance(a["segmentation"]["counts"], list) for a in crowd)      # COCO's uncompressed RLE
        assert not any(a["iscrowd"] for a in polygons + compressed)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for a in polygons for p in a["segmentation"])
    assert len(ids) == n_train + n_val                   # image ids unique across the two splits


def test_same_options_give_identical_bytes(coco_tiny, tmp_path, monkeypatch):
    generate(tmp_path / "again", "coco-tiny", seed=0)
    assert _digest(tmp_path / "again") == _digest(coco_tiny)
    generate(tmp_path / "other", "coco-micro", seed=1)
    monkeypatch.setattr(synthetic, "PARALLEL_MIN_IMAGES", 0)         # two worker processes: same bytes
    generate(tmp_path / "other2", "coco-micro", seed=1)
    generate(tmp_path / "seed2", "coco-micro", seed=2)
    assert _digest(tmp_path / "other") == _digest(tmp_path / "other2") != _digest(tmp_path / "seed2")
    assert not list(tmp_path.rglob(".*"))                # no temporary folder or annotation spool left


def test_coco_reader_reads_it(coco_tiny):
    ds = get_dataset("coco", root=coco_tiny)            # finds coco/ under the folder, as for real COCO
    k = PRESETS["coco-tiny"].num_classes
    assert ds.num_classes == k + 1 and ds.class_names[0] == "background" and ds.split_names() == ("train", "val")
    assert ds.category_ids == synthetic.coco_category_ids(k)
    data = _instances(coco_tiny, "val")
    labels = {}
    for a in data["annotations"]:                       # every annotation's category, crowd included
        labels.setdefault(a["image_id"], set()).add(ds.category_ids.index(a["category_id"]) + 1)
    samples = ds.samples("val")
    assert [int(s.id.rsplit("_", 1)[1]) for s in samples] == sorted(i["id"] for i in data["images"])
    assert all(s.labels == tuple(sorted(labels.get(int(s.id.rsplit("_", 1)[1]), ()))) for s in samples)
    assert np.mean([len(s.labels) for s in samples]) > 2         # several classes per image


def test_decoded_masks_are_the_rendered_ones(coco_tiny):
    """Every instance decodes to exactly its rendered visible pixels (RLE and polygons alike), and the
    reader's recam mask is the rendered class mask with the crowd instances left background."""
    ds = get_dataset("coco", root=coco_tiny)
    spec = PRESETS["coco-tiny"]
    job = synthetic._Job(spec, 0, spec.confounding, "coco", coco_tiny)
    order = {image_id: i for i, image_id in enumerate(synthetic._coco_image_ids(0, sum(spec.coco)))}
    api = ds.api("val")
    kinds = set()
    for sample in ds.samples("val"):
        image_id = int(sample.id.rsplit("_", 1)[1])
        rng = job.rng(order[image_id])
        scene = job.scene(rng)
        crowd = [rng.random() < synthetic.CROWD_SHARE for _ in scene.instances]     # the generator's next draws
        anns = api.imgToAnns.get(image_id, [])
        assert len(anns) == len(scene.instances)
        expected = scene.mask.copy()
        for ann, (c, visible), is_crowd in zip(anns, scene.instances, crowd):
            assert ann["iscrowd"] == is_crowd and ann["area"] == visible.sum()
            assert np.array_equal(api.annToMask(ann), visible)
            kinds.add((type(ann["segmentation"]).__name__, ann["iscrowd"]))
            if is_crowd:
                expected[visible] = 0
        assert np.array_equal(ds.load_mask(sample), expected)
        assert np.array_equal(ds.load_image(sample).shape[:2], scene.mask.shape)
    assert kinds == {("list", 0), ("dict", 0), ("dict", 1)}


def test_simplified_polygons_stay_close(tmp_path, monkeypatch):
    """coco-shape's polygon tolerance (0.75 px): the reader's masks agree with the render on > 98 % of the
    object pixels, not all of them."""
    monkeypatch.setitem(PRESETS, "coco-micro", dataclasses.replace(MICRO, sizes=((240, 320),), size_weights=(1.0,),
                                                                    polygon_tolerance=0.75))
    monkeypatch.setattr(synthetic, "CROWD_SHARE", 0.0)
    generate(tmp_path, "coco-micro")
    ds = get_dataset("coco", root=tmp_path)
    job = synthetic._Job(PRESETS["coco-micro"], 0, MICRO.confounding, "coco", tmp_path)
    order = {image_id: i for i, image_id in enumerate(synthetic._coco_image_ids(0, sum(MICRO.coco)))}
    agree = []
    for sample in ds.samples("val"):
        rendered = job.scene(job.rng(order[int(sample.id.rsplit("_", 1)[1])])).mask
        agree.append((ds.load_mask(sample) == rendered)[rendered > 0].mean())
    assert 0.98 < np.mean(agree) < 1.0


def _run_cam(root, out, settings):
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, ["run", "cam", "--dataset", "coco", "--root", str(root), *sets,
                                   "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["dataset"] == "coco"
    assert record["protocols"] == {"seed_miou": "irn", "pseudo_miou": "irn", "seg_miou": "deeplab"}
    for key in ("seed_miou", "pseudo_miou", "seg_miou"):
        assert 0 < record[key] <= 100
    return record


def test_run_cam_on_the_coco_layout(tmp_path):
    """Fast variant: a 60-image COCO-layout folder through classifier, seeds, CRF masks and DeepLab."""
    generate(tmp_path / "micro", "coco-micro")
    _run_cam(tmp_path / "micro", tmp_path / "runs", FAST)


@pytest.mark.slow
def test_run_cam_on_coco_tiny(coco_tiny, tmp_path):
    """The whole preset with the default protocol, one classifier epoch and a short DeepLab."""
    _run_cam(coco_tiny, tmp_path / "runs", {"cls_epochs": "1", "cam_scales": "1.0", "cam_flip": "false",
                                            "seg_iterations": "20"})


def test_synthetic_reader_points_to_the_coco_reader(tmp_path):
    with pytest.raises(UserError, match="read it with --dataset coco --root DIR"):
        get_dataset("synthetic", root=tmp_path, preset="coco-tiny")
