"""The method API's foundations: cache keys that cannot go stale, segmentation-stage hooks, per-image
extra inputs, rounds as cached stages, methods built on methods. Toy methods live in a temporary
registry (never the global one)."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsssbench import harness
from wsssbench.errors import UserError
from wsssbench.methods_api import METHODS, CamConfig, ClassifierStage, Method, derive, hook_id, stage_fields
from wsssbench.registry import Registry
from wsssbench.stages.common import MEAN, STD, ImageLabels
from wsssbench.stages.train_classifier import multilabel_step
from wsssbench.stages.train_segmenter import cross_entropy_step

from harness_standins import SquaresDataset

torch.set_num_threads(1)
FAST = {"cls_epochs": "2", "cls_size": "40", "cam_scales": "1.0", "seg_iterations": "6", "seg_size": "40",
        "seg_batch_size": "4"}


@dataclass
class ToyConfig(CamConfig):
    block: int = 5              # no stage prefix: the classifier (and so everything after it) owns it
    cam_gain: float = 1.0       # the CAM stage's
    crf_gain: float = 1.0       # the expansion's
    seg_gain: float = 1.0       # the segmenter's
    toy_lr: float = 0.0         # the toy classifier stage's own prefix


def toy_refine(ctx, model, image, cams):
    return cams * ctx.cfg.cam_gain


def toy_stage(ctx, model, workdir):
    (workdir / "note.txt").write_text(str(ctx.cfg.toy_lr))


TOY = Method(name="toy", config=ToyConfig, summary="a toy", refine_cams=toy_refine,
             classifier_stages=(ClassifierStage("toy", "toy_", toy_stage),))


@pytest.fixture
def toys(tmp_path, monkeypatch):
    """A temporary method registry and the squares stand-in dataset behind ``run_method``."""
    registry = Registry("method")
    monkeypatch.setattr(harness, "METHODS", registry)
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    return registry


def built(out: Path) -> set[str]:
    """Stage folders in the cache, by name (stage-hash)."""
    return {p.name for p in (out / "cache").iterdir() if not p.name.startswith(".")}


def kinds(names: set[str]) -> set[str]:
    return {n.rsplit("-", 1)[0] for n in names}


# ---------------------------------------------------------------------------------------------- cache keys

def test_ownership_and_the_inverted_key_rule():
    cfg, order_method = ToyConfig(), TOY
    clf = stage_fields(cfg, "classifier", order_method)
    assert "block" in clf and "cls_lr" in clf and "backbone" in clf        # unclaimed fields: the classifier's
    assert not {"cam_gain", "toy_lr", "crf_gain", "seg_gain", "rounds", "seed_threshold"} & set(clf)
    assert "toy_lr" in stage_fields(cfg, "toy", order_method)
    assert {"block", "cam_gain"} <= set(stage_fields(cfg, "cams", order_method))
    seg = stage_fields(cfg, "segmenter", order_method)
    assert {"seg_gain", "crf_gain", "block"} <= set(seg) and "seg_protocol" not in seg   # scoring is not training
    assert "rounds" not in stage_fields(cfg, "next_round", order_method)
    with pytest.raises(KeyError, match="no stage 'bogus'"):
        stage_fields(cfg, "bogus")


def test_hook_ids_tell_partials_and_callable_instances_apart():
    @dataclass(frozen=True)
    class Scaled:
        factor: float

        def __call__(self, ctx, model, image, cams):
            return cams * self.factor

    assert hook_id(Scaled(2.0)) != hook_id(Scaled(3.0))
    assert hook_id(Scaled(2.0)) == hook_id(Scaled(2.0))
    assert hook_id(functools.partial(toy_refine)) != hook_id(functools.partial(toy_refine, gain=2))
    assert hook_id(functools.partial(toy_refine, gain=2)) == hook_id(functools.partial(toy_refine, gain=2))
    assert hook_id(toy_refine) == f"{__name__}.toy_refine"
    assert hook_id(None) is None


def test_changing_a_field_rebuilds_exactly_the_stages_after_its_owner(toys, tmp_path):
    toys.add("toy", TOY)
    out = tmp_path / "runs"
    over = {**FAST, "expansion": "crf"}
    first = harness.run_method("toy", overrides=over, out=out)
    base = built(out)
    assert kinds(base) == {"classifier", "classifier-toy", "cams", "eval-seeds", "expand", "eval-pseudo",
                           "segmenter", "eval-segmentation"}
    expected = {   # field -> the stages a change must rebuild (everything else is reused)
        "block": {"classifier", "classifier-toy", "cams", "eval-seeds", "expand", "eval-pseudo", "segmenter",
                  "eval-segmentation"},
        "toy_lr": {"classifier-toy", "cams", "eval-seeds", "expand", "eval-pseudo", "segmenter",
                   "eval-segmentation"},
        "cam_gain": {"cams", "eval-seeds", "expand", "eval-pseudo", "segmenter", "eval-segmentation"},
        "crf_gain": {"expand", "eval-pseudo", "segmenter", "eval-segmentation"},
        "seg_gain": {"segmenter", "eval-segmentation"},
        "seed_threshold": {"eval-seeds"},
        "seg_protocol": {"eval-segmentation"},
    }
    values = {"block": "4", "toy_lr": "0.5", "cam_gain": "0.5", "crf_gain": "2", "seg_gain": "2",
              "seed_threshold": "0.3", "seg_protocol": "irn"}
    for name, stages in expected.items():
        before = built(out)
        rec = harness.run_method("toy", overrides={**over, name: values[name]}, out=out)
        assert kinds(built(out) - before) == stages, name
        if name == "cam_gain":      # the hook really reads it: the CAMs changed
            assert rec.artifacts["cams"] != first.artifacts["cams"]


def test_synthetic_key_is_the_resolved_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSSBENCH_DATA", str(tmp_path / "data"))
    from wsssbench.data import get_dataset
    a = harness.dataset_key("synthetic", get_dataset("synthetic"))
    b = harness.dataset_key("synthetic", get_dataset("synthetic", preset="tiny"))
    assert a == b and a["generation"]["preset"] == "tiny"


# ----------------------------------------------------------- segmentation hooks, extra inputs, rounds

def toy_extras(ctx, sample):
    """The image's normalised red channel (float: bilinear) and a column index map (integer: nearest)."""
    image = ctx.dataset.load_image(sample)
    red = (image[..., 0] / 255.0 - MEAN[0]) / STD[0]
    cols = np.broadcast_to(np.arange(image.shape[1], dtype=np.int32), image.shape[:2])
    return {"red": red.astype(np.float32), "cols": cols}


def toy_train_step(ctx, model, batch):
    # the extra input went through the same rescale, flip and crop as the image
    assert torch.allclose(batch["red"][:, 0], batch["image"][:, 0], atol=1e-5)
    assert batch["cols"].dtype == torch.int64 and batch["cols"].shape[-2:] == batch["image"].shape[-2:]
    return multilabel_step(ctx, model, batch)


def toy_seg_step(ctx, model, batch):
    """Cross-entropy plus a term on the CAM cues: the custom segmentation loss."""
    b, _, s, _ = batch["image"].shape
    assert batch["mask"].shape == (b, s, s) and batch["labels"].shape == (b, ctx.num_fg)
    assert batch["cams"].shape == (b, ctx.num_fg, s, s)
    assert torch.allclose(batch["red"][:, 0], batch["image"][:, 0], atol=1e-5)
    present = batch["cams"].flatten(2).amax(2) > 0
    assert torch.equal(present, present & (batch["labels"] > 0))     # cues only for labelled classes
    scores = F.interpolate(model(batch["image"]), size=(s, s), mode="bilinear", align_corners=False)
    cue = (F.softmax(scores, 1)[:, 1:] * batch["cams"]).mean()
    return cross_entropy_step(ctx, model, batch) - 0.1 * cue


def toy_next_round(ctx, artifacts, workdir):
    """Round t -> t+1: the mean predicted foreground of the training images (CONTA's confounder, in small)."""
    from PIL import Image
    preds = sorted(Path(artifacts["train_predictions"]).glob("*.png"))
    assert preds, "segment_train predicts the training images"
    share = float(np.mean([(np.array(Image.open(p)) > 0).mean() for p in preds]))
    (workdir / "prior.json").write_text(json.dumps({"round": ctx.round, "share": share}))
    return {"prior": workdir / "prior.json"}


def toy_build_classifier(ctx):
    from wsssbench.stages.train_classifier import build_cam_classifier
    if ctx.round == 0:
        assert not ctx.inputs
    else:
        assert json.loads(ctx.inputs["prior"].read_text())["round"] == ctx.round - 1
    return build_cam_classifier(ctx)


def test_custom_seg_loss_extra_inputs_and_three_rounds_end_to_end(toys, tmp_path):
    toys.add("rounds3", Method(name="rounds3", config=CamConfig, summary="three rounds",
                               build_classifier=toy_build_classifier, train_step=toy_train_step,
                               seg_step=toy_seg_step, extra_inputs=toy_extras, segment_train=True,
                               next_round=toy_next_round))
    out = tmp_path / "runs"
    over = {**FAST, "expansion": "crf", "rounds": "2", "cls_rescale": "0.7,1.3"}
    rec = harness.run_method("rounds3", overrides=over, out=out)
    assert [r["round"] for r in rec.rounds] == [0, 1, 2]
    for r in rec.rounds:
        assert set(r) == {"round", "seed_miou", "pseudo_miou", "seg_miou", "artifacts"}
    assert {k: rec.rounds[-1][k] for k in rec.metrics} == rec.metrics    # top level = the last round
    stages = sorted(built(out))
    assert [n.rsplit("-", 1)[0] for n in stages if n.startswith("round")] == ["round1-inputs", "round2-inputs"]
    assert sum(n.startswith("classifier-") for n in stages) == 3
    saved = json.loads(Path(rec.artifacts["record"]).read_text())
    assert saved["rounds"] == rec.rounds
    # a run with fewer rounds shares the rounds it has in common: nothing is trained again
    before = built(out)
    two = harness.run_method("rounds3", overrides={**over, "rounds": "1"}, out=out)
    assert built(out) == before and two.rounds == rec.rounds[:2]


def test_single_round_record_and_rounds_without_hook(toys, tmp_path):
    toys.add("cam", METHODS.get("cam"))
    over = {**FAST, "expansion": "none", "seg_enabled": "false"}
    rec = harness.run_method("cam", overrides=over, out=tmp_path / "r")
    assert rec.rounds == [{"round": 0, "seed_miou": rec.metrics["seed_miou"],
                           "pseudo_miou": rec.metrics["pseudo_miou"], "seg_miou": None,
                           "artifacts": {k: rec.artifacts[k] for k in ("cams", "masks")}}]
    with pytest.raises(UserError, match="needs a next_round hook"):
        harness.run_method("cam", overrides={**over, "rounds": "1"}, out=tmp_path / "r")


def test_seeds_by_power(toys, tmp_path):
    toys.add("cam", METHODS.get("cam"))
    over = {**FAST, "expansion": "none", "seg_enabled": "false"}
    by_threshold = harness.run_method("cam", overrides=over, out=tmp_path / "r")
    by_power = harness.run_method("cam", overrides={**over, "seed_alpha": "16"}, out=tmp_path / "r")
    assert by_power.artifacts["classifier"] == by_threshold.artifacts["classifier"]
    assert by_power.artifacts["masks"] != by_threshold.artifacts["masks"]     # "none": the masks are the seeds
    from wsssbench.metrics.segmentation import evaluate_seeds
    direct = evaluate_seeds(harness.get_dataset("x"), "train", Path(by_power.artifacts["cams"]) / "train", alpha=16.0)
    assert by_power.metrics["seed_miou"] == direct["miou"]


# -------------------------------------------------------------------------------- one method on another

def test_derive_carries_the_base_config_and_hooks():
    @dataclass
    class OnToy(ToyConfig):
        extra_weight: float = 0.5

    m = derive(TOY, name="on_toy", config=OnToy, summary="toy plus", seg_step=toy_seg_step)
    assert m.refine_cams is toy_refine and m.classifier_stages == TOY.classifier_stages
    assert m.seg_step is toy_seg_step and {"block", "extra_weight"} <= set(stage_fields(m.config(), "classifier", m))
    with pytest.raises(TypeError, match="must subclass"):
        derive(TOY, name="bad", config=CamConfig, summary="x")


def test_extra_inputs_follow_the_image_through_augmentation(tmp_path):
    ds = SquaresDataset(tmp_path / "data", n=4)
    from wsssbench.methods_api import Context
    ctx = Context(CamConfig(), ds)
    data = ImageLabels(ds, ds.samples("train"), 32, train=True, rescale=(0.5, 1.5),
                       extras=functools.partial(toy_extras, ctx))
    torch.manual_seed(0)
    for i in range(len(data)):
        item = data[i]
        assert torch.allclose(item["red"][0], item["image"][0], atol=1e-5)
    plain = ImageLabels(ds, ds.samples("train"), 32, train=True, rescale=(0.5, 1.5))
    torch.manual_seed(0)
    with_extras = [data[i]["image"] for i in range(len(data))]
    torch.manual_seed(0)
    assert all(torch.equal(a, plain[i]["image"]) for i, a in enumerate(with_extras))   # same RNG draws


def test_bad_extra_input_is_named(tmp_path):
    ds = SquaresDataset(tmp_path / "data", n=2)
    data = ImageLabels(ds, ds.samples("train"), 32, extras=lambda s: {"mask": np.zeros((40, 40))})
    with pytest.raises(ValueError, match="clashes"):
        data[0]
    data = ImageLabels(ds, ds.samples("train"), 32, extras=lambda s: {"sal": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="sal.*shape"):
        data[0]


def test_round_rows_read_one_multi_round_record():
    from wsssbench.tables import get_table, reproduce
    table = get_table("conta:1")
    rounds = [{"round": r, "seed_miou": 40.0 + r, "pseudo_miou": 50.0 + r, "seg_miou": 45.0 + r} for r in range(4)]
    record = {"method": "conta", "dataset": "synthetic", "dataset_preset": "tiny", "seed": 0, "pretrained": None,
              "config": {"base": "seam", "rounds": 3, "block": "5", "mt": "adjusted", "confounder": "seg_mask"}, "metrics": rounds[-1],
              "protocols": {"seed_miou": "seam", "pseudo_miou": "irn", "seg_miou": "deeplab"}, "rounds": rounds}
    rep = reproduce(table, [record])
    assert rep.summary("(Q2) / Round = 2", "seed_miou") == (42.0, 0.0, 1)
    assert rep.summary("(Q2) / Round = 3", "seg_miou") == (48.0, 0.0, 1)
    assert rep.summary("(Q2) / Round = 4", "seed_miou") is None          # the run stopped at round 3


@pytest.mark.parametrize("setting, message", [
    ("seed_threshold=nan", "not a finite number"), ("cls_lr=inf", "not a finite number"),
    ("seed_threshold=15", r"must be in \[0, 1\]"), ("rw_bg_threshold=-0.1", r"must be in \[0, 1\]"),
    ("seed_alpha=0", "must be positive"), ("cam_scales=1,-1", "must be positive"),
    ("seg_weight_decay=-1", "0 or more"), ("rounds=-1", "0 .the baseline alone. or more")])
def test_out_of_range_settings_are_refused_before_anything_runs(toys, tmp_path, setting, message):
    toys.add("cam", METHODS.get("cam"))
    key, value = setting.split("=")
    with pytest.raises(UserError, match=message):
        harness.run_method("cam", overrides={key: value}, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_progress_and_stage_lines_go_to_stderr(toys, tmp_path, capsys):
    toys.add("cam", METHODS.get("cam"))
    harness.run_method("cam", overrides={**FAST, "expansion": "none", "seg_enabled": "false"},
                       out=tmp_path / "r", progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "classifier" in captured.err
