"""The package skeleton: registries, atomic writes, run records, the CLI's exit codes."""
import json

import pytest
from typer.testing import CliRunner

from wsssbench import code_version, records
from wsssbench.cli import app
from wsssbench.errors import UserError
from wsssbench.io import atomic_path, write_json
from wsssbench.registry import Registry


def test_registry_duplicate_and_unknown():
    reg = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError):
        reg.add("a", 2)
    with pytest.raises(UserError, match="known: a"):
        reg.get("b")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}


def test_record_roundtrip_and_validation(tmp_path):
    rec = records.RunRecord(method="cam", dataset="synthetic", dataset_preset="tiny", config={"lr": 0.1},
                            seed=0, metrics={"seed_miou": 50.0}, protocols={"seed_miou": "irn"}, pretrained=None)
    path = rec.write(tmp_path / "r.json")
    assert records.load(path)["metrics"] == {"seed_miou": 50.0}
    bad = rec.to_dict() | {"protocols": {}}
    assert any("names no protocol" in p for p in records.validate(bad))
    assert code_version()


def test_cli_help_lists_groups():
    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0
    for group in ("eval", "data", "leaderboard"):
        assert group in out.output


def test_record_folder_skips_temporaries_and_reports_truncated_records(tmp_path, capsys):
    rec = records.RunRecord(method="cam", dataset="synthetic", dataset_preset="tiny", config={"lr": 0.1},
                            seed=0, metrics={"seed_miou": 50.0}, protocols={"seed_miou": "irn"}, pretrained=None)
    rec.write(tmp_path / "cam" / "a.json")
    text = (tmp_path / "cam" / "a.json").read_text()
    (tmp_path / "cam" / ".a.json.x1y2.json").write_text(text)        # an atomic writer's leftover
    (tmp_path / "cam" / "b.json").write_text(text[: len(text) // 2])  # truncated by a crash
    assert [r["seed"] for r in records.load_dir(tmp_path)] == [0]   # one run, not two (or three)
    err = capsys.readouterr().err
    assert "b.json" in err and ".a.json" not in err and len(err.strip().splitlines()) == 1


def test_a_second_run_waits_for_the_stage_another_process_builds(tmp_path, capsys):
    import subprocess
    import sys
    import textwrap

    from wsssbench.stages.cache import DONE, cached, stage_dir
    key = {"a": 1}
    final = stage_dir(tmp_path, "classifier", key)
    holder = textwrap.dedent(f"""
        import fcntl, os, sys, time
        from pathlib import Path
        final = Path({str(final)!r})
        fh = open(final.with_name("." + final.name + ".lock"), "a+")
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(str(os.getpid())); fh.flush()
        print("locked", flush=True)
        time.sleep(1.0)
        final.mkdir(parents=True)
        (final / {DONE!r}).write_text("")
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"

    def build(tmp):
        raise AssertionError("the stage was built twice")
    path, was_cached = cached(tmp_path, "classifier", key, build)
    proc.wait(timeout=30)
    assert (path, was_cached) == (final, True)
    assert f"PID {proc.pid}" in capsys.readouterr().err


def test_the_method_api_imports_without_torch():
    """Listing methods, tables and configs must not pay for torch (a subprocess: this one has it loaded)."""
    import subprocess
    import sys
    code = "import sys, wsssbench.methods_api as m; assert 'torch' not in sys.modules, 'torch'; print(len(m.METHODS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 3


def test_a_method_module_imported_first_finds_the_methods_it_builds_on():
    # c2am imports cam, whose import of the API must not discover dsrg (built on cam's recipe) while cam is
    # half-imported; the registry discovers on its first look-up instead
    import subprocess
    import sys
    code = ("import importlib, sys; importlib.import_module(sys.argv[1]); "
            "from wsssbench.methods_api import METHODS, CLS_OPTIMIZERS; "
            "assert {'cam', 'c2am', 'dsrg', 'cpn', 'sec'} <= set(METHODS.names()); assert 'psa' in CLS_OPTIMIZERS")
    for first in ("wsssbench.methods.c2am", "wsssbench.methods.dsrg"):
        done = subprocess.run([sys.executable, "-c", code, first], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
