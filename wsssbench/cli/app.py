"""The Typer application and its command groups. Each command module registers itself on these."""
from __future__ import annotations

import typer
from typer.core import TyperGroup

from ..errors import EXIT_BAD_INPUT, UserError


class _Group(TyperGroup):
    """Turns a :class:`UserError` anywhere below into one line on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            typer.secho("interrupted: finished stages are cached; run the same command again to resume",
                        fg="yellow", err=True)
            raise typer.Exit(130) from None


_HELP = """Weakly-supervised segmentation and localization benchmark.

Exit codes: 0 success; 1 a check ran and failed (leaderboard check, regression guard);
2 bad input or usage (one line on stderr says what and where; nothing half-written)."""

app = typer.Typer(cls=_Group, help=_HELP, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)
eval_app = typer.Typer(cls=_Group, no_args_is_help=True,
                       help="Evaluate CAMs, masks or localization maps you already have, under a named protocol.")
data_app = typer.Typer(cls=_Group, no_args_is_help=True,
                       help="Datasets: generate the synthetic benchmark, inspect layouts, export ground truth.")
leaderboard_app = typer.Typer(cls=_Group, no_args_is_help=True,
                              help="Reported and reproduced numbers: consistency checks and regression guards.")
cache_app = typer.Typer(cls=_Group, no_args_is_help=True,
                        help="The stage cache of a runs folder: list its stages, remove interrupted runs' leftovers.")
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
app.add_typer(leaderboard_app, name="leaderboard")
app.add_typer(cache_app, name="cache")
