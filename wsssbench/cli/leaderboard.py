"""`wsssbench leaderboard check`: the reported numbers agree with each other, run records have provenance."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from ..errors import EXIT_CHECK_FAILED
from ..io import dumps
from ..leaderboard import CheckReport, Finding, check
from .app import leaderboard_app


@leaderboard_app.command("check")
def check_command(
    json_: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    root: Optional[Path] = typer.Option(None, "--root", hidden=True,
                                        help="A leaderboards/ folder other than the installed one (tests)."),
) -> None:
    """Check every reported number against the rules in checks.yaml; exit 1 on any unexplained
    disagreement, stale entry in disagreements.yaml, committed run record (leaderboards/reproduced/)
    without provenance, or committed record outside its row's stated tolerance."""
    report = check(root)
    if json_:
        sys.stdout.write(dumps(report.to_dict()) + "\n")
    else:
        _print(report)
    if not report.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _print(report: CheckReport) -> None:
    from rich.console import Console

    con = Console(highlight=False)
    con.print(f"{len(report.checks_run)} rules checked, {len(report.skipped)} skipped "
              f"(tables not transcribed yet), {len(report.findings)} disagreement(s), "
              f"{len(report.unexplained)} unexplained")
    for line in report.skipped:
        con.print(f"  [dim]skipped {line}[/dim]")
    for f in report.findings:
        if f.explanation is not None:
            con.print(f"  [yellow]explained[/yellow] {f.check}: {f.message}\n    → {f.explanation}")
    for f in report.unexplained:
        con.print(f"  [red]DISAGREES[/red] {f.check}: {f.message}")
        con.print("    fix the transcription, or if the papers really disagree add to disagreements.yaml:")
        con.print(_entry_template(f), markup=False)
    for line in report.stale:
        con.print(f"  [red]STALE[/red] {line}")
    for line in report.records:
        con.print(f"  [red]RECORD[/red] {line}")
    for v in report.verified:
        con.print(f"  {'[green]' if v.ok else '[red]'}{v}[/]")
    con.print("[green]ok[/green]" if report.ok else "[red]FAILED[/red]")


def _entry_template(f: Finding) -> str:
    entry = [{"check": f.check, "cells": [{"ref": c.ref, "value": c.value} for c in f.cells],
              "cause": "rounding | different setting | typo | unknown", "explanation": "..."}]
    text = yaml.safe_dump(entry, allow_unicode=True, sort_keys=False, width=1000)
    return "\n".join("      " + line for line in text.splitlines())
