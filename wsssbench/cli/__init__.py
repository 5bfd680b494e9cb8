"""Command-line interface: ``wsssbench run|eval|table|compare|leaderboard|data|cache``."""
from __future__ import annotations

import importlib

from .app import app

# One module per command group; importing a module registers its commands on ``app``.
_COMMAND_MODULES = ("run", "eval_seg", "eval_wsol", "data", "table", "leaderboard", "compare", "cache", "figure")
for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    app()
