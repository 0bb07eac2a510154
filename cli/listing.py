"""``metaprune list``: what each registry offers."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import out


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd() -> None:
        """Show networks, datasets, training presets and (where installed) scorers, schedules, inits, models."""
        from metaprune import catalog

        for title, rows in catalog.sections():
            table = Table(title=title, title_justify="left", show_header=True)
            table.add_column("name", style="bold")
            table.add_column("aliases")
            table.add_column("description")
            for name, aliases, desc in rows:
                table.add_row(name, ", ".join(aliases), desc)
            out.print(table)
