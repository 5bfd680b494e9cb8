"""`wsssbench figure cpn:6|cpn:7`: CPN's patch-size figures (seed mIoU over S_N, over the grid sets K) from runs.

Each point is a ``cpn`` run with one setting changed (``cpn_segments``; ``cpn_patch=grid`` + ``cpn_grid``);
``--run`` makes the missing runs (cached), otherwise the records already under ``--out`` are read. The
values CPN's text states for the figure (``cpn:fig-sn``, ``cpn:fig-k``; VOC, not the same dataset) are
marked on a second axis, read from the reported numbers, never mixed with the runs' values.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from .app import app

#: figure id -> (its text values' table, x label, the setting each point changes, default points)
FIGURES = {
    "cpn:6": ("cpn:fig-sn", "S_N (SLIC superpixels)", (5, 25, 50, 100, 200, 500, 1000, 2000, 8000)),
    "cpn:7": ("cpn:fig-k", "K (grid sizes at a 448 crop)",
              ("4,7", "14,28", "28,56", "56,112", "112,224", "224,448")),
}


def point_overrides(figure: str, point) -> dict[str, str]:
    """The ``--set`` overrides of one point of ``figure``."""
    if figure == "cpn:6":
        return {"cpn_segments": str(int(point))}
    return {"cpn_patch": "grid", "cpn_grid": str(point)}


def point_label(figure: str, point) -> str:
    """The point as the text's row names it (``S_N = 200``, ``K = {56, 112}``)."""
    if figure == "cpn:6":
        return f"S_N = {int(point)}"
    return "K = {" + ", ".join(p.strip() for p in str(point).split(",")) + "}"


def _matches(record: dict, overrides: dict[str, str]) -> bool:
    """The record's config has the point's CP settings and every ``overrides`` value."""
    from ..methods_api import METHODS, make_config
    want = make_config(METHODS.get("cpn"), overrides)
    cfg = record.get("config", {})
    keys = {"cpn_patch", "cpn_segments", "cpn_grid", *overrides}
    return all(json.dumps(cfg.get(k)) == json.dumps(getattr(want, k)) for k in keys)


def collect(figure: str, points, out: Path, dataset: str, seeds: list[int], run: bool, device: str,
            settings: dict[str, str] | None = None) -> list[dict]:
    """Per point: its label, the seed mIoU of each seed's run (made when ``run``), mean and std;
    ``settings``: ``--set`` overrides for every point."""
    from ..records import record_paths
    rows = []
    for point in points:
        over = {**(settings or {}), **point_overrides(figure, point)}
        values = {}
        if run:
            from ..harness import run_method
            for seed in seeds:
                values[seed] = run_method("cpn", dataset=dataset, overrides=over, seed=seed, out=out,
                                          device=device).metrics["seed_miou"]
        elif (out / "records" / "cpn").is_dir():
            for path in record_paths(out / "records" / "cpn"):
                rec = json.loads(path.read_text())
                if rec.get("dataset") == dataset and rec.get("seed") in seeds and _matches(rec, over):
                    values[rec["seed"]] = rec["metrics"]["seed_miou"]
        v = [values[s] for s in sorted(values)]
        rows.append({"point": str(point), "label": point_label(figure, point), "seeds": sorted(values),
                     "seed_miou": v, "mean": statistics.fmean(v) if v else None,
                     "std": statistics.stdev(v) if len(v) > 1 else None})
    return rows


def text_values(figure: str) -> dict[str, float]:
    """The values CPN's text states for this figure, by row label."""
    from ..reported import load_reported
    table = FIGURES[figure][0]
    return {c.row: c.number for c in load_reported() if c.table == table and c.number is not None}


def plot(figure: str, rows: list[dict], stated: dict[str, float], dataset: str, path: Path) -> Path:
    """Two panels on one x axis: the runs' seed mIoU (mean ± std over seeds) above, the values CPN's text
    states (VOC) below, so that no shared scale suggests the two are comparable."""
    from ..figures import pyplot
    from ..io import save_figure
    plt = pyplot()
    fig, (ax, low) = plt.subplots(2, 1, figsize=(6.4, 4.8), sharex=True, height_ratios=(3, 1.4))
    xs = list(range(len(rows)))
    have = [(x, r) for x, r in zip(xs, rows) if r["mean"] is not None]
    ax.errorbar([x for x, _ in have], [r["mean"] for _, r in have], yerr=[r["std"] or 0 for _, r in have],
                marker="o", color="tab:blue", capsize=3)
    ax.set_ylabel(f"seed mIoU (%)\nruns, {dataset}")
    ax.set_title(f"CPN Fig. {figure.split(':')[1]}: seed mIoU over {FIGURES[figure][1].split(' (')[0]}")
    marked = [(x, stated[r["label"]]) for x, r in zip(xs, rows) if r["label"] in stated]
    low.scatter([x for x, _ in marked], [v for _, v in marked], marker="*", s=120, color="tab:red")
    for x, v in marked:
        low.annotate(f"{v:.2f}", (x, v), textcoords="offset points", xytext=(8, -3), color="tab:red", fontsize=8)
    if marked:
        lo, hi = min(v for _, v in marked), max(v for _, v in marked)
        low.set_ylim(lo - 1, hi + 1)
    low.set_ylabel("CPN's text\n(VOC train)", color="tab:red")
    low.set_xticks(xs, [r["point"] for r in rows], rotation=30)
    low.set_xlabel(FIGURES[figure][1])
    fig.tight_layout()
    return save_figure(fig, path)


@app.command("figure")
def figure_command(
    figure: str = typer.Argument(..., metavar="FIGURE", help="cpn:6 (S_N) or cpn:7 (grid K)."),
    run: bool = typer.Option(False, "--run", help="Make the runs the points need (cached); else read --out's records."),
    dataset: str = typer.Option("synthetic", "--dataset", help="The runs' dataset."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated run seeds."),
    points: Optional[str] = typer.Option(None, "--points", help="The x values, ';'-separated (cpn:6: 50;200;1000, "
                                         "cpn:7: 4,7;56,112); default the figure's."),
    out: Path = typer.Option(Path("runs"), "--out", help="Runs folder (stage cache and records)."),
    output: Optional[Path] = typer.Option(None, "--output", help="The PNG; default OUT/figures/cpn-N.png."),
    device: str = typer.Option("cpu", "--device"),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="A setting for every point, key=value "
                                                 "(repeatable), e.g. --set cls_epochs=1."),
    json_out: bool = typer.Option(False, "--json", help="Print the points as JSON."),
) -> None:
    """Seed mIoU over CPN's patch sizes (Figs. 6-7), the values the paper's text states marked beside them."""
    if figure not in FIGURES:
        raise UserError(f"no figure {figure!r}; figures: {', '.join(FIGURES)}")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds}: comma-separated integers") from None
    chosen = [p.strip() for p in points.split(";") if p.strip()] if points else list(FIGURES[figure][2])
    extra = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item}: use key=value")
        extra[key.strip()] = value.strip()
    for p in chosen:                                 # a bad point or setting is refused before anything runs
        from ..methods_api import METHODS, make_config
        make_config(METHODS.get("cpn"), {**extra, **point_overrides(figure, p)})
    rows = collect(figure, chosen, out, dataset, seed_list, run, device, extra)
    stated = text_values(figure)
    path = plot(figure, rows, stated, dataset, output or out / "figures" / f"cpn-{figure.split(':')[1]}.png")
    if json_out:
        typer.echo(json.dumps({"figure": figure, "points": rows, "text": stated, "png": str(path)}))
        return
    for r in rows:
        mean = "–" if r["mean"] is None else f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] else "")
        paper = f"   (text: {stated[r['label']]:.2f})" if r["label"] in stated else ""
        typer.echo(f"{r['label']:>18}: {mean}  n={len(r['seeds'])}{paper}")
    typer.echo(f"figure: {path}")
