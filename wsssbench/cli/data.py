"""`wsssbench data synth|info|masks`: generate the synthetic benchmark, inspect a layout, export its ground truth."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import UserError
from ..io import dumps, out_folder, write_bytes
from .app import data_app

_ROOT_HELP = "Dataset folder; default $WSSSBENCH_DATA/<name>, else ~/.cache/wsssbench/data/<name>."
_OPTION_HELP = "Reader option KEY=VALUE, repeatable (synthetic: preset=tiny, seed=0, confounding=0.8)."


def _options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _dataset(name: str, root: Optional[Path], options: list[str]):
    from ..data import get_dataset
    try:
        return get_dataset(name, root, **_options(options))
    except TypeError as err:          # an option the reader does not take
        raise UserError(f"dataset {name!r}: {err}") from None


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write; gets seg/ (VOC layout) and loc/ (CUB layout), "
                             "or coco/ (MS-COCO 2014 layout: read it with --dataset coco --root OUT)."),
    preset: str = typer.Option("tiny", help="tiny (CPU default), voc-shape (VOC 2012 sizes), cub-shape (CUB sizes), "
                               "coco-shape (COCO 2014 sizes, 80 classes), coco-tiny (its CPU sibling, 20 classes)."),
    seed: int = typer.Option(0, help="Random seed; same preset + seed + confounding give byte-identical files."),
    confounding: Optional[float] = typer.Option(
        None, help="P(a class's context is tied to it), 0 = independent, 1 = always; default: the preset's."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate the synthetic confounded benchmark (see docs/datasets.md)."""
    from ..data.synthetic import generate, get_preset

    spec = get_preset(preset)
    out_folder(out)
    start = time.perf_counter()
    generate(out, preset, seed, confounding, progress=not quiet)
    p = spec.resolve_confounding(confounding)
    Console(stderr=True).print(f"[green]synthetic {preset}[/] seed {seed} confounding {p:g} ({spec.describe()}) "
                               f"→ {out} in {time.perf_counter() - start:.1f} s")


@data_app.command("info")
def info(
    name: str = typer.Argument(..., help="Dataset name: voc, coco, cub, ilsvrc, wsolmeta, synthetic, synthetic-loc."),
    root: Optional[Path] = typer.Option(None, help=_ROOT_HELP),
    option: list[str] = typer.Option([], "--option", "-o", help=_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: name, num_classes, splits, class_names, ..."),
) -> None:
    """Splits with image counts, class names and the layout found."""
    ds = _dataset(name, root, option)
    splits = {split: len(ds.samples(split)) for split in ds.split_names()}
    report = {"name": name, "task": ds.task, "root": str(ds.root), "num_classes": ds.num_classes,
              "has_background": ds.has_background, "splits": splits, "class_names": list(ds.class_names),
              "ground_truth": {split: ds.describe_gt(split) for split in splits}}
    manifest = getattr(ds, "manifest", None)
    if manifest is not None:
        report["synthetic"] = {k: manifest[k] for k in ("preset", "seed", "confounding", "base_rate")}
        report["synthetic"]["roles"] = {c["name"]: c["role"] for c in manifest["classes"]}
    if as_json:
        typer.echo(dumps(report))
        return
    console = Console()
    console.print(f"[bold]{name}[/] ({ds.task}) at {ds.root}: {ds.num_classes} classes"
                  + (" incl. background" if ds.has_background else ""))
    table = Table("split", "images", "ground truth")
    for split, count in splits.items():
        table.add_row(split, f"{count:,}", report["ground_truth"][split])
    console.print(table)
    shown = ", ".join(ds.class_names[:30]) + (f", … ({ds.num_classes - 30} more)" if ds.num_classes > 30 else "")
    console.print(f"classes: {shown}")
    if manifest is not None:
        s = report["synthetic"]
        console.print(f"synthetic preset {s['preset']}, seed {s['seed']}, confounding {s['confounding']:g}")


@data_app.command("masks")
def masks(
    name: str = typer.Argument(..., help="Segmentation dataset name: voc, coco, synthetic."),
    split: str = typer.Option(..., help="Split whose ground truth to write (e.g. train, val, train2014)."),
    out: Path = typer.Option(..., "--out", help="Folder for <image id>.png (uint8 class index, 255 = ignore)."),
    root: Optional[Path] = typer.Option(None, help=_ROOT_HELP),
    option: list[str] = typer.Option([], "--option", "-o", help=_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: name, split, count, out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write the exact ground truth the evaluation uses, one class-index PNG per image."""
    from rich.progress import track

    from ..data.base import mask_png

    out_folder(out)
    ds = _dataset(name, root, option)
    if ds.task != "segmentation":
        raise UserError(f"dataset {name!r} is a {ds.task} dataset: it has boxes, not masks")
    samples = ds.samples(split)
    shown = track(samples, description=f"{name} {split} masks", disable=quiet or as_json, console=Console(stderr=True))
    for sample in shown:
        write_bytes(out / f"{sample.id}.png", mask_png(ds.load_mask(sample)))
    report = {"name": name, "split": split, "count": len(samples), "out": str(out),
              "ground_truth": ds.describe_gt(split)}
    if as_json:
        typer.echo(dumps(report))
    else:
        Console(stderr=True).print(f"wrote {len(samples):,} masks of {name} {split} to {out} "
                                   f"({report['ground_truth']})")
