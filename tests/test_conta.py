"""CONTA: Eq. 3 against a plain loop, [X, M_t] at every block, the confounder set, rounds end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import torch

from harness_standins import SquaresDataset
from wsssbench import harness
from wsssbench.errors import UserError
from wsssbench.methods import conta
from wsssbench.methods_api import METHODS, Context, make_config, stage_fields
from wsssbench.models import CAMClassifier, build_backbone

torch.set_num_threads(1)
FAST = {"cls_epochs": "1", "cls_size": "40", "cam_scales": "1.0", "cam_flip": "false", "seg_iterations": "6",
        "seg_size": "40", "seg_batch_size": "4", "conta_size": "8"}


def eq3_loop(xm, confounders, prior, w1, b1, w2, b2, embed):
    """Eq. 3 written out: per image, the similarity to every c_i, the softmax over i, the prior-weighted sum."""
    n = len(confounders)
    out = []
    for x in xm:
        q = [sum(w1[e][j] * x[j] for j in range(len(x))) + b1[e] for e in range(len(w1))]
        sims = []
        for c in confounders:
            k = [sum(w2[e][j] * c[j] for j in range(len(c))) + b2[e] for e in range(len(w2))]
            sims.append(sum(qe * ke for qe, ke in zip(q, k)) / math.sqrt(embed))
        top = max(sims)
        alpha = [math.exp(s - top) for s in sims]
        alpha = [a / sum(alpha) for a in alpha]
        out.append([sum(alpha[i] * prior[i] * confounders[i][j] for i in range(n)) for j in range(len(x))])
    return out


@pytest.mark.parametrize("attention", ["code", "paper"])
def test_eq3_matches_a_plain_loop(attention):
    adjustment, _ = conta.make_modules()
    rng = np.random.default_rng(0)
    confounders = rng.random((3, 2, 2)).astype(np.float32)        # n = 3 classes, h = w = 2
    prior = np.full(3, 1 / 3, np.float32)
    adj = adjustment(confounders, prior, attention)
    assert adj.embed == (4 if attention == "code" else 3)          # m_t.py: n + 1 outputs; Eq. 3: n
    assert (adj.W1.bias is not None) == (attention == "code")
    with torch.no_grad():                                          # weights large enough for a peaked softmax
        for lin in (adj.W1, adj.W2):
            lin.weight.copy_(torch.from_numpy(rng.normal(0, 1.5, lin.weight.shape).astype(np.float32)))
            if lin.bias is not None:
                lin.bias.copy_(torch.from_numpy(rng.normal(0, 0.5, lin.bias.shape).astype(np.float32)))
    xm = rng.random((2, 4)).astype(np.float32)
    got = adj(torch.from_numpy(xm)).detach().numpy()
    b1 = adj.W1.bias.tolist() if adj.W1.bias is not None else [0.0] * adj.embed
    b2 = adj.W2.bias.tolist() if adj.W2.bias is not None else [0.0] * adj.embed
    want = eq3_loop(xm.tolist(), confounders.reshape(3, -1).tolist(), prior.tolist(), adj.W1.weight.tolist(), b1,
                    adj.W2.weight.tolist(), b2, adj.embed)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    alpha = adj.attention(torch.from_numpy(xm)).detach()
    assert torch.allclose(alpha.sum(1), torch.ones(2)) and alpha.max() > 0.5   # a softmax over the classes
    # the prior weights the sum: doubling it doubles M
    adj.prior.mul_(2)
    np.testing.assert_allclose(adj(torch.from_numpy(xm)).detach().numpy(), 2 * got, rtol=1e-6)


def test_initialisation_follows_m_t_py():
    adjustment, _ = conta.make_modules()
    torch.manual_seed(0)
    adj = adjustment(np.zeros((20, 32, 32), np.float32), np.full(20, 0.05, np.float32))
    assert adj.W1.weight.shape == (21, 1024)                       # VOC: embedding_size 21
    assert abs(adj.W1.weight.std().item() - 0.02) < 1e-3 and adj.W1.bias.abs().max() == 0


def _models(block: str, adjusted: bool = True):
    _, classifier = conta.make_modules()
    adjustment, _ = conta.make_modules()
    torch.manual_seed(0)
    base = CAMClassifier(build_backbone("small", output_stride=8), 2)
    rng = np.random.default_rng(1)
    adj = adjustment(rng.random((2, 4, 4)).astype(np.float32), np.full(2, 0.5, np.float32)) if adjusted else None
    return base, classifier(base, adj, conta.BLOCKS[block], (4, 4))


def _inputs(n=2, size=32):
    torch.manual_seed(2)
    x = torch.randn(n, 3, size, size)
    xm = (torch.rand(n, 1, size, size) > 0.5).float()
    where = torch.from_numpy(conta.image_frame(size, size)).permute(2, 0, 1)[None].repeat(n, 1, 1, 1)
    return x, xm, where


@pytest.mark.parametrize("block", ["2", "3", "4", "5", "dense"])
def test_context_enters_each_block_and_gradients_reach_w1_w2(block):
    base, model = _models(block)
    x, xm, where = _inputs()
    # zero-initialised injection: round t+1 starts from the baseline's network exactly
    assert torch.equal(model.cams(x, xm, where), base.cams(x))
    assert set(model.classifier_inject) == {str(b) for b in conta.BLOCKS[block]}
    for b, conv in model.classifier_inject.items():
        assert conv.weight.shape == (model.backbone.stage_channels[int(b) - 1], 1, 1, 1)
        torch.nn.init.constant_(conv.weight, 0.1)
    cams = model.cams(x, xm, where)
    assert cams.shape == base.cams(x).shape and not torch.equal(cams, base.cams(x))
    model.zero_grad()
    torch.nn.functional.multilabel_soft_margin_loss(model(x, xm, where), torch.tensor([[1., 0.], [1., 1.]])).backward()
    for name in ("W1", "W2"):
        grad = getattr(model.classifier_context, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the new layers train at the head's 10x learning rate (IRN's rule for fresh layers)
    from wsssbench.stages.train_classifier import param_groups
    head = {id(p) for p in param_groups(model, 0.1, 0.0)[1]["params"]}
    assert all(id(p) in head for n, p in model.named_parameters() if n.startswith("classifier_"))


def test_context_map_follows_the_crop_and_flip():
    _, model = _models("5")
    x, xm, where = _inputs(n=1)
    full = model.context_map(xm, where)
    canonical = model.classifier_context(torch.nn.functional.interpolate(xm, size=(4, 4), mode="area").flatten(1))
    want = torch.nn.functional.interpolate(canonical.view(1, 1, 4, 4), size=(32, 32), mode="bilinear",
                                           align_corners=False)
    assert torch.allclose(full, want, atol=1e-6)                   # the full frame: M upsampled
    # the flipped image with its flipped coordinates sees M flipped (X_m's vector is that of the view)
    flipped = model.context_map(xm, where.flip(-1))
    assert torch.allclose(flipped, full.flip(-1), atol=1e-6)
    # padding (inside = 0) carries no context
    where[:, 2, :, :8] = 0
    assert model.context_map(xm, where)[..., :8].abs().max() == 0


def test_mt_seg_mask_feeds_the_mask_itself():
    _, model = _models("5", adjusted=False)
    x, xm, where = _inputs()
    assert torch.equal(model.context_map(xm, where), xm)


def test_confounder_set_from_hand_made_masks():
    acc = conta.ConfounderSet(num_fg=3, size=(2, 2))
    a = np.zeros((4, 4), np.uint8)
    a[:2, :2] = 1                       # class 1 top-left quarter
    a[2:, :] = 255                      # ignore counts as not-the-class
    b = np.full((4, 4), 1, np.uint8)    # class 1 everywhere, class 3 labelled but absent from the mask
    acc.update(a, [1], has_background=True)
    acc.update(b, [1, 3], has_background=True)
    c = acc.compute()
    np.testing.assert_allclose(c[0], [[1.0, 0.5], [0.5, 0.5]])   # mean of {TL quarter, everywhere}
    assert c[1].max() == 0 and c[2].max() == 0 and acc.count.tolist() == [2, 0, 1]
    np.testing.assert_allclose(acc.prior("uniform"), [1 / 3] * 3)
    np.testing.assert_allclose(acc.prior("frequency"), [2 / 3, 0, 1 / 3])


def test_image_frame_and_foreground():
    f = conta.image_frame(2, 4)
    assert f.shape == (2, 4, 3) and f[0, :, 0].tolist() == [-0.75, -0.25, 0.25, 0.75] and f[:, 0, 1].tolist() == [-0.5, 0.5]
    assert conta.foreground(np.array([[0, 1], [255, 3]], np.uint8)).tolist() == [[0, 1], [0, 1]]


# ---------------------------------------------------------------------------------------------- settings

def test_settings_are_checked_and_expansion_follows_the_base():
    m = METHODS.get("conta")
    assert make_config(m, {}).expansion == "rw" and make_config(m, {}).rounds == 3
    assert make_config(m, {"base": "cam"}).expansion == "crf"
    assert make_config(m, {"base": "cam", "expansion": "none"}).expansion == "none"
    dsrg = make_config(m, {"base": "dsrg"})     # DSRG's own settings, round 2 (appendix 4.1, 4.2)
    assert (dsrg.rounds, dsrg.seg_optimizer, dsrg.seg_lr_step) == (2, "dsrg", 0)
    assert make_config(m, {"base": "dsrg", "rounds": "3"}).rounds == 3
    sec = make_config(m, {"base": "sec"})       # SEC's own settings, round 3 (appendix 4.1)
    assert (sec.rounds, sec.seg_optimizer, sec.seg_lr_step) == (3, "sec", 300)
    assert make_config(m, {"base": "sec", "rounds": "2"}).rounds == 2
    # every baseline setting is the base's own unless set: round 0 is the base run alone
    seam, base = make_config(m, {"base": "seam"}), make_config(METHODS.get("seam"), {})
    assert all(getattr(seam, f) == getattr(base, f) for f in ("seed_alpha", "seed_protocol", "pseudo_protocol",
                                                             "expansion", "cam_scales", "cls_lr"))
    assert make_config(m, {"base": "seam", "seed_alpha": "4"}).seed_alpha == 4 and seam.rounds == 3
    for key, value in (("base", "deeplab"), ("block", "6"), ("mt", "x"), ("confounder", "gt"),
                       ("conta_attention", "both"), ("conta_prior", "x"), ("conta_size", "0")):
        with pytest.raises(UserError, match=f"--set {key}={value}"):
            make_config(m, {key: value})


def test_ablation_settings_are_keyed_from_round_one_and_base_from_round_zero():
    m = METHODS.get("conta")
    cfg = make_config(m, {})
    for name in ("block", "mt", "confounder", "conta_size", "conta_attention", "conta_prior"):
        assert name not in stage_fields(cfg, "classifier", m) and name in stage_fields(cfg, "next_round", m)
    assert "base" in stage_fields(cfg, "classifier", m)


# ---------------------------------------------------------------------------------------------- end to end

def built(out: Path) -> set[str]:
    return {p.name for p in (out / "cache").iterdir() if not p.name.startswith(".")}


@pytest.fixture
def squares(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    return ds


def test_two_rounds_end_to_end_round_zero_is_the_baseline(squares, tmp_path):
    out = tmp_path / "runs"
    over = {**FAST, "base": "cam", "rounds": "2"}
    rec = harness.run_method("conta", overrides=over, out=out)
    assert [r["round"] for r in rec.rounds] == [0, 1, 2]
    assert {k: rec.rounds[-1][k] for k in rec.metrics} == rec.metrics
    assert json.loads(Path(rec.artifacts["record"]).read_text())["rounds"] == rec.rounds
    assert Path(rec.artifacts["rounds_figure"]).is_file()
    with Image.open(rec.artifacts["rounds_masks_figure"]) as fig:     # image, GT, then 2 panels per round
        assert fig.width == 80 * 2 * (2 + 2 * 3)
    # round 0 is the baseline itself: the same numbers as the base method run alone
    base = harness.run_method("cam", overrides={k: v for k, v in FAST.items() if k != "conta_size"},
                              out=tmp_path / "base")
    assert {k: rec.rounds[0][k] for k in base.metrics} == base.metrics
    # round inputs: the confounder set (n, h, w) with its figure, and X_m for train and val
    r2 = sorted((out / "cache").glob("round2-inputs-*"))[0]
    with np.load(r2 / "confounders.npz") as z:
        assert z["confounders"].shape == (2, 8, 8) and np.allclose(z["prior"], 0.5)
        assert 0 < z["confounders"].max() <= 1
    assert (r2 / "confounders.png").is_file() and (r2 / "m_round1.png").is_file()
    assert {p.stem for p in (r2 / "xm").iterdir()} == {s.id for s in squares.samples("train") + squares.samples("val")}
    # compare reads any round of the record: its metrics and that round's artifacts
    from wsssbench.compare import at_round, compare
    saved = json.loads(Path(rec.artifacts["record"]).read_text())
    r0 = at_round(saved, 0)
    assert r0["metrics"] == base.metrics and Path(r0["artifacts"]["predictions"]).is_dir()
    diff = compare([r0], [at_round(saved, 2)], dataset=squares, resamples=200)
    assert diff["seg_miou"]["delta"] == pytest.approx(rec.rounds[2]["seg_miou"] - rec.rounds[0]["seg_miou"])
    assert diff["seg_miou"]["image_bootstrap"] is not None
    with pytest.raises(UserError, match="no round 5 in its record"):
        at_round(saved, 5)
    # the ablations keep round 0 and rebuild from round 1
    before = built(out)
    harness.run_method("conta", overrides={**over, "rounds": "1", "block": "dense"}, out=out)
    added = built(out) - before
    assert {n.rsplit("-", 1)[0] for n in added} == {"round1-inputs", "classifier", "cams", "eval-seeds", "expand",
                                                    "eval-pseudo", "segmenter", "eval-segmentation"}
    assert sum(n.startswith("classifier-") for n in added) == 1     # round 0's classifier is shared


def test_confounder_from_pseudo_masks_and_mt_seg_mask_run(squares, tmp_path):
    out = tmp_path / "runs"
    for extra in ({"confounder": "pseudo_mask"}, {"mt": "seg_mask"}):
        rec = harness.run_method("conta", overrides={**FAST, "base": "cam", "rounds": "1", **extra}, out=out)
        assert len(rec.rounds) == 2 and all(0 <= r["seg_miou"] <= 100 for r in rec.rounds)


def test_conta_needs_the_segmenter(squares, tmp_path):
    with pytest.raises(UserError, match="keep seg_enabled=true"):
        harness.run_method("conta", overrides={**FAST, "seg_enabled": "false"}, out=tmp_path / "r")


def test_missing_x_m_is_one_line(squares, tmp_path):
    ctx = Context(make_config(METHODS.get("conta"), {}), squares, round=1, inputs={"xm": tmp_path})
    with pytest.raises(UserError, match="no segmentation prediction .* for image train_000"):
        conta.extra_inputs(ctx, squares.samples("train")[0])


# ---------------------------------------------------------------------------------------------- COCO

def coco_layout(top: Path, ds: SquaresDataset) -> Path:
    """The squares stand-in written in MS-COCO 2014's official layout (JPEGs, instances JSON with RLE)."""
    from pycocotools import mask as mask_utils
    cats = [{"id": 1, "name": "red"}, {"id": 3, "name": "blue"}]      # sparse ids, as COCO's
    for split, folder in (("train", "train2014"), ("val", "val2014")):
        images, anns = [], []
        for i, sample in enumerate(ds.samples(split), start=1):
            name = f"COCO_{folder}_{i:012d}.jpg"
            (top / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.load_image(sample)).save(top / folder / name, quality=95)
            mask = ds.load_mask(sample)
            images.append({"id": i, "file_name": name, "height": mask.shape[0], "width": mask.shape[1]})
            for label in sample.labels:
                rle = mask_utils.encode(np.asfortranarray((mask == label).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cats[label - 1]["id"], "iscrowd": 0,
                             "segmentation": rle, "area": int((mask == label).sum()), "bbox": [0, 0, 1, 1]})
        (top / "annotations").mkdir(parents=True, exist_ok=True)
        (top / "annotations" / f"instances_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return top


def test_run_conta_on_a_coco_layout(tmp_path):
    from typer.testing import CliRunner

    from wsssbench.cli import app
    root = coco_layout(tmp_path / "coco", SquaresDataset(tmp_path / "squares", n=16))
    sets = [a for k, v in {**FAST, "base": "cam", "rounds": "1"}.items() for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, ["run", "conta", "--dataset", "coco", "--root", str(root), *sets,
                                   "--out", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["dataset"] == "coco" and [r["round"] for r in out["rounds"]["0"]] == [0, 1]
    with np.load(next((tmp_path / "runs" / "cache").glob("round1-inputs-*")) / "confounders.npz") as z:
        assert z["class_names"].tolist() == ["red", "blue"] and z["confounders"].shape == (2, 8, 8)
    # no COCO there: where to put it, exit 2, one line per layout entry and no traceback
    res = CliRunner().invoke(app, ["run", "conta", "--dataset", "coco", "--root", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no MS-COCO 2014 layout found" in res.stderr and "train2014/" in res.stderr


@pytest.mark.slow
def test_table_a1_runs_every_row_on_the_stand_in(squares, tmp_path):
    """`table A1 --run`: the IRNet baseline, one multi-round run for the Round rows, the block, Q1 and Q4
    ablations; reported beside reproduced with the protocol; ablations share round 0 (one base classifier)."""
    from typer.testing import CliRunner

    from wsssbench.cli import app
    sets = [a for k, v in {**FAST, "rw_epochs": "1", "rw_train_images": "8"}.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["table", "A1", "--run", "--dataset", "synthetic", *sets, "--runs", str(out),
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in json.loads(res.stdout)["rows"]}
    ours = {label: r["cells"]["CAM"].get("reproduced") for label, r in rows.items() if r["runnable"]}
    assert set(ours) >= {"Baseline∗ [1]", "Round = 1", "Round = 4", "Block-2", "Dense", "CPseudo-Mask", "CSeg. Mask"}
    assert all(v is not None and v["n"] == 1 for v in ours.values()), ours
    rounds = [ours[f"Round = {r}"]["mean"] for r in range(1, 5)]
    assert ours["Block-5"]["mean"] == rounds[2]          # block 5 = the default: its 3-round run is Round = 3
    assert ours["CSeg. Mask"]["mean"] == rounds[2]
    assert not rows["Upperbound [14]"]["runnable"]
    # one round-0 classifier for every conta row, one for irnet; then one per distinct later round
    classifiers = [p for p in (out / "cache").glob("classifier-*")]
    assert len(classifiers) == 2 + 4 + 3 * 4 + 3 + 3   # rounds 1-4; blocks 2,3,4,dense x3; Q1 x3; Q4 x3


@pytest.mark.slow
def test_two_rounds_on_tiny(tmp_path):
    """`run conta --set base=cam rounds=2` on the embedded tiny benchmark: three rounds recorded, each with
    its numbers, context confusion and artifacts, every stage above the all-background floor."""
    from test_regression_tiny import background_floor

    rec = harness.run_method("conta", overrides={"base": "cam", "rounds": "2"}, out=tmp_path / "runs")
    assert [r["round"] for r in rec.rounds] == [0, 1, 2]
    saved = json.loads(Path(rec.artifacts["record"]).read_text())
    assert saved["rounds"] == rec.rounds and saved["dataset_preset"] == "tiny"
    for key, split in (("seed_miou", "train"), ("pseudo_miou", "train"), ("seg_miou", "val")):
        floor = background_floor(split, rec.protocols[key], tmp_path / "floor")
        assert all(r[key] > 2 * floor for r in rec.rounds), (key, floor, [r[key] for r in rec.rounds])
    for r in rec.rounds:
        assert 0 <= r["seg_context_confusion"] <= 100
        assert all(Path(p).is_dir() for p in r["artifacts"].values())
    for fig in ("rounds_figure", "rounds_masks_figure"):
        assert Path(rec.artifacts[fig]).is_file()
