"""torchrun DDP (wsssbench.distributed): two gloo processes on the CPU against one process.

Fast: the helpers in a 2-rank job — shards, sums, rank 0's flag, the stage cache across ranks, and one
DistributedDataParallel step on a global batch cut by RankSlices against one process's step on the whole
batch. Slow: ``run cam --nproc 2`` on ``tiny`` — CAM inference and every evaluation identical to one process
on the same classifier; training within the tolerance docs/scale.md gives.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

ENV = {**os.environ, "WSSSBENCH_THREADS": "1", "OMP_NUM_THREADS": "1"}

WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np, torch
    from wsssbench import distributed as dist
    from wsssbench.stages.cache import cached_ranks

    out = Path(sys.argv[1])
    dist.init("cpu")
    r = dist.rank()
    res = {"rank": r, "world": dist.world(), "shard": dist.shard(list(range(7))),
           "sum": dist.all_reduce_sum(np.arange(4, dtype=np.int64) * (r + 1)).tolist(),
           "fsum": dist.all_reduce_sum(torch.full((2,), 0.25 * (r + 1))).tolist(),
           "flag": dist.broadcast_flag(r == 0), "flag_other": dist.broadcast_flag(r == 1)}

    def build(tmp):
        for i in dist.shard(range(6)):
            (tmp / f"{i}.txt").write_text(str(r))
    folder, was = cached_ranks(out / "cache", "stage", {"k": 1}, build, collective=True)
    res["files"] = {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.suffix == ".txt"}
    res["was_cached"] = was
    res["cached_again"] = cached_ranks(out / "cache", "stage", {"k": 1}, build, collective=True)[1]
    res["main_only"] = sorted(p.name for p in cached_ranks(
        out / "cache", "alone", {"k": 2}, lambda tmp: (tmp / f"by{r}").write_text(""), collective=False)[0].iterdir())

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 2)
    (sel,) = list(dist.rank_slices([[0, 1, 2, 3]], 4, "batch"))
    res["slice"] = sel
    step = dist.ddp_step(None, model, lambda ctx, m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step(None, model, (x[sel], y[sel])).backward()
    opt.step()
    torch.save(model.state_dict(), out / f"model{r}.pt")
    (out / f"rank{r}.json").write_text(json.dumps(res))
""")


def torchrun(args: list[str], nproc: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_helpers_and_one_ddp_step_match_one_process(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    done = torchrun([str(tmp_path / "worker.py"), str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["shard"] for r in ranks] == [[0, 2, 4, 6], [1, 3, 5]]
    assert [r["slice"] for r in ranks] == [[0, 2], [1, 3]]
    for r in ranks:
        assert r["world"] == 2 and r["sum"] == [0, 3, 6, 9] and r["fsum"] == [0.75, 0.75]
        assert r["flag"] is True and r["flag_other"] is False       # rank 0's answer on every rank
        # one folder, each rank's shard in it, published once; then cached for both ranks
        assert r["files"] == {"0.txt": "0", "1.txt": "1", "2.txt": "0", "3.txt": "1", "4.txt": "0", "5.txt": "1"}
        assert r["was_cached"] is False and r["cached_again"] is True
        assert r["main_only"] == ["DONE", "by0", "key.json"]       # a non-collective build: rank 0 alone

    # one process, the whole batch: the same step
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    for r in (0, 1):
        got = torch.load(tmp_path / f"model{r}.pt", weights_only=True)
        for k, v in model.state_dict().items():
            assert not torch.equal(v, before[k])
            torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------- end to end
FAST = ["cls_epochs=1", "cls_size=40", "cam_scales=1.0", "cam_flip=false", "rw_epochs=1", "seg_iterations=6",
        "seg_size=40", "cls_batch_size=8", "rw_batch_size=4", "seg_batch_size=4"]
#: |1 process − 2 processes| allowed for what is trained (mIoU points; measured in docs/scale.md)
TOLERANCE = 8.0


def run_cam(out: Path, sets: list[str], nproc: int = 1, method: str = "cam") -> dict:
    args = ["run", method, "--preset", "tiny", "--out", str(out), "--json", *(a for s in sets for a in ("--set", s))]
    cmd = [sys.executable, "-m", "wsssbench", *args] + (["--nproc", str(nproc)] if nproc > 1 else [])
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def stage(out: Path, name: str) -> Path:
    (path,) = (out / "cache").glob(f"{name}-*")
    return path


def adopt(src: Path, out: Path, nproc: int) -> None:
    """The trained stage ``src`` copied into ``out``'s cache under the key an ``nproc``-rank run gives it (a
    training stage's key holds the world size above 1), so that run reuses this very model."""
    from wsssbench.stages.cache import key_hash, stage_dir
    key = json.loads((src / "key.json").read_text())
    assert src.name.endswith(key_hash(key))
    key.update({"world": nproc} if nproc > 1 else {})
    dst = stage_dir(out / "cache", src.name[:-17], key)
    shutil.copytree(src, dst)
    (dst / "key.json").write_text(json.dumps(key))


def npz_equal(a: Path, b: Path) -> bool:
    with np.load(a) as x, np.load(b) as y:
        return sorted(x.files) == sorted(y.files) and all(np.array_equal(x[k], y[k]) for k in x.files)


@pytest.mark.slow
def test_run_cam_on_two_processes(tmp_path):
    from wsssbench.data import get_dataset
    from wsssbench.metrics.segmentation import evaluate_masks, evaluate_seeds

    rw = FAST + ["expansion=rw"]
    one = run_cam(tmp_path / "one", rw)
    # two processes on the same trained classifier (its stage copied in): inference and scores identical
    adopt(stage(tmp_path / "one", "classifier"), tmp_path / "two", 2)
    two = run_cam(tmp_path / "two", rw, nproc=2)
    assert two["timings"]["0"]["classifier"] < 1            # cached
    cams1, cams2 = stage(tmp_path / "one", "cams"), stage(tmp_path / "two", "cams")
    files = sorted(p.relative_to(cams1) for p in cams1.rglob("*.npz"))
    assert files == sorted(p.relative_to(cams2) for p in cams2.rglob("*.npz")) and len(files) > 1000
    assert all(npz_equal(cams1 / f, cams2 / f) for f in files)
    assert two["seed_miou"] == one["seed_miou"]
    conf1, conf2 = stage(tmp_path / "one", "expand") / "confident", stage(tmp_path / "two", "expand") / "confident"
    assert all((conf1 / f.name).read_bytes() == f.read_bytes() for f in conf2.iterdir())   # CRF: sharded
    # affinity net and segmenter trained on two ranks: close, not equal
    for key in ("pseudo_miou", "seg_miou"):
        assert abs(two[key] - one[key]) <= TOLERANCE, (key, one[key], two[key])
    # the 2-rank evaluation (sharded, counts summed) is one process's evaluation of the same files
    ds, cfg = get_dataset("synthetic", preset="tiny"), two["config"]
    seeds = evaluate_seeds(ds, "train", cams2 / "train", threshold=cfg["seed_threshold"],
                           protocol=cfg["seed_protocol"], workers=1)
    pseudo = evaluate_masks(ds, "train", stage(tmp_path / "two", "expand") / "train",
                            protocol=cfg["pseudo_protocol"], workers=1)
    seg = evaluate_masks(ds, "val", stage(tmp_path / "two", "segmenter") / "pred", protocol=cfg["seg_protocol"],
                         workers=1)
    assert (seeds["miou"], pseudo["miou"], seg["miou"]) == (two["seed_miou"], two["pseudo_miou"], two["seg_miou"])

    # C2AM's Global CAM: images sharded, sums and counts all-reduced — identical
    gcam = FAST + ["expansion=none", "seg_enabled=false", "c2am_epochs=0", "c2am_gcam_scales=1.0"]
    for name, nproc in (("c2am1", 1), ("c2am2", 2)):
        adopt(stage(tmp_path / "one", "classifier"), tmp_path / name, nproc)
        run_cam(tmp_path / name, gcam, nproc, method="c2am")
    assert npz_equal(stage(tmp_path / "c2am1", "classifier-c2am") / "global_cam.npz",
                     stage(tmp_path / "c2am2", "classifier-c2am") / "global_cam.npz")

    # the classifier itself trained on two ranks (global batch 8 = 2 x 4): close to one process
    fresh = run_cam(tmp_path / "fresh", FAST + ["expansion=crf", "seg_enabled=false"], nproc=2)
    assert fresh["config"]["cls_batch_size"] == 8
    assert abs(fresh["seed_miou"] - one["seed_miou"]) <= TOLERANCE
    loss1 = json.loads((stage(tmp_path / "one", "classifier") / "log.json").read_text())["epoch_loss"]
    loss2 = json.loads((stage(tmp_path / "fresh", "classifier") / "log.json").read_text())["epoch_loss"]
    assert abs(loss2[0] - loss1[0]) <= 0.05 * loss1[0]
