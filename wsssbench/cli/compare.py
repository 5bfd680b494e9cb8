"""`wsssbench compare RUN_A RUN_B`: the paired difference of two runs with its confidence intervals."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app


@app.command("compare")
def compare_command(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="A run record (.json) or a folder of records: the baseline."),
    run_b: Path = typer.Argument(..., metavar="RUN_B", help="The same for the method compared with it."),
    root: Optional[Path] = typer.Option(None, "--root", help="The dataset's folder, when not where the runs found it "
                                                            "(the image bootstrap re-reads its ground truth)."),
    resamples: int = typer.Option(1000, "--resamples", min=100, help="Image bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the bootstrap draws."),
    round_a: Optional[int] = typer.Option(None, "--round-a", min=0, help="Compare A as of this round of its record "
                                          "(0 = the baseline of a multi-round method); default its last."),
    round_b: Optional[int] = typer.Option(None, "--round-b", min=0, help="The same for B."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
) -> None:
    """Δ = B − A of seed, pseudo-mask and segmentation mIoU, paired: a 95% interval over images (an image
    bootstrap of one seed pair, when the runs' artifacts are still on disk) and over seeds (a t interval of
    the per-seed differences, with two or more seeds). Resolved: the interval excludes 0."""
    from ..compare import at_round, compare, load_runs
    from ..io import dumps
    runs_a = [at_round(r, round_a) for r in load_runs(run_a)]
    runs_b = [at_round(r, round_b) for r in load_runs(run_b)]
    result = {"a": str(run_a), "b": str(run_b), "round_a": round_a, "round_b": round_b, "metrics": compare(runs_a, runs_b, dataset=_dataset(runs_a[0], root),
                                                                   resamples=resamples, seed=seed)}
    if json_out:
        typer.echo(dumps(result))
    else:
        _print(result)


def _dataset(record: dict, root: Optional[Path]):
    """The record's dataset, or None when it cannot be opened (the image bootstrap is then skipped)."""
    from ..data import get_dataset
    from ..errors import UserError
    generation = (record.get("extra") or {}).get("generation")     # synthetic: preset, seed, confounding
    options = dict(generation) if generation else (
        {"preset": record["dataset_preset"]} if record.get("dataset_preset") else {})
    try:
        return get_dataset(record["dataset"], root, **options)
    except UserError:
        return None


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def interval(ci: dict | None) -> str:
        return "–" if ci is None else f"[{ci['low']:+.2f}, {ci['high']:+.2f}]" + (" ✓" if ci["resolved"] else "")

    def name(which: str) -> str:
        r = result[f"round_{which}"]
        return result[which] + ("" if r is None else f" @ round {r}")

    table = Table(title=f"B − A: {name('b')} vs {name('a')}  (✓: the 95% interval excludes 0)")
    for col in ("metric", "protocol", "A", "B", "Δ", "images (one seed)", "seeds"):
        table.add_column(col)
    for metric, m in result["metrics"].items():
        seeds = m["seed_pairs"]
        table.add_row(metric, m["protocol"], f"{m['a']:.2f}", f"{m['b']:.2f}", f"{m['delta']:+.2f}",
                      interval(m["image_bootstrap"]),
                      interval(seeds) + (f" (n={seeds['n']})" if seeds else f" (n={len(m['seeds'])})"))
    Console().print(table)
