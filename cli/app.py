"""The ``metaprune`` command: Typer parses and prints, the library does the work."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from metaprune.errors import MetapruneError, RuntimeFailure

from .common import OptionError, err

app = typer.Typer(
    help="Learn how to prune a network before training: harvest pruning scores, fit a meta-scorer, "
    "evaluate its tickets. --sparsity everywhere means the fraction of prunable weights that REMAIN "
    "(0.005 = 0.5 % kept), as in the thesis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: speed and memory targets are checked here, never by timed tests.")
app.add_typer(bench_app, name="bench")


COMMAND_MODULES = ("listing", "train", "prune", "harvest", "fit", "evaluate")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(app, bench_app)


def command():
    """The app's click command, with flags shown without a value type (Typer prints ``<bool>`` beside
    every ``--force``, which reads as if the flag took a value)."""
    cmd = typer.main.get_command(app)
    todo = [cmd]
    while todo:
        current = todo.pop()
        todo.extend(getattr(current, "commands", {}).values())
        for param in current.params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        current.get_help_option = _quiet_help(current.get_help_option)  # --help is made on demand
    return cmd


def _quiet_help(make):
    def get_help_option(ctx):
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    return get_help_option


def main() -> None:
    """Run the CLI; library errors become one line on stderr and a non-zero exit code.

    Typer's standalone mode handles usage errors itself (a short message, exit code 2); numeric options
    are parsed by ``common.Number``, whose ``OptionError`` names the value typed and what is accepted.
    """
    _register_commands()
    try:
        command()(prog_name="metaprune")
    except (MetapruneError, OptionError, RuntimeFailure) as exc:
        # escaped: a message quotes the method grammar, whose [@schedule] rich would take for markup
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
