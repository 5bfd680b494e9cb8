"""`wsssbench eval seeds` and `wsssbench eval masks`: score CAMs or label maps you already have."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from ..io import dumps, save_figure
from .app import eval_app

_DATASET = typer.Option("synthetic", "--dataset", help="Dataset reader name (synthetic, voc, coco, ...).")
_ROOT = typer.Option(None, "--root", help="Dataset folder (default: $WSSSBENCH_DATA/<dataset> or the cache).")
_SPLIT = typer.Option("train", "--split", help="Split whose ground truth scores the inputs (IRN scores VOC "
                                               "seeds on train: 1,464 images, SegmentationClass).")
_PROTOCOL = typer.Option("irn", "--protocol", help="Scoring preset: irn, seam, deeplab, or all (side by side).")
_JSON = typer.Option(False, "--json", help="Print one JSON object (the stable output contract) instead of tables.")


@eval_app.command("seeds")
def seeds(cams: Path = typer.Option(..., "--cams", help="Folder of per-image CAM files: <id>.npz (wsssbench), "
                                                        "or IRN / SEAM <id>.npy dicts."),
          dataset: str = _DATASET, root: Optional[Path] = _ROOT, split: str = _SPLIT,
          threshold: Optional[float] = typer.Option(None, "--threshold", help="Background threshold t (IRN: "
                                                    "foreground iff best CAM > float32(t); IRN's default 0.15)."),
          sweep: bool = typer.Option(False, "--sweep", help="Sweep thresholds 0.00-0.99 step 0.01 in one pass "
                                                            "(best chosen on the ground truth)."),
          alpha: Optional[str] = typer.Option(None, "--alpha", help="Power background (1 - max CAM)^alpha "
                                              "(SEAM/CPN); a comma list (e.g. 1,4,24) sweeps alpha."),
          protocol: str = _PROTOCOL, json_out: bool = _JSON,
          plot: Optional[Path] = typer.Option(None, "--plot", help="Write the sweep's mIoU curve as a PNG.")):
    """Seeds from CAMs (only each image's labelled classes, as IRN and SEAM do), scored against the masks."""
    from ..metrics.seg_protocols import resolve_protocols
    from ..metrics.segmentation import SWEEP_MODES, evaluate_seeds, seed_rule
    alphas = _floats(alpha, "--alpha") if alpha is not None else None
    _, mode = seed_rule(threshold, sweep, alphas)   # every option error before the dataset is read or generated
    resolve_protocols(protocol)
    if plot is not None and mode not in SWEEP_MODES:
        raise UserError(f"{plot}: --plot draws a sweep's curve; add --sweep or several --alpha values")
    ds = _dataset(dataset, root)
    if not json_out:
        _say(ds, split)
    result = evaluate_seeds(ds, split, cams, threshold=threshold, sweep=sweep, alpha=alphas,
                            protocol=protocol, progress=not json_out)
    if plot is not None:
        _plot(result, plot)
    _emit(result, json_out)


@eval_app.command("masks")
def masks(masks_dir: Path = typer.Option(..., "--masks", help="Folder of <id>.png class-index label maps "
                                                              "(palette or grayscale; 255 allowed)."),
          dataset: str = _DATASET, root: Optional[Path] = _ROOT, split: str = _SPLIT,
          protocol: str = _PROTOCOL, json_out: bool = _JSON):
    """Pseudo-masks or segmentation outputs, scored against the split's ground truth."""
    from ..metrics.seg_protocols import resolve_protocols
    from ..metrics.segmentation import evaluate_masks
    resolve_protocols(protocol)                     # before the dataset is read or generated
    ds = _dataset(dataset, root)
    if not json_out:
        _say(ds, split)
    _emit(evaluate_masks(ds, split, masks_dir, protocol=protocol, progress=not json_out), json_out)


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{option} takes numbers separated by commas; got {text!r}") from None


def _dataset(name: str, root: Optional[Path]):
    from ..data import get_dataset
    return get_dataset(name, root)


def _say(ds, split: str) -> None:
    from rich.console import Console
    Console(stderr=True).print(f"[bold]{ds.name}[/]: {ds.describe_gt(split)}")


def _emit(result: dict, json_out: bool) -> None:
    if json_out:
        typer.echo(dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    by = result.get("by_protocol") or {result["protocol"]: result}
    first = next(iter(by.values()))
    table = Table(title=f"{result['dataset']} {result['split']} · {result['images']} images",
                  caption="IoU in percent; protocol = scoring preset (wsssbench.metrics.seg_protocols)")
    table.add_column("class")
    for name in by:
        table.add_column(name, justify="right")
    for cls in first["iou"] or {}:
        table.add_row(cls, *(_fmt((r["iou"] or {}).get(cls)) for r in by.values()))
    table.add_section()
    table.add_row("[bold]mIoU", *(f"[bold]{_fmt(r['miou'])}" for r in by.values()))
    for key in ("threshold", "alpha", "best_threshold", "best_alpha"):
        if key in first:
            table.add_row(key.replace("_", " "), *(f"{r[key]:g}" for r in by.values()))
    console.print(table)
    for name, r in by.items():
        if r.get("error"):
            console.print(f"[yellow]{name}[/]: {r['error']}")
    ctx = {name: r["context_confusion"]["mean"] for name, r in by.items() if r.get("context_confusion")}
    if ctx:
        console.print("context confusion (share of false-positive pixels on the class's own context): "
                      + ", ".join(f"{_fmt(v)}% ({name})" for name, v in ctx.items()))
    if result.get("spread") is not None:
        console.print(f"spread across protocols: {result['spread']:.2f} mIoU points")
    if first.get("threshold_selected_on_gt"):
        console.print("[yellow]note[/]: the best value was selected on the evaluation ground truth")
    if "cam_classes" in result:
        console.print(f"note: {result['cam_classes']}")


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _plot(result: dict, path: Path) -> None:
    by = result.get("by_protocol") or {result["protocol"]: result}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in by.items():
        key = "alpha" if "best_alpha" in r else "threshold"
        xs = [p[key] for p in r["curve"]]
        ax.plot(xs, [p["miou"] for p in r["curve"]], label=f"{name} (best {r['best_miou']:.2f} at {r[f'best_{key}']:g})")
        ax.set_xlabel("alpha" if key == "alpha" else "background threshold")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"{result['dataset']} {result['split']}: seed mIoU (best chosen on the GT)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
