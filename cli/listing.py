"""``metaprune list``: what each registry offers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import out

ModelsDirOpt = Annotated[str, typer.Option(help="where fitted models are looked for")]


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd(models_dir: ModelsDirOpt = "models") -> None:
        """Show networks, datasets, scorers, schedules, initialisations, regressors, training and evaluation
        presets, fit recipes and the fitted models."""
        from metaprune import catalog

        for title, rows in catalog.sections(models_dir):
            table = Table(title=title, title_justify="left", show_header=True)
            table.add_column("name", style="bold")
            table.add_column("aliases")
            table.add_column("description")
            for name, aliases, desc in rows:
                table.add_row(escape(name), ", ".join(aliases), escape(desc))
            out.print(table)
