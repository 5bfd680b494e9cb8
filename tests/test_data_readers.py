"""Every reader on a tiny fixture in its exact official layout: real JPEGs, palette PNGs, COCO json."""
import csv
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from wsssbench.data import DATASETS, get_dataset
from wsssbench.data.synthetic import voc_palette
from wsssbench.errors import UserError


def _jpeg(path, h, w, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, format="JPEG", quality=90)


def _palette_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(voc_palette())
    im.save(path)


# ------------------------------------------------------------------------------------------------ VOC

@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    masks = {}
    for i, id_ in enumerate(["2007_000032", "2007_000039", "2008_000002"]):
        _jpeg(root / "JPEGImages" / f"{id_}.jpg", 30, 40, seed=i)
        m = np.zeros((30, 40), np.uint8)
        m[5:15, 5:20] = i + 1                   # classes 1, 2, 3
        m[20:25, 30:35] = 15                    # person
        m[14, :] = 255                          # VOC's void boundary
        masks[id_] = m
        _palette_png(root / "SegmentationClass" / f"{id_}.png", m)
        aug = m.copy()
        aug[aug == 255] = 0                     # SBD's masks have no void
        (root / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
        Image.fromarray(aug, mode="L").save(root / "SegmentationClassAug" / f"{id_}.png")
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n2007_000039\n")
    (lists / "val.txt").write_text("2008_000002\n")
    (lists / "train_aug.txt").write_text("2007_000032\n2007_000039\n2008_000002\n")
    return tmp_path, masks


def test_voc_reads_palette_masks_and_labels(voc_root):
    top, masks = voc_root
    ds = get_dataset("voc", root=top)                   # finds VOCdevkit/VOC2012 below
    assert ds.num_classes == 21 and ds.split_names() == ("train", "train_aug", "val")
    train = ds.samples("train")
    assert [s.id for s in train] == ["2007_000032", "2007_000039"]
    assert [s.labels for s in train] == [(1, 15), (2, 15)]
    assert np.array_equal(ds.load_mask(train[1]), masks["2007_000039"])          # palette indices, 255 kept
    aug = ds.samples("train_aug")
    assert aug[0].mask.parent.name == "SegmentationClassAug" and 255 not in ds.load_mask(aug[0])
    assert ds.load_image(train[0]).shape == (30, 40, 3)


def test_voc_irn_cls_labels(voc_root):
    top, _ = voc_root
    root = top / "VOCdevkit" / "VOC2012"
    hot = np.zeros(20, np.float32)
    hot[[4, 14]] = 1
    np.save(root / "cls_labels.npy", {2007000032: hot})          # IRN's int-coded ids
    ds = get_dataset("voc", root=root)
    assert ds.samples("train")[0].labels == (5, 15)              # from the npy
    assert ds.samples("train")[1].labels == (2, 15)              # not in it: from the mask
    np.save(root / "cls_labels.npy", {2007000032: np.zeros(80)})
    with pytest.raises(UserError, match="cls_labels.npy: labels of 2007000032 have 80 entries"):
        get_dataset("voc", root=root)


def test_voc_bad_input(voc_root):
    top, _ = voc_root
    root = top / "VOCdevkit" / "VOC2012"
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").unlink()
    ds = get_dataset("voc", root=root)
    with pytest.raises(UserError, match="train_aug.txt: missing.*IRN"):
        ds.samples("train_aug")
    (root / "JPEGImages" / "2008_000002.jpg").unlink()
    with pytest.raises(UserError, match="2008_000002.jpg: image of '2008_000002'"):
        ds.samples("val")
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("2007_000032\n")
    (root / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(UserError, match="2007_000039.png: mask of"):
        ds.samples("train")
    bad = np.full((30, 40), 21, np.uint8)
    _palette_png(root / "SegmentationClass" / "2007_000039.png", bad)
    with pytest.raises(UserError, match="2007_000039.png: mask value 21 is outside the 21 classes"):
        ds.samples("train")
    (root / "JPEGImages" / "2007_000032.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="2007_000032.jpg: unreadable image"):
        ds.load_image(ds.samples("train_aug")[0])
    with pytest.raises(UserError, match="(?s)no VOC 2012 layout found.*JPEGImages"):
        get_dataset("voc", root=top / "nowhere")


# ------------------------------------------------------------------------------------------------ CUB

def test_cub_reads_official_txt_files(tmp_path):
    root = tmp_path / "CUB_200_2011"
    rels = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
            "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg"]
    for i, rel in enumerate(rels):
        _jpeg(root / "images" / rel, 50, 60, seed=i)
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (root / "images.txt").write_text("".join(f"{i + 1} {r}\n" for i, r in enumerate(rels)))
    (root / "image_class_labels.txt").write_text("1 1\n2 2\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n")
    (root / "bounding_boxes.txt").write_text("1 60.0 27.0 325.0 304.0\n2 10.5 20.0 30.0 15.0\n")
    ds = get_dataset("cub", root=tmp_path)
    assert ds.num_classes == 2 and not ds.has_background
    (test,) = ds.samples("test")
    assert test.id == rels[1] and test.labels == (1,) and test.boxes == ((10.5, 20.0, 40.5, 35.0),)
    assert ds.samples("train")[0].boxes == ((60.0, 27.0, 385.0, 331.0),)
    assert ds.load_image(test).shape == (50, 60, 3)


# ------------------------------------------------------------------------------------------------ COCO

def _coco_fixture(tmp_path, drop_categories=False):
    root = tmp_path / "coco"
    h, w = 20, 30
    images = [{"id": 9, "file_name": "COCO_val2014_000000000009.jpg", "height": h, "width": w},
              {"id": 3, "file_name": "COCO_val2014_000000000003.jpg", "height": h, "width": w},
              {"id": 5, "file_name": "COCO_val2014_000000000005.jpg", "height": h, "width": w}]
    for i, im in enumerate(images):
        _jpeg(root / "val2014" / im["file_name"], h, w, seed=i)
    # A compressed RLE of a known block.
    block = np.zeros((h, w), np.uint8, order="F")
    block[2:8, 3:12] = 1
    rle = mask_utils.encode(np.asfortranarray(block))
    rle["counts"] = rle["counts"].decode()
    # An uncompressed RLE (column-major runs): column 20 rows 0..19 = 20 zeros * 20 cols, then 20 ones.
    runs = {"size": [h, w], "counts": [20 * 20, 20, 20 * 9]}
    anns = [
        # image 9: polygon (category 90 -> 3), then RLE block (category 1 -> 1) drawn over part of it,
        # then a crowd annotation (category 3 -> 2) that must stay background, and the uncompressed RLE.
        {"id": 1, "image_id": 9, "category_id": 90, "iscrowd": 0,
         "segmentation": [[0.0, 0.0, 15.0, 0.0, 15.0, 10.0, 0.0, 10.0]], "area": 150, "bbox": [0, 0, 15, 10]},
        {"id": 2, "image_id": 9, "category_id": 1, "iscrowd": 0, "segmentation": rle, "area": 54,
         "bbox": [3, 2, 9, 6]},
        {"id": 3, "image_id": 9, "category_id": 3, "iscrowd": 1, "segmentation": runs, "area": 20,
         "bbox": [20, 0, 1, 20]},
        {"id": 4, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": runs, "area": 20,
         "bbox": [20, 0, 1, 20]},
    ]
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}]
    data = {"images": images, "annotations": anns}
    if not drop_categories:
        data["categories"] = cats
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    return tmp_path, block


def test_coco_recam_recipe(tmp_path):
    top, block = _coco_fixture(tmp_path)
    ds = get_dataset("coco", root=top)
    assert ds.class_names == ("background", "person", "car", "toothbrush") and ds.split_names() == ("val",)
    samples = ds.samples("val")
    assert [s.id for s in samples] == ["COCO_val2014_000000000003", "COCO_val2014_000000000005",
                                       "COCO_val2014_000000000009"]          # increasing image id
    # Labels: every annotation's category, crowd included (car = 2), ids compacted (90 -> 3).
    assert [s.labels for s in samples] == [(1,), (), (1, 2, 3)]
    m3, m5, m9 = (ds.load_mask(s) for s in samples)
    expected3 = np.zeros((20, 30), np.uint8)
    expected3[:, 20] = 1                                  # the uncompressed RLE: column 20
    assert np.array_equal(m3, expected3)
    assert not m5.any() and m5.shape == (20, 30)          # no annotation: an all-background mask
    assert set(np.unique(m9)) == {0, 1, 3}                # crowd (car) never painted, no 255
    assert (m9[block == 1] == 1).all()                    # the later RLE overwrote the polygon
    assert m9[9, 14] == 3 and m9[0, 0] == 3 and m9[15, 0] == 0
    assert (m9[:, 20] == 0).all()                         # crowd pixels stay background


def test_coco_bad_input(tmp_path):
    top, _ = _coco_fixture(tmp_path, drop_categories=True)
    with pytest.raises(UserError, match="instances_val2014.json: has no `categories`"):
        get_dataset("coco", root=top)
    with pytest.raises(UserError, match="no MS-COCO 2014 layout found"):
        get_dataset("coco", root=tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ ILSVRC

def test_ilsvrc_val_several_boxes(tmp_path):
    root = tmp_path
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    with open(root / "LOC_val_solution.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        w.writerow(["ILSVRC2012_val_00000002", "n01443537 10 20 30 40 n01443537 1 2 3 4 "])
        w.writerow(["ILSVRC2012_val_00000001", "n01440764 0 0 9 9 "])
    val = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    for n in (1, 2):
        _jpeg(val / f"ILSVRC2012_val_0000000{n}.JPEG", 16, 16, seed=n)
    train = root / "ILSVRC" / "Data" / "CLS-LOC" / "train"
    _jpeg(train / "n01440764" / "n01440764_18.JPEG", 16, 16)
    (train / "n01443537").mkdir()
    ds = get_dataset("ilsvrc", root=root)
    assert ds.num_classes == 2 and ds.class_names[1] == "goldfish, Carassius auratus"
    s1, s2 = ds.samples("val")
    assert s1.id == "val/ILSVRC2012_val_00000001.JPEG" and s1.labels == (0,)
    assert s2.labels == (1,) and s2.boxes == ((10.0, 20.0, 30.0, 40.0), (1.0, 2.0, 3.0, 4.0))
    assert ds.load_image(s2).shape == (16, 16, 3)
    (t,) = ds.samples("train")
    assert t.id == "train/n01440764/n01440764_18.JPEG" and t.labels == (0,) and t.boxes == ()
    with open(root / "LOC_val_solution.csv", "a") as f:
        f.write("ILSVRC2012_val_00000003,n09999999 1 2 3 4\n")
    with pytest.raises(UserError, match="LOC_val_solution.csv:4: synset n09999999"):
        get_dataset("ilsvrc", root=root).samples("val")


def test_registry_lists_every_reader():
    assert {"voc", "coco", "cub", "ilsvrc", "synthetic", "synthetic-loc"} <= set(DATASETS.names())
