"""`wsssbench run METHOD`: a method through every stage, a summary table, run records."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import UserError
from .app import app
from .options import parse_seeds

SYNTHETIC = ("synthetic", "synthetic-loc")


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}``; anything without ``=`` is a UserError."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value (e.g. --set seed_threshold=0.2)")
        out[key.strip()] = value.strip()
    return out


def summarise(records) -> dict:
    """The ``--json`` object: metrics (the mean over seeds), and with several seeds ``mean``/``std``."""
    metrics = list(records[0].metrics)
    per_seed = {k: [r.metrics[k] for r in records] for k in metrics}
    out = {"method": records[0].method, "dataset": records[0].dataset, "dataset_preset": records[0].dataset_preset}
    out.update({k: statistics.fmean(v) for k, v in per_seed.items()})
    out.update(protocols=records[0].protocols, pretrained=records[0].pretrained, config=records[0].config,
               seeds=[r.seed for r in records], device=records[0].device,
               timings={str(r.seed): r.timings for r in records},
               artifacts={str(r.seed): r.artifacts for r in records},
               rounds={str(r.seed): r.rounds for r in records},
               records=[r.artifacts["record"] for r in records],
               weights_sha256=records[0].extra.get("weights_sha256", {}))
    if len(records) > 1:
        out["mean"] = {k: statistics.fmean(v) for k, v in per_seed.items()}
        out["std"] = {k: statistics.stdev(v) for k, v in per_seed.items()}
        out["per_seed"] = per_seed
    return out


@app.command("run")
def run_cmd(
    method: str = typer.Argument(..., help="Registered method name (cam, c2am, ...)."),
    dataset: str = typer.Option("synthetic", "--dataset", help="Registered dataset name (synthetic, voc, synthetic-loc, cub, ...)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (default: the dataset's standard location)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Synthetic preset (tiny, quiet, voc-shape, cub-shape); default tiny. quiet: 5x tiny's images, for method comparisons over seeds (docs/statistics.md)."),
    confounding: Optional[float] = typer.Option(None, "--confounding", help="Synthetic only: P(an object's context is "
                                                "tied to its class), in [0, 1]; default the preset's (tiny: 0.8)."),
    recipe: str = typer.Option("tiny", "--recipe", help="Named settings applied before --set: tiny (the CPU "
                               "defaults) or the method's own, e.g. paper (see docs/recipes.md)."),
    sets: List[str] = typer.Option([], "--set", help="Config override key=value (repeatable), e.g. --set seed_threshold=0.2."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local pretrained backbone weights (same as --set weights=PATH)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated run seeds; several give mean and std."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (cuda: bf16 autocast, channels_last)."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder for the stage cache, run records and figures."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    nproc: int = typer.Option(1, "--nproc", help="Data-parallel processes on this machine (one per GPU with "
                              "--device cuda; gloo on CPU): restarts the command under torchrun "
                              "(docs/scale.md; batch sizes are global)."),
) -> None:
    """Run METHOD through every stage (classifier, CAMs, seeds, pseudo-masks, segmentation or WSOL)."""
    from .. import distributed
    from ..harness import run_method
    from ..io import dumps
    overrides = parse_sets(sets)
    if "recipe" in overrides:
        raise UserError("choose the recipe with --recipe NAME, not --set recipe=NAME")
    overrides["recipe"] = recipe
    if weights is not None:
        if not weights.is_file():
            raise UserError(f"--weights {weights}: no such file")
        overrides["weights"] = str(weights)
    options = {}
    if dataset in SYNTHETIC:
        options["preset"] = preset or "tiny"
        if confounding is not None:
            options["confounding"] = confounding
    elif preset is not None or confounding is not None:
        raise UserError(f"--preset and --confounding apply to the synthetic datasets only, not {dataset!r}")
    if nproc != 1:
        _under_torchrun(nproc, device, method, overrides)
    records = [run_method(method, dataset=dataset, dataset_options=options, root=root, overrides=overrides,
                          seed=s, out=out, device=device, progress=not json_out) for s in parse_seeds(seeds)]
    if not distributed.is_main():       # under torchrun rank 0 prints
        return
    summary = summarise(records)
    if json_out:
        typer.echo(dumps(summary))
        return
    print_summary(summary)


def _under_torchrun(nproc: int, device: str, method: str, overrides: dict) -> None:
    """Replace this process by ``python -m torch.distributed.run --standalone --nproc_per_node N -m wsssbench
    ...`` (torchrun itself), the same arguments less ``--nproc``; bad options are refused here, once."""
    import os
    import sys

    from ..methods_api import METHODS, make_config
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: must be at least 1")
    from .. import distributed
    distributed.check_batches(make_config(METHODS.get(method), overrides), nproc)
    if "WORLD_SIZE" in os.environ:
        raise UserError("--nproc under torchrun: torchrun already started the processes; drop --nproc")
    if device == "cuda":
        import torch
        if nproc > torch.cuda.device_count():
            raise UserError(f"--nproc {nproc} --device cuda: one process per GPU, and torch sees "
                            f"{torch.cuda.device_count()}")
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "wsssbench", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    title = f"{summary['method']} on {summary['dataset']}" + (f" ({summary['dataset_preset']})" if summary["dataset_preset"] else "")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    table.add_column("protocol")
    for key, protocol in summary["protocols"].items():
        value = f"{summary[key]:.2f}"
        if "std" in summary:
            value += f" ± {summary['std'][key]:.2f}"
        table.add_row(key, value, protocol)
    console.print(table)
    console.print(f"seeds {', '.join(map(str, summary['seeds']))}; records: {', '.join(summary['records'])}")
    for name, digest in summary["weights_sha256"].items():
        console.print(f"{name}: {summary['config'][name]} (sha256 {digest})")
    if summary["pretrained"] is None:
        console.print("[yellow]note: random initialisation (no pretrained weights) — not comparable to the "
                      "papers' numbers; pass --weights PATH[/]")
