"""`wsssbench cache list|clean`: done, building and orphaned stages told apart; clean removes only the orphans."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from wsssbench.cli import app
from wsssbench.stages import cache


def _invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_list_and_clean(tmp_path):
    root = tmp_path / "runs" / "cache"
    done, _ = cache.cached(root, "cams", {"a": 1}, lambda tmp: (tmp / "x.npz").write_bytes(b"0" * 1000))
    orphan = root / ".expand-0123456789abcdef.tmp"          # an interrupted run's temporary
    orphan.mkdir()
    (orphan / "part.png").write_bytes(b"1" * 300)
    no_done = root / "segmenter-fedcba9876543210"           # a folder without DONE (older layout)
    no_done.mkdir()
    building = root / "classifier-00112233aabbccdd"
    with cache._stage_lock(building) as held:               # a live run building this stage
        assert held
        building.with_name(f".{building.name}.tmp").mkdir()
        res = _invoke("cache", "list", "--out", str(tmp_path / "runs"), "--json")
        assert res.exit_code == 0, res.output
        got = {s["name"]: (s["state"], s["bytes"]) for s in json.loads(res.stdout)["stages"]}
        done_bytes = sum(f.stat().st_size for f in done.iterdir())          # x.npz, key.json, DONE
        assert got == {done.name: ("done", done_bytes), "expand-0123456789abcdef": ("orphaned", 300),
                       no_done.name: ("orphaned", 0), building.name: ("building", 0)}
        res = _invoke("cache", "clean", "--out", str(tmp_path / "runs"), "--json")
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert sorted(r["name"] for r in out["removed"]) == ["expand-0123456789abcdef", no_done.name]
        assert out["freed_bytes"] == 300
    assert done.is_dir() and cache.is_done(done) and not orphan.exists() and not no_done.exists()
    assert building.with_name(f".{building.name}.tmp").is_dir()     # a live run's folder is never touched
    res = _invoke("cache", "clean", "--out", str(tmp_path / "runs"))
    assert res.exit_code == 0 and "1 orphaned stage folders removed" in res.stdout   # the builder has died now


def test_an_empty_or_missing_folder_and_a_file(tmp_path):
    res = _invoke("cache", "list", "--out", str(tmp_path / "none"), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["stages"] == []
    (tmp_path / "f").write_text("x")
    res = _invoke("cache", "clean", "--out", str(tmp_path / "f"))
    assert res.exit_code == 2 and "is a file, not a runs folder" in res.stderr
