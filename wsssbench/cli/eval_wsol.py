"""`wsssbench eval wsol`: MaxBoxAcc, MaxBoxAccV2, PxAP and Top-k localization of saved score maps."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from ..io import dumps
from ..metrics.wsol_preset import WSOL
from .app import eval_app


@eval_app.command("wsol")
def eval_wsol(
    cams: Path = typer.Option(..., "--cams", help="Folder of score maps: <image_id>.npy (wsolevaluation 2-D map "
                              "or IRN dict) or <image_id>.npz (toolkit format)."),
    dataset: str = typer.Option("cub", "--dataset", help="Ground-truth dataset reader (cub, ilsvrc, ...)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset root (official layout); with --metadata, "
                                        "the image folder (optional)."),
    metadata: Optional[Path] = typer.Option(None, "--metadata", help="wsolevaluation metadata folder "
                                            "(image_ids.txt, class_labels.txt, image_sizes.txt, "
                                            "localization.txt); replaces --dataset."),
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Class scores CSV: image_id,score_0,...,score_K-1 "
                                          "(else taken from the score-map files when they have them)."),
    protocol: str = typer.Option(WSOL.protocol, "--protocol", help="Box protocol preset: wsolevaluation, nlccam, "
                                 "cicam, or all (side by side, each at its own θ unless --threshold)."),
    frame: str = typer.Option(WSOL.frame, "--frame", help="224: the protocol's 224x224 frame; native: each map's "
                              "own resolution, boxes scaled to it."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="CAM threshold θ for Top-k and "
                                              f"GT-known (default: the protocol's own: wsolevaluation "
                                              f"{WSOL.threshold:g}, the CAM paper's; nlccam 0.12; cicam 0)."),
    sweep: bool = typer.Option(False, "--sweep", help="Report Top-k and GT-known at their best θ "
                               "(chosen on the evaluation ground truth; said so in the output)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (percent, unrounded)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the accuracy-vs-θ curves to this PNG."),
    curve: Optional[Path] = typer.Option(None, "--curve", help="Write Top-1 Loc over θ (CI-CAM Fig. 4) for each "
                                         "protocol to this PNG (needs class scores)."),
) -> None:
    """Localization accuracy of saved score maps: MaxBoxAcc(V2), PxAP, Top-1/Top-5 loc, GT-known."""
    from ..data import get_dataset
    from ..metrics.localization import BOX_PROTOCOLS, evaluate_wsol

    if sweep and threshold is not None:
        raise UserError("give --threshold or --sweep, not both")
    names = BOX_PROTOCOLS.names() if protocol == "all" else [BOX_PROTOCOLS.get(protocol).name]
    ds = get_dataset("wsolmeta", metadata, images=root) if metadata is not None else get_dataset(dataset, root)
    if ds.task != "localization":
        raise UserError(f"dataset {dataset!r} is a {ds.task} dataset; eval wsol needs boxes (cub, ilsvrc, "
                        "--metadata)")
    if metadata is not None and len(ds.split_names()) == 1:     # --metadata named one split's folder
        split = ds.split_names()[0]
    own = {name: WSOL.threshold if name == WSOL.protocol else BOX_PROTOCOLS.get(name).threshold for name in names}
    by = {name: evaluate_wsol(ds, split, cams, scores=scores, protocol=name, frame=frame,
                              threshold=own[name] if threshold is None else threshold, sweep=sweep,
                              progress=not json_out) for name in names}
    result = by[names[0]] if protocol != "all" else {"protocol": "all", "by_protocol": by}
    if plot is not None:
        if protocol == "all":
            raise UserError("--plot draws one protocol's curves; give --protocol NAME (or --curve for all)")
        _plot(result, plot)
    if curve is not None:
        if any("top1_loc" not in r["curve"] for r in by.values()):
            raise UserError("--curve plots Top-1 Loc, which needs class scores (--scores or scores in the maps)")
        theta_curve({f"{name}": r for name, r in by.items()}, curve)
    if json_out:
        typer.echo(dumps(result))
    elif protocol == "all":
        _side_by_side(by, ds.describe_gt(split))
    else:
        _table(result, ds.describe_gt(split))


def _side_by_side(by: dict[str, dict], gt: str) -> None:
    """One column per protocol (θ in its header); the rows of :func:`_table`."""
    from rich.console import Console
    from rich.table import Table

    first = next(iter(by.values()))
    table = Table(title=f"WSOL · protocols side by side · frame {first['frame']} · {first['num_images']} images",
                  caption=gt + "; MaxBoxAcc(V2) at each protocol's best θ"
                  + (" (Top-k, GT-known: θ chosen on the evaluation GT)" if first.get("threshold_selected_on_gt")
                     else ""))
    table.add_column("metric")
    for name, r in by.items():
        table.add_column(name + (f" (θ {r['threshold']:g})" if "threshold" in r else ""), justify="right")
    keys = [("maxboxacc", "MaxBoxAcc (δ=50)"), ("maxboxacc_v2", "MaxBoxAccV2"), ("top1_cls", "Top-1 cls"),
            ("top5_cls", "Top-5 cls"), ("top1_loc", "Top-1 loc"), ("top5_loc", "Top-5 loc"),
            ("gt_known", "GT-known loc"), ("pxap", "PxAP")]
    for key, label in keys:
        if any(key in r for r in by.values()):
            table.add_row(label, *(f"{r[key]:.2f}" if key in r else "" for r in by.values()))
    Console().print(table)


def theta_curve(results: dict[str, dict], path: Path, title: str = "Top-1 Loc over θ (CI-CAM Fig. 4)") -> Path:
    """Top-1 Loc (solid) and GT-known (dashed) over the θ grid, one colour per labelled result (an
    ``evaluate_wsol`` dict, e.g. one per protocol or per run), each fixed θ marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (label, r) in enumerate(results.items()):
        c = r["curve"]
        line, = ax.plot(c["threshold"], c["top1_loc"], color=f"C{k}", label=f"{label}: Top-1 Loc")
        ax.plot(c["threshold"], c["maxboxacc"], color=f"C{k}", ls="--", lw=1, label=f"{label}: GT-known")
        if "threshold" in r and "top1_loc" in r:
            ax.plot([r["threshold"]], [r["top1_loc"]], "o", color=line.get_color())
    ax.set_xlabel("threshold θ")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _table(result: dict, gt: str) -> None:
    from rich.console import Console
    from rich.table import Table

    best = result["best_threshold"]
    sel = " (θ chosen on the evaluation GT)" if result.get("threshold_selected_on_gt") else ""
    table = Table(title=f"WSOL · protocol {result['protocol']} · frame {result['frame']} · "
                        f"{result['num_images']} images", caption=gt)
    table.add_column("metric")
    table.add_column("%", justify="right")
    table.add_column("θ", justify="right")
    rows = [("MaxBoxAcc (δ=50)", result["maxboxacc"], best["maxboxacc"]),
            ("MaxBoxAccV2", result["maxboxacc_v2"], None)]
    rows += [(f"  δ={d}", v, best[f"maxboxacc_v2_{d}"]) for d, v in result["maxboxacc_v2_by_iou"].items()]
    for key, label in (("top1_cls", "Top-1 cls"), ("top5_cls", "Top-5 cls"), ("top1_loc", "Top-1 loc"),
                       ("top5_loc", "Top-5 loc"), ("gt_known", "GT-known loc"), ("pxap", "PxAP")):
        if key in result:
            theta = best.get(key, result.get("threshold")) if key.endswith(("loc", "known")) else None
            rows.append((label + (sel if key in best else ""), result[key], theta))
    for label, value, theta in rows:
        table.add_row(label, f"{value:.2f}", "" if theta is None else f"{theta:.3f}")
    Console().print(table)


def _plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure

    curve = result["curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, values in curve.items():
        if key.startswith("maxboxacc_v2_"):
            ax.plot(curve["threshold"], values, label=f"all contours (V2), δ={key.rsplit('_', 1)[1]}")
    ax.plot(curve["threshold"], curve["maxboxacc"], "k--", lw=1, label="largest contour, δ=50 (GT-known)")
    if "threshold" in result:
        ax.axvline(result["threshold"], color="grey", lw=0.8, label=f"--threshold {result['threshold']}")
    ax.set_xlabel("CAM threshold θ")
    ax.set_ylabel("box accuracy (%)")
    ax.set_title(f"{result['protocol']} · frame {result['frame']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
